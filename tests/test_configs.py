"""Every config in configs/ loads, builds its model, and says what its name says."""
import copy
import functools
import glob
import importlib.util
import os.path as osp
import re

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from acon_mm.engine.runner_utils import (
    MissingPretrainedError,
    NoCUDAError,
    adapt_cfg_to_device,
    check_pretrained_files,
    config_task,
    set_data_root,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)
FULL = [c for c in CONFIGS if not c.startswith('configs/demo/')]
HAS_MMPRETRAIN = importlib.util.find_spec('mmpretrain') is not None
#: raw BGR 0-255, the official networks' input (converted weights record it)
RAW_BGR = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
ACT_OF = {'relu': 'ReLU', 'swish': 'SwishBeta', 'aconc': 'AconC',
          'metaacon': 'MetaAconC'}


def _needs_mmpretrain(rel):
    return rel.startswith(('configs/imagenet/', 'configs/search/')) or rel.endswith('_in1k.py')


@functools.lru_cache(maxsize=None)
def _load_cached(rel):
    return Config.fromfile(osp.join(ROOT, rel))


def _load(rel):
    return copy.deepcopy(_load_cached(rel))


def _registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    elif scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
        from mmpretrain.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def test_config_set_is_complete():
    names = {osp.basename(c) for c in CONFIGS}
    for depth in ('r50', 'r101'):
        for act in ACT_OF:
            assert f'retinanet_{depth}-{act}_fpn_1x_coco.py' in names
            assert (f'pspnet_{depth}-d8-{act}_4xb2-80k_cityscapes-512x1024.py'
                    in names)
    assert 'retinanet_shufflenetv2-1.0x-metaacon_fpn_1x_coco.py' in names
    assert 'retinanet_r18-aconc_fpn_demo.py' in names
    assert 'pspnet_r18-d8-aconc_demo.py' in names
    for depth in (50, 101, 152):
        for act in ACT_OF:
            assert f'resnet{depth}-{act}_8xb32_in1k.py' in names
    for width in ('0.5', '1.0', '1.5', '2.0'):
        for act in ('relu', 'aconc', 'metaacon'):
            assert f'shufflenetv2-{width}x-{act}_8xb128_in1k.py' in names
    assert 'resnet18-aconc_demo_in1k.py' in names
    assert 'retinanet_r18-aconc_fpn_pretrained_demo.py' in names


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_builds(rel):
    import acon_mm  # noqa: F401
    if _needs_mmpretrain(rel) and not HAS_MMPRETRAIN:
        pytest.skip('mmpretrain is not installed')
    cfg = _load(rel)
    scope = config_task(cfg)
    assert cfg.custom_imports == dict(imports=['acon_mm'],
                                      allow_failed_imports=False), rel
    with open(osp.join(ROOT, rel)) as f:
        text = f.read()
    assert re.search(r"_base_ = '(mmdet::|mmseg::|mmpretrain::|\./|\.\./)",
                     text), rel
    # acon-mm's kill-safe hook, selected by name (upstream's is not replaced)
    assert cfg.default_hooks.checkpoint.type == 'AconCheckpointHook', rel
    # an earlier test may have left another library's default scope current
    with DefaultScope.overwrite_default_scope(scope):
        model = _registry(scope).build(copy.deepcopy(cfg.model))
    bb = cfg.model.backbone
    assert type(model.backbone).__name__ == bb.type
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 1e5, rel
    # the activation the file name announces
    name = osp.basename(rel)
    act = next(a for a in ACT_OF if re.search(f'-{a}[-_]', name))
    assert bb.acon_cfg.type == ACT_OF[act], rel
    assert any(type(m).__name__ == ACT_OF[act] for m in model.backbone.modules())
    if rel.startswith('configs/demo/'):
        if 'pretrained' in name:  # initialised from the demo pretraining
            assert bb.init_cfg.prefix == 'backbone.'
            assert 'resnet18-aconc_demo_in1k' in bb.init_cfg.checkpoint
        else:
            assert bb.get('init_cfg') is None  # the demo trains from scratch
        return
    m = re.search(r'_r(\d+)|^resnet(\d+)', name)
    if m:
        assert bb.depth == int(m.group(1) or m.group(2)), rel
    tv = '-torchvision_' in name  # the ReLU baseline on torchvision's weights
    if scope != 'mmpretrain' and not tv:  # every other model sees raw BGR 0-255
        dp = cfg.model.data_preprocessor
        assert dp.mean == RAW_BGR['mean'] and dp.std == RAW_BGR['std'], rel
        assert dp.bgr_to_rgb is False, rel
    assert cfg.optim_wrapper.constructor == 'AconOptimWrapperConstructor'
    if rel.startswith('configs/search/'):  # the search's child: CIFAR, from scratch
        assert scope == 'mmpretrain' and bb.type == 'ResNetCIFARACON', rel
        assert bb.get('init_cfg') is None and cfg.model.head.num_classes == 10, rel
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            assert loader.dataset.type == 'ValidatedCIFAR10', rel
        return
    if scope == 'mmpretrain':
        _check_imagenet_recipe(cfg, name)
        return
    assert bb.init_cfg.type == 'Pretrained'
    if tv:  # torchvision's layout, weights (test_torchvision_baseline.py)
        assert (bb.conv_bias, bb.style) == (False, 'pytorch'), rel
        assert bb.init_cfg.checkpoint == 'torchvision://resnet50', rel
    elif act in ('relu', 'swish'):  # weights of the ImageNet configs
        imagenet = f'resnet{bb.depth}-{act}_8xb32_in1k'
        assert bb.init_cfg.checkpoint == \
            f'work_dirs/{imagenet}/iter_600000.pth', rel
        assert bb.init_cfg.prefix == 'backbone.', rel
        assert f'configs/imagenet/{imagenet}.py' in text, rel
    else:  # the converted official weights
        assert bb.init_cfg.checkpoint.startswith('checkpoints/'), rel
        assert bb.init_cfg.get('prefix') is None, rel
    if scope == 'mmdet':
        assert cfg.model.bbox_head.num_classes == 80
        assert cfg.train_cfg.max_epochs == 12  # stock 1x schedule
        assert cfg.train_dataloader.dataset.ann_file == \
            'annotations/instances_train2017.json'
    else:
        assert cfg.model.decode_head.num_classes == 19
        assert cfg.train_cfg.max_iters == 80000  # stock 80k schedule
        assert bb.norm_cfg.type == 'SyncBN'
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
        # output stride 8: strides multiply to 2 after the stride-4 stem
        assert tuple(bb.strides) == (1, 2, 1, 1)
        assert tuple(bb.dilations) == (1, 1, 2, 4)
        assert bb.contract_dilation is True


def _check_imagenet_recipe(cfg, name):
    """The official recipe (github.com/nmaac/acon: train.py, utils.py)."""
    dp = cfg.model.data_preprocessor
    assert dp.mean == RAW_BGR['mean'] and dp.std == RAW_BGR['std']
    assert dp.to_rgb is False
    assert cfg.model.backbone.get('init_cfg') is None  # trained from scratch
    assert cfg.model.head.num_classes == 1000
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'SGD' and opt.momentum == 0.9
    sched = cfg.param_scheduler[-1]
    assert sched.type == 'LinearLR' and sched.end_factor == 0.0
    # lr(t) = lr0 * (1 - t / max_iters): mmengine's LinearLR ends at end - 1
    assert sched.by_epoch is False and sched.end == cfg.train_cfg.max_iters + 1
    types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert types[1:4] == ['RandomResizedCrop', 'ColorJitter', 'RandomFlip']
    types = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert types[1:3] == ['OfficialResizeShortSide', 'CenterCrop']
    if name.startswith('resnet'):
        assert cfg.train_dataloader.batch_size * 8 == 256
        assert cfg.train_cfg.max_iters == 600000
        assert (opt.lr, opt.weight_decay) == (0.1, 1e-4)
        assert cfg.model.head.loss.type == 'CrossEntropyLoss'
    else:
        assert cfg.train_dataloader.batch_size * 8 == 1024
        assert cfg.train_cfg.max_iters == 300000
        assert (opt.lr, opt.weight_decay) == (0.5, 4e-5)
        assert cfg.model.head.loss.type == 'LabelSmoothLoss'
        assert cfg.model.head.loss.label_smooth_val == 0.1
        assert cfg.model.head.loss.mode == 'original'


def _strip_act(cfg):
    d = copy.deepcopy(cfg.to_dict())
    d['model']['backbone'].pop('acon_cfg')
    d['model']['backbone'].pop('init_cfg', None)
    d.pop('filename', None)
    return d


@pytest.mark.parametrize('family', [
    'retinanet/retinanet_r50-{}_fpn_1x_coco.py',
    'retinanet/retinanet_r101-{}_fpn_1x_coco.py',
    'pspnet/pspnet_r50-d8-{}_4xb2-80k_cityscapes-512x1024.py',
    'pspnet/pspnet_r101-d8-{}_4xb2-80k_cityscapes-512x1024.py',
    'imagenet/resnet50-{}_8xb32_in1k.py',
    'imagenet/resnet152-{}_8xb32_in1k.py',
    'imagenet/shufflenetv2-0.5x-{}_8xb128_in1k.py',
    'imagenet/shufflenetv2-2.0x-{}_8xb128_in1k.py',
])
def test_configs_differ_in_the_activation_alone(family):
    if family.startswith('imagenet/') and not HAS_MMPRETRAIN:
        pytest.skip('mmpretrain is not installed')
    base = _strip_act(_load('configs/' + family.format('relu')))
    acts = ('swish', 'aconc', 'metaacon')
    if family.startswith('imagenet/shufflenetv2'):
        acts = ('aconc', 'metaacon')
    for act in acts:
        other = _strip_act(_load('configs/' + family.format(act)))
        assert other == base, (family, act)


def test_missing_pretrained_is_named_with_the_converter():
    cfg = _load('configs/retinanet/retinanet_r50-aconc_fpn_1x_coco.py')
    with pytest.raises(MissingPretrainedError) as err:
        check_pretrained_files(cfg)
    msg = str(err.value)
    assert 'checkpoints/resnet50_acon_mm.pth' in msg
    assert 'model.backbone.init_cfg.checkpoint' in msg
    assert 'tools/model_converters/acon_official_to_mm.py' in msg
    assert 'model.backbone.init_cfg=None' in msg
    cfg.model.backbone.init_cfg = None
    check_pretrained_files(cfg)  # from scratch: nothing to check


def test_relu_pretrained_message_says_no_official_weights():
    cfg = _load('configs/pspnet/pspnet_r101-d8-relu_4xb2-80k_cityscapes-512x1024.py')
    with pytest.raises(MissingPretrainedError, match='no official ImageNet') \
            as err:
        check_pretrained_files(cfg)
    assert 'python tools/train.py configs/imagenet/resnet101-relu_8xb32_in1k.py' \
        in str(err.value)
    assert 'work_dirs/resnet101-relu_8xb32_in1k/iter_600000.pth' in str(err.value)


@pytest.mark.parametrize('act', ['relu', 'swish', 'aconc', 'metaacon'])
def test_imagenet_backbone_fits_the_transfer_backbones(act):
    """The ImageNet config's backbone has the transfer configs' tensors."""
    if not HAS_MMPRETRAIN:
        pytest.skip('mmpretrain is not installed')
    import torch
    from mmengine.registry import MODELS

    import acon_mm  # noqa: F401
    src = _load(f'configs/imagenet/resnet50-{act}_8xb32_in1k.py').model.backbone
    keys = None
    for rel in (f'configs/retinanet/retinanet_r50-{act}_fpn_1x_coco.py',
                f'configs/pspnet/pspnet_r50-d8-{act}_4xb2-80k_cityscapes-512x1024.py'):
        dst = copy.deepcopy(_load(rel).model.backbone)
        dst.init_cfg = None
        if dst.norm_cfg.type == 'SyncBN':
            dst.norm_cfg.type = 'BN'
        with torch.device('meta'):
            if keys is None:
                keys = {k: tuple(v.shape) for k, v in
                        MODELS.build(copy.deepcopy(src)).state_dict().items()}
            other = {k: tuple(v.shape) for k, v in
                     MODELS.build(dst).state_dict().items()}
        assert other == keys, rel


def test_cpu_adaptation_replaces_sync_bn_and_backend(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = _load('configs/pspnet/pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py')
    msgs = adapt_cfg_to_device(cfg, launcher='pytorch', allow_cpu=True)
    text = '\n'.join(msgs)
    assert 'SyncBN replaced by BN' in text and 'model.backbone.norm_cfg' in text
    assert 'model.decode_head.norm_cfg' in text
    assert "'gloo'" in text
    assert "'SyncBN'" not in str(cfg.model)
    # meta-ACON's switch norm stays synchronised where it can be and runs per
    # process on CPU (AconSwitchSyncBN)
    assert cfg.model.backbone.acon_cfg.norm_cfg.type == 'AconSwitchSyncBN'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None


def test_no_cuda_stops_unless_cpu_is_asked_for(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv('ACON_MM_ALLOW_CPU', raising=False)
    path = 'configs/retinanet/retinanet_r50-metaacon_fpn_1x_coco.py'
    cfg = _load(path)
    with pytest.raises(NoCUDAError) as err:
        adapt_cfg_to_device(cfg, launcher='pytorch')
    msg = str(err.value)
    assert 'retinanet_r50-metaacon_fpn_1x_coco.py' in msg
    assert '--cpu' in msg and 'ACON_MM_ALLOW_CPU=1' in msg
    monkeypatch.setenv('ACON_MM_ALLOW_CPU', '1')
    assert adapt_cfg_to_device(cfg, launcher='none')[0].startswith('no CUDA')


@pytest.mark.slow
def test_train_tool_refuses_cpu_without_flag(run_tool, demo_coco,
                                              det_demo_config):
    proc = run_tool('tools/train.py', det_demo_config, '--data-root',
                    demo_coco['data_root'], env={'ACON_MM_ALLOW_CPU': '0'},
                    check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'CUDA is not available' in proc.stderr
    assert '--cpu' in proc.stderr


def test_config_task_rejects_unknown_scope():
    cfg = Config(dict(default_scope='mmocr', model=dict(type='X')))
    with pytest.raises(ValueError, match='default_scope=.mmocr.'):
        config_task(cfg)


def test_set_data_root_rewrites_datasets_and_evaluators(tmp_path):
    cfg = _load('configs/retinanet/retinanet_r50-relu_fpn_1x_coco.py')
    set_data_root(cfg, str(tmp_path))
    root = str(tmp_path) + '/'
    for s in ('train', 'val', 'test'):
        assert cfg[f'{s}_dataloader'].dataset.data_root == root
    assert cfg.val_evaluator.ann_file == root + \
        'annotations/instances_val2017.json'
    with pytest.raises(FileNotFoundError, match='nowhere'):
        set_data_root(cfg, str(tmp_path / 'nowhere'))
