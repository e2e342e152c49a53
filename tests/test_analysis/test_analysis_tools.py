"""Analysis tools: ACON curves, what the layers learned, FLOPs, the stats hook.

Every tool runs as a user runs it (its ``main(argv)``) on a checkpoint trained
on the demo data, and the numbers it writes are checked against the
checkpoint's tensors or an independent computation.
"""
import csv
import importlib.util
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.models.layers import AconC, MetaAconC, iter_acon_layers
from acon_mm.utils import safe_torch_load

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def _tool(name):
    path = osp.join(ROOT, 'tools', 'analysis_tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'acon_tool_{name}', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _assert_png(path):
    import matplotlib.image as mpimg
    assert osp.getsize(path) > 2000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas


# --------------------------------------------------------------------------
# a tiny detector trained on the demo data (RetinaNet, ResNetACON-18/ACON-C,
# FPN with pixel-wise meta-ACON, head as stock)
TINY_DET = """
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)
data_root = {data_root!r}
backend_args = None
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, type='ResNetACON', depth=18, base_channels=16,
                  acon_cfg={backbone_act}, out_indices=(1, 2, 3),
                  frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=32, start_level=0,
              add_extra_convs=False, num_outs=3, act_cfg={neck_act}),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32,
                   stacked_convs=1,
                   anchor_generator=dict(strides=[8, 16, 32])),
    test_cfg=dict(nms_pre=100, max_per_img=20))
metainfo = dict(classes=('circle', 'square', 'triangle'))
pipe = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
         'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    batch_sampler=None,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=pipe,
                 filter_cfg=dict(filter_empty_gt=False)))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=pipe))
test_evaluator = dict(ann_file=data_root + '/annotations/instances_val2017.json')
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=3,
                 val_interval=1000)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.0))
param_scheduler = []
default_hooks = dict(checkpoint=dict(type='AconCheckpointHook', interval=3,
                                     by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='AconStatsHook', interval={hook_interval})]
"""


def _write_cfg(path, data_root, backbone_act="dict(type='AconC')",
               neck_act="dict(type='MetaAconC', switch='pixel')",
               hook_interval=1):
    with open(path, 'w') as f:
        f.write(TINY_DET.format(data_root=data_root, backbone_act=backbone_act,
                                neck_act=neck_act, hook_interval=hook_interval))
    return str(path)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Train the tiny detector 3 iterations on demo data with AconStatsHook."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from acon_mm.testing import make_coco_demo
    tmp = tmp_path_factory.mktemp('analysis')
    data_root = str(tmp / 'coco')
    make_coco_demo(data_root, num_train=6, num_val=3, img_size=(64, 64),
                   max_size=24, min_size=10, seed=1)
    cfg_path = _write_cfg(tmp / 'tiny_retinanet_acon.py', data_root)
    cfg = Config.fromfile(cfg_path)
    cfg.work_dir = str(tmp / 'work')
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    ckpt = osp.join(cfg.work_dir, 'iter_3.pth')
    assert osp.isfile(ckpt)
    return dict(cfg=cfg_path, ckpt=ckpt, tmp=tmp, data_root=data_root,
                work_dir=cfg.work_dir, runner=runner)


# --------------------------------------------------------------------------
def test_plot_acon_curves(tmp_path):
    tool = _tool('plot_acon_curves')
    files = tool.main(['--out-dir', str(tmp_path)])
    _assert_png(files['png'])
    rows = _read_csv(files['csv'])
    assert len(rows) > 1000
    families = {r['family'] for r in rows}
    assert families == {'ACON-A', 'ACON-B', 'ACON-C'}

    def sig(z):
        return 1 / (1 + np.exp(-z))

    checked = 0
    for r in rows[::97]:
        p1, p2, b, x = (float(r[k]) for k in ('p1', 'p2', 'beta', 'x'))
        if math.isinf(b):
            f_ref = max(p1 * x, p2 * x)
        else:  # independent closed forms of f and df/dx
            d = p1 - p2
            s = sig(b * d * x)
            f_ref = d * x * s + p2 * x
            df_ref = d * s + b * d * d * x * s * (1 - s) + p2
            assert float(r['df']) == pytest.approx(df_ref, rel=1e-9, abs=1e-12)
        assert float(r['f']) == pytest.approx(f_ref, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked > 10
    # ACON-A at beta=0 is x/2, at beta=inf ReLU
    a0 = [r for r in rows if r['family'] == 'ACON-A' and float(r['beta']) == 0]
    assert all(float(r['f']) == pytest.approx(float(r['x']) / 2) for r in a0)


def test_plot_acon_curves_bad_args(tmp_path):
    tool = _tool('plot_acon_curves')
    with pytest.raises(SystemExit):
        tool.parse_args(['--x-range', '3', '-3'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--betas', '-1'])


def _check_learned_rows(layers, channels, state):
    """Rows of AconC layers against the checkpoint's tensors."""
    learned = [r for r in layers if r['type'] == 'AconC']
    assert learned
    for r in learned:
        name = r['layer']
        p1 = state[f'{name}.p1'].double().flatten().numpy()
        p2 = state[f'{name}.p2'].double().flatten().numpy()
        beta = state[f'{name}.beta'].double().flatten().numpy()
        assert int(r['channels']) == p1.size
        assert float(r['p1_mean']) == pytest.approx(p1.mean(), rel=1e-5)
        assert float(r['p2_std']) == pytest.approx(p2.std(), rel=1e-4)
        assert float(r['beta_mean']) == pytest.approx(beta.mean(), rel=1e-5)
        assert float(r['beta_std']) == pytest.approx(beta.std(), rel=1e-4, abs=1e-7)
        eta = np.abs(beta * (p1 - p2))
        assert float(r['eta_median']) == pytest.approx(np.median(eta), rel=1e-5)
        assert (r['nearly_linear'] == 'True') == (np.median(eta) < 0.1)
        rows = [c for c in channels if c['layer'] == name]
        assert [float(c['p2']) for c in rows] == pytest.approx(list(p2), rel=1e-6)
        assert [float(c['eta']) for c in rows] == pytest.approx(list(eta), rel=1e-5)
    # training moved the parameters away from their init (beta = 1)
    assert any(abs(float(r['beta_mean']) - 1.0) > 1e-4 for r in learned)
    return learned


def test_analyze_acon_demo_detector(tiny_det_checkpoint, tmp_path):
    """The demo detector (ACON-C ResNet-18 RetinaNet) trained by tools/train.py."""
    tool = _tool('analyze_acon')
    ck = tiny_det_checkpoint
    # the work dir stands for its last checkpoint
    result, files = tool.main([ck.config, ck.work_dir, '--out-dir', str(tmp_path)])
    table = json.load(open(files['layers_json']))
    assert osp.samefile(table['meta']['checkpoint'], ck.checkpoint)
    state = safe_torch_load(ck.checkpoint)['state_dict']
    layers = _read_csv(files['layers_csv'])
    acon_keys = sorted(k[:-len('.p1')] for k in state if k.endswith('.p1'))
    # one row per ACON layer of the checkpoint, ordered by depth
    assert sorted(r['layer'] for r in layers) == acon_keys
    assert [int(r['depth']) for r in layers] == list(range(len(layers)))
    assert layers[0]['layer'] == 'backbone.layer1.0.acon1'
    assert layers[-1]['layer'] == 'backbone.layer4.1.acon2'
    assert [r['layer'] for r in table['layers']] == [r['layer'] for r in layers]
    _check_learned_rows(layers, _read_csv(files['channels_csv']), state)
    _assert_png(files['depth_png'])
    summary = open(files['summary']).read()
    assert 'nearly linear' in summary and 'backbone.layer1.0.acon1' in summary


def test_analyze_acon_segmentor(tiny_seg_checkpoint, tmp_path):
    """A segmentation (mmseg scope) checkpoint: the PSPNet demo."""
    tool = _tool('analyze_acon')
    ck = tiny_seg_checkpoint
    result, files = tool.main([ck.config, ck.checkpoint, '--out-dir', str(tmp_path)])
    state = safe_torch_load(ck.checkpoint)['state_dict']
    layers = _read_csv(files['layers_csv'])
    assert sorted(r['layer'] for r in layers) == sorted(
        k[:-len('.p1')] for k in state if k.endswith('.p1'))
    _check_learned_rows(layers, _read_csv(files['channels_csv']), state)
    _assert_png(files['depth_png'])


def test_analyze_acon_meta_detector(trained, tmp_path):
    """ACON-C backbone + pixel-wise meta-ACON FPN, images from --images DIR:
    learned rows match the checkpoint; the generated beta equals
    sigma(bn1(fc1(x))) computed from the checkpoint's tensors on the layer's
    input, for the same images taken from the config's test set."""
    import os
    import shutil

    from acon_mm.analysis import image_batches, load_model
    img_dir = tmp_path / 'imgs'
    img_dir.mkdir()
    src = osp.join(trained['data_root'], 'val2017')
    for f in sorted(os.listdir(src))[:2]:
        shutil.copy(osp.join(src, f), img_dir / f)
    tool = _tool('analyze_acon')
    result, files = tool.main([trained['cfg'], trained['ckpt'], '--images',
                               str(img_dir), '--out-dir', str(tmp_path / 'out')])
    state = safe_torch_load(trained['ckpt'])['state_dict']
    layers = _read_csv(files['layers_csv'])
    names = [r['layer'] for r in layers]
    assert names[0] == 'backbone.layer1.0.acon1'
    learned = _check_learned_rows(layers, _read_csv(files['channels_csv']), state)
    generated = [r for r in layers if r['type'] == 'MetaAconC']
    assert len(learned) == 16 and len(generated) == 6  # 8 blocks x 2; FPN 3+3
    assert names.index(generated[0]['layer']) == 16  # neck after backbone
    for r in generated:
        assert r['beta_source'] == 'generated' and int(r['num_images']) == 2
        assert 0 < float(r['beta_mean']) < 1
    for key in ('depth_png', 'meta_png', 'pixel_png'):
        _assert_png(files[key])

    # independent recomputation of one pixel switch
    rows = {r['layer']: r for r in layers}
    model, cfg = load_model(trained['cfg'], trained['ckpt'])
    name = 'neck.fpn_convs.0.activate'
    layer = dict(model.named_modules())[name]
    inputs = []
    h = layer.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    with torch.no_grad():
        for data, _ in image_batches(cfg, None, num_images=2):  # the test set
            data = model.data_preprocessor(data, False)
            model(data['inputs'], data['data_samples'], mode='tensor')
    h.remove()
    assert len(inputs) == 2

    def t(key):
        return state[f'{name}.{key}'].double().view(1, -1, 1, 1)

    w = state[f'{name}.fc1.weight'].double()[:, :, 0, 0]
    betas = []
    for x in inputs:
        z = torch.einsum('nchw,oc->nohw', x.double(), w) + t('fc1.bias')
        z = (z - t('bn1.running_mean')) / torch.sqrt(t('bn1.running_var') + 1e-5) \
            * t('bn1.weight') + t('bn1.bias')
        betas.append(torch.sigmoid(z).flatten())
    ref = torch.cat(betas)
    assert float(rows[name]['beta_mean']) == pytest.approx(ref.mean().item(), rel=1e-4)
    assert float(rows[name]['beta_std']) == pytest.approx(
        ref.std(unbiased=False).item(), rel=1e-3, abs=1e-6)
    d = (state[f'{name}.p1'] - state[f'{name}.p2']).double().flatten()
    eta = (ref.view(2, -1)[:, :, None] * d.abs()).mean(dim=(0, 1))  # per channel
    assert float(rows[name]['eta_median']) == pytest.approx(
        float(np.median(eta.numpy())), rel=1e-3)


def test_analyze_acon_bad_input(trained, tmp_path):
    tool = _tool('analyze_acon')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        tool.main([trained['cfg'], str(tmp_path / 'nope.pth'),
                   '--out-dir', str(tmp_path)])
    # a checkpoint of another model: refused by the shared check, keys and counts named
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'foo.weight': torch.zeros(1)}}, other)
    with pytest.raises(KeyError, match=r"does not fit the model .*"
                       r"unexpected keys \(1: 'foo\.weight'\)"):
        tool.main([trained['cfg'], str(other), '--out-dir', str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='--images'):
        tool.main([trained['cfg'], trained['ckpt'], '--images',
                   str(tmp_path / 'missing'), '--out-dir', str(tmp_path)])


def test_acon_stats_hook_logs_layer_values(trained):
    """The hook's scalars at the last iteration equal the trained layers'
    learned beta; meta-ACON values are generated betas in (0, 1)."""
    runner = trained['runner']
    vis_files = []
    for root, _, fs in __import__('os').walk(trained['work_dir']):
        vis_files += [osp.join(root, f) for f in fs if f == 'scalars.json']
    assert vis_files
    records = [json.loads(line) for line in open(vis_files[0])]
    acon = [r for r in records if any(k.startswith('acon/') for k in r)]
    assert [r['step'] for r in acon] == [1, 2, 3]
    last = acon[-1]
    state = safe_torch_load(trained['ckpt'])['state_dict']
    for name, layer in iter_acon_layers(runner.model):
        if isinstance(layer, AconC):
            beta = state[f'{name}.beta'].double()
            d = (state[f'{name}.p1'] - state[f'{name}.p2']).double()
            assert last[f'acon/{name}/beta_mean'] == pytest.approx(
                beta.mean().item(), rel=1e-5)
            assert last[f'acon/{name}/eta_mean'] == pytest.approx(
                (beta * d).abs().mean().item(), rel=1e-5)
        else:
            assert isinstance(layer, MetaAconC)
            assert 0 < last[f'acon/{name}/beta_mean'] < 1
            assert last[f'acon/{name}/beta_std'] >= 0
    # and the text log has the table
    logs = []
    for root, _, fs in __import__('os').walk(trained['work_dir']):
        logs += [osp.join(root, f) for f in fs if f.endswith('.log')]
    text = open(logs[0]).read()
    assert 'ACON stats at iter 3' in text and 'backbone.layer1.0.acon1' in text
    # the switch_beta wrappers are gone after training
    assert all('switch_beta' not in m.__dict__ for m in runner.model.modules())


def test_acon_stats_hook_bad_interval():
    from acon_mm.engine.hooks import AconStatsHook
    with pytest.raises(ValueError, match='interval'):
        AconStatsHook(interval=0)


def test_acon_stats_hook_generated_beta_exact(tmp_path):
    """With a norm-free switch the generated beta is a pure function of the
    layer's input, so the hook's value can be recomputed exactly."""
    import torch.nn as nn
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from acon_mm.engine.hooks import AconStatsHook

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = MetaAconC(8, switch='channel', r=2, norm_cfg=None)
            self.seen = []
            self.seen_d = []

        def forward(self, inputs, labels=None, mode='tensor'):
            x = self.conv(torch.stack(inputs))
            with torch.no_grad():  # independent recomputation of G(x)
                y = x.mean(dim=(2, 3), keepdim=True)
                self.seen.append(torch.sigmoid(
                    self.act.fc2(self.act.fc1(y))).double())
                self.seen_d.append((self.act.p1 - self.act.p2).abs().double())
            out = self.act(x)
            if mode == 'loss':
                return dict(loss=out.pow(2).mean())
            return out

    data = [dict(inputs=torch.randn(3, 8, 8)) for _ in range(8)]
    hook = AconStatsHook(interval=2)
    runner = Runner(
        model=Net(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=4, val_interval=100),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[hook], default_hooks=dict(logger=dict(type='LoggerHook',
                                                            interval=1)),
        visualizer=dict(type='Visualizer',
                        vis_backends=[dict(type='LocalVisBackend')]),
        default_scope='mmengine')
    runner.train()
    model = runner.model
    assert len(model.seen) == 4
    records = [json.loads(line) for line in open(
        osp.join(runner.log_dir, 'vis_data', 'scalars.json'))]
    acon = [r for r in records if 'acon/act/beta_mean' in r]
    assert [r['step'] for r in acon] == [2, 4]
    for rec, i in zip(acon, (1, 3)):
        seen = model.seen[i]
        assert rec['acon/act/eta_mean'] == pytest.approx(
            (seen * model.seen_d[i]).mean().item(), rel=1e-6)
        assert rec['acon/act/beta_mean'] == pytest.approx(seen.mean().item(), rel=1e-6)
        assert rec['acon/act/beta_std'] == pytest.approx(
            seen.std(unbiased=False).item(), rel=1e-5, abs=1e-8)


# --------------------------------------------------------------------------
def _flops_cfg(tmp_path, name, backbone_act, neck_act='None'):
    return _write_cfg(tmp_path / f'{name}.py', str(tmp_path / 'nodata'),
                      backbone_act=backbone_act, neck_act=neck_act)


def test_get_flops_relu_vs_acon(tmp_path):
    """ReLU vs ACON-C differ only by the activation's cost: no FLOPs in
    mmengine's default count, 3 parameters per channel, and exactly
    (6 - 1) elementwise ops per activated element. meta-ACON adds its switch
    generator's 1x1 convs."""
    from mmengine.config import Config

    from acon_mm.analysis import build_model_from_cfg
    tool = _tool('get_flops')
    aconc = _flops_cfg(tmp_path, 'tiny_aconc', "dict(type='AconC')")
    meta = _flops_cfg(tmp_path, 'tiny_meta', "dict(type='MetaAconC')")
    rows = tool.main([aconc, meta, '--shape', '64', '64', '--out-dir',
                      str(tmp_path / 'flops')])
    assert osp.getsize(tmp_path / 'flops' / 'flops.csv') > 0
    assert len(_read_csv(tmp_path / 'flops' / 'flops.csv')) == 3  # one shared baseline
    by = {r['model']: r for r in rows}
    a, m = by['tiny_aconc'], by['tiny_meta']
    base = by[a['baseline']]
    assert m['baseline'] == a['baseline']
    assert base['acon_params'] == 0 and base['acon_layers'] == 0

    # independent expectations from the ACON-C model itself
    model = build_model_from_cfg(Config.fromfile(aconc))
    layers = list(iter_acon_layers(model))
    assert len(layers) == 16
    numels = {}
    hooks = [layer.register_forward_hook(
        lambda mod, i, o, n=n: numels.__setitem__(n, o.numel())) for n, layer in layers]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    acon_params = sum(3 * layer.num_channels for _, layer in layers)
    assert a['acon_params'] == acon_params
    assert a['params'] - base['params'] == acon_params == a['d_params']
    assert a['flops'] == base['flops']  # mmengine's default ignores elementwise ops
    ew = sum(numels.values())
    # ACON-C: (p1-p2)*x, beta*., sigmoid, *, p2*x, + : 6 per element (+ the tiny
    # per-channel p1-p2); ReLU: 1 per element
    per_channel = sum(layer.num_channels for _, layer in layers)
    assert a['flops_elementwise'] - base['flops_elementwise'] == 5 * ew + per_channel
    assert a['acon_flops_elementwise'] == 6 * ew + per_channel
    # meta-ACON: its switch generator's convs (real convs) are counted
    mmodel = build_model_from_cfg(Config.fromfile(meta))
    switch_macs = sum(
        layer.fc1.in_channels * layer.fc1.out_channels
        + layer.fc2.in_channels * layer.fc2.out_channels
        for _, layer in iter_acon_layers(mmodel))
    assert m['d_flops'] > 0 and m['d_flops'] >= switch_macs
    assert m['acon_flops'] == m['d_flops']
    # 'flops' is exactly mmengine's get_model_complexity_info
    from mmengine.analysis import get_model_complexity_info

    from acon_mm.analysis import naive_acon_ops
    with naive_acon_ops():
        info = get_model_complexity_info(mmodel, inputs=(torch.randn(1, 3, 64, 64), ),
                                         show_table=False, show_arch=False)
    assert info['flops'] == m['flops'] and info['params'] == m['params']
    # negligible / small relative costs
    assert a['d_params'] / base['params'] < 0.01
    assert m['d_flops'] / base['flops'] < 0.05
