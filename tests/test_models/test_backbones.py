"""ResNetACON and ShuffleNetV2ACON as mmdet/mmseg backbones."""
import os

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import acon_mm  # noqa: F401  (registers the modules)
from acon_mm.models.backbones import ResNetACON, ShuffleNetV2ACON
from acon_mm.models.layers import AconC, MetaAconC, iter_acon_layers

from official_reference import official_channel_shuffle


@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread():
    """One intra-op thread: on a small shared CI machine (2 busy cores) this is
    several times faster than OpenMP threads competing for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------
# ResNetACON: shapes, strides, positions
@pytest.mark.parametrize('depth,channels', [
    (18, (64, 128, 256, 512)), (34, (64, 128, 256, 512)),
    (50, (256, 512, 1024, 2048)), (101, (256, 512, 1024, 2048)),
    (152, (256, 512, 1024, 2048))])
def test_resnet_shapes_and_strides(depth, channels):
    torch.manual_seed(0)
    m = ResNetACON(depth=depth).eval()
    x = _rand(1, 3, 64, 64)
    with torch.no_grad():
        outs = m(x)
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16, 32))]
    assert all(torch.isfinite(o).all() for o in outs)
    # stage depths of the official networks
    blocks = ResNetACON.arch_settings[depth][1]
    assert tuple(len(getattr(m, f'layer{i + 1}')) for i in range(4)) == blocks


def test_resnet_default_is_official_bottleneck():
    m = ResNetACON(depth=50)
    blk = m.layer2[0]
    # stride on the first 1x1 conv (caffe style), biased convs, 7x7 biased stem
    assert blk.conv1.stride == (2, 2) and blk.conv2.stride == (1, 1)
    assert blk.conv1.bias is not None and blk.downsample[0].bias is not None
    assert m.conv1.kernel_size == (7, 7) and m.conv1.bias is not None
    assert isinstance(blk.acon, AconC) and isinstance(blk.act1, nn.ReLU)
    names = [n for n, _ in iter_acon_layers(m)]
    assert len(names) == 16 and all(n.endswith('.acon') for n in names)
    assert names[0] == 'layer1.0.acon' and names[-1] == 'layer4.2.acon'
    # every ACON layer knows its module path (for error messages)
    assert all(layer.layer_name == n for n, layer in iter_acon_layers(m))
    # pytorch style moves the stride to the 3x3 conv
    p = ResNetACON(depth=50, style='pytorch').layer2[0]
    assert p.conv1.stride == (1, 1) and p.conv2.stride == (2, 2)


@pytest.mark.parametrize('acon_type', ['AconC', 'MetaAconC', 'AconA',
                                       'SwishBeta', 'AconB', 'ReLU'])
def test_resnet_acon_types_same_code_path(acon_type):
    torch.manual_seed(0)
    m = ResNetACON(depth=18, acon_cfg=dict(type=acon_type), out_indices=(3, ))
    acts = [m.layer1[0].acon1, m.layer1[0].acon2, m.layer4[1].acon2]
    assert all(type(a).__name__ == acon_type for a in acts)
    n_acon = len(list(iter_acon_layers(m)))
    assert n_acon == (0 if acon_type == 'ReLU' else 16)  # 8 blocks x 2
    out = m(_rand(2, 3, 32, 32))[0]
    assert out.shape == (2, 512, 1, 1)
    out.sum().backward()
    if acon_type != 'ReLU':
        grads = [p.grad for n, p in m.named_parameters() if '.acon' in n]
        assert grads and all(g is not None for g in grads)


def test_resnet_acon_positions_all():
    m = ResNetACON(depth=50, acon_positions='all', num_stages=2,
                   out_indices=(0, 1), acon_cfg=dict(type='AconA'))
    names = {n for n, _ in iter_acon_layers(m)}
    assert {'stem_act', 'layer1.0.act1', 'layer1.0.acon', 'layer1.0.act3',
            'layer2.3.act3'} <= names
    assert len(names) == 1 + 3 * (3 + 4)
    d = ResNetACON(depth=18, deep_stem=True, acon_positions='all',
                   num_stages=1, out_indices=(0, ))
    assert {'stem.2', 'stem.5', 'stem.8'} <= {n for n, _ in iter_acon_layers(d)}
    assert d(_rand(1, 3, 32, 32))[0].shape == (1, 64, 8, 8)


def test_resnet_bad_config_is_named():
    with pytest.raises(KeyError, match=r"depth 42.*\[18, 34, 50, 101, 152\]"):
        ResNetACON(depth=42)
    with pytest.raises(KeyError, match="'NotAnAcon'.*layer1.0.acon"):
        ResNetACON(depth=50, acon_cfg=dict(type='NotAnAcon'))
    with pytest.raises(ValueError, match='frozen_stages=5 is out of range'):
        ResNetACON(depth=18, frozen_stages=5)
    with pytest.raises(ValueError, match='frozen_stages=-2 is out of range'):
        ResNetACON(depth=18, frozen_stages=-2)
    with pytest.raises(ValueError, match='out_indices entry 4 is out of range'):
        ResNetACON(depth=18, out_indices=(0, 4))
    with pytest.raises(ValueError, match="acon_positions 'some'"):
        ResNetACON(depth=18, acon_positions='some')
    with pytest.raises(ValueError, match="style 'tf'"):
        ResNetACON(depth=18, style='tf')


def _frozen_ok(modules):
    for mod in modules:
        for p in mod.parameters():
            assert not p.requires_grad
        for sub in mod.modules():
            if isinstance(sub, _BatchNorm):
                assert not sub.training


def test_resnet_frozen_stages():
    m = ResNetACON(depth=18, frozen_stages=2, acon_cfg=dict(type='MetaAconC'))
    m.train()
    _frozen_ok([m.conv1, m.bn1, m.layer1, m.layer2])
    assert all(p.requires_grad for p in m.layer3.parameters())
    assert m.layer3[0].bn1.training and m.layer3[0].acon1.bn1.training
    before = m.layer1[0].bn1.running_mean.clone()
    before3 = m.layer3[0].bn1.running_mean.clone()
    m(_rand(2, 3, 32, 32))[-1].sum().backward()
    assert torch.equal(before, m.layer1[0].bn1.running_mean)
    assert not torch.equal(before3, m.layer3[0].bn1.running_mean)
    assert all(p.grad is None for p in m.layer2.parameters())
    assert m.layer3[0].conv1.weight.grad is not None


def test_resnet_norm_eval():
    m = ResNetACON(depth=18, norm_eval=True, acon_cfg=dict(type='MetaAconC'))
    m.train()
    bns = [s for s in m.modules() if isinstance(s, _BatchNorm)]
    assert bns and not any(b.training for b in bns)
    stats = [b.running_mean.clone() for b in bns]
    m(_rand(2, 3, 32, 32))
    assert all(torch.equal(s, b.running_mean) for s, b in zip(stats, bns))
    # without norm_eval the statistics move
    m2 = ResNetACON(depth=18).train()
    s2 = m2.bn1.running_mean.clone()
    m2(_rand(2, 3, 32, 32))
    assert not torch.equal(s2, m2.bn1.running_mean)


@pytest.mark.parametrize('build', [
    lambda cp: ResNetACON(depth=18, with_cp=cp, acon_cfg=dict(type='MetaAconC')),
    lambda cp: ResNetACON(depth=50, with_cp=cp, num_stages=2, out_indices=(0, 1)),
    lambda cp: ShuffleNetV2ACON(widen_factor=0.5, with_cp=cp,
                                acon_cfg=dict(type='MetaAconC')),
], ids=['r18-metaacon', 'r50-acon', 'shufflenetv2-0.5x-metaacon'])
def test_with_cp_same_outputs_and_grads(build):
    torch.manual_seed(0)
    ref = build(False)
    m = build(True)
    m.load_state_dict(ref.state_dict())
    assert any(getattr(b, 'with_cp', False) for b in m.modules())
    outs = []
    for model in (ref, m):
        model.train()
        x = _rand(2, 3, 32, 32).requires_grad_()
        y = model(x)
        sum((o * _rand(*o.shape, seed=i + 1)).sum() for i, o in enumerate(y)).backward()
        outs.append((y, x.grad, {n: p.grad for n, p in model.named_parameters()}))
    (y0, gx0, g0), (y1, gx1, g1) = outs
    for a, b in zip(y0, y1):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(gx0, gx1)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert (g0[n] is None) == (g1[n] is None), n
        if g0[n] is not None:
            torch.testing.assert_close(g0[n], g1[n], msg=n)


def test_resnet_dilated_output_stride_8():
    # mmseg's ResNetV1c as PSPNet uses it
    m = ResNetACON(depth=50, deep_stem=True, strides=(1, 2, 1, 1),
                   dilations=(1, 1, 2, 4), contract_dilation=True).eval()
    with torch.no_grad():
        outs = m(_rand(1, 3, 64, 64))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16)] + [(8, 8)] * 3
    assert m.layer3[0].conv2.dilation == (1, 1)  # contracted
    assert m.layer3[1].conv2.dilation == (2, 2)
    assert m.layer4[0].conv2.dilation == (2, 2)  # contracted
    assert m.layer4[1].conv2.dilation == (4, 4)
    assert m.layer4[1].conv2.padding == (4, 4)
    r18 = ResNetACON(depth=18, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)).eval()
    assert r18(_rand(1, 3, 64, 64))[-1].shape[-2:] == (8, 8)


def test_resnet_avg_down_gn_syncbn_and_init():
    m = ResNetACON(depth=50, avg_down=True, num_stages=2, out_indices=(1, ),
                   norm_cfg=dict(type='GN', num_groups=8))
    assert isinstance(m.layer2[0].downsample[0], nn.AvgPool2d)
    assert m.layer2[0].downsample[1].stride == (1, 1)
    assert isinstance(m.layer2[0].bn1, nn.GroupNorm)
    assert m(_rand(1, 3, 32, 32))[0].shape == (1, 512, 4, 4)
    s = ResNetACON(depth=18, norm_cfg=dict(type='SyncBN'))
    assert isinstance(s.layer1[0].bn1, nn.SyncBatchNorm)
    # default init: zero-init residual norms; ACON parameters keep their init
    r = ResNetACON(depth=50, num_stages=1, out_indices=(0, ))
    p1 = r.layer1[0].acon.p1.detach().clone()
    r.init_weights()
    assert torch.all(r.layer1[0].bn3.weight == 0)
    assert torch.all(r.layer1[0].bn1.weight == 1)
    assert torch.equal(p1, r.layer1[0].acon.p1)


def _mm_resnet(kind):
    from mmdet.models.backbones import ResNet, ResNetV1d
    from mmseg.models.backbones import ResNetV1c
    return {
        'mmdet-ResNet50-pytorch': (lambda: ResNet(depth=50, style='pytorch'),
                                   dict(depth=50, style='pytorch')),
        'mmdet-ResNet18-caffe': (lambda: ResNet(depth=18, style='caffe'),
                                 dict(depth=18, style='caffe')),
        'mmdet-ResNetV1d50': (lambda: ResNetV1d(depth=50),
                              dict(depth=50, deep_stem=True, avg_down=True,
                                   style='pytorch')),
        'mmseg-ResNetV1c50-d8': (
            lambda: ResNetV1c(depth=50, strides=(1, 2, 1, 1),
                              dilations=(1, 1, 2, 4), contract_dilation=True),
            dict(depth=50, deep_stem=True, strides=(1, 2, 1, 1),
                 dilations=(1, 1, 2, 4), contract_dilation=True,
                 style='pytorch')),
    }[kind]


@pytest.mark.parametrize('kind', ['mmdet-ResNet50-pytorch', 'mmdet-ResNet18-caffe',
                                  'mmdet-ResNetV1d50', 'mmseg-ResNetV1c50-d8'])
def test_relu_baseline_equals_mmdet_mmseg_resnet(kind):
    """With ReLU and unbiased convs, ResNetACON *is* mmdet's / mmseg's ResNet:
    same state-dict keys and shapes, identical features (style, deep_stem,
    avg_down, strides, dilations and contract_dilation follow them)."""
    build_ref, kwargs = _mm_resnet(kind)
    torch.manual_seed(0)
    ref = build_ref()
    ref.eval()  # (mmdet's ResNet.train returns None)
    sd = ref.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():  # random BN statistics and affine parameters
        if k.endswith('running_var') or (k.endswith('weight') and v.dim() == 1):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith(('running_mean', 'bias')):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    m = ResNetACON(acon_cfg=dict(type='ReLU'), conv_bias=False, **kwargs).eval()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        k: tuple(v.shape) for k, v in sd.items()}
    m.load_state_dict(sd, strict=True)
    x = _rand(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(ref(x), m(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------
# ShuffleNetV2ACON
@pytest.mark.parametrize('widen', [0.5, 1.0, 1.5, 2.0])
def test_shufflenet_shapes_and_strides(widen):
    torch.manual_seed(0)
    m = ShuffleNetV2ACON(widen_factor=widen).eval()
    with torch.no_grad():
        outs = m(_rand(1, 3, 64, 64))
    chans = ShuffleNetV2ACON.arch_settings[widen][1:]
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(chans, (8, 16, 32, 32))]
    assert len(m.features) == 16
    # ACON everywhere: first_conv, 2 per block, 1 per stride-2 projection, conv_last
    names = [n for n, _ in iter_acon_layers(m)]
    assert len(names) == 1 + 16 * 2 + 3 + 1
    assert {'first_conv.2', 'features.0.branch_proj.4', 'features.15.branch_main.7',
            'conv_last.2'} <= set(names)
    only = ShuffleNetV2ACON(widen_factor=widen, out_indices=(2, )).eval()
    with torch.no_grad():
        assert only(_rand(1, 3, 64, 64))[0].shape[1] == chans[2]


def test_shufflenet_meta_acon_reduction():
    half = ShuffleNetV2ACON(widen_factor=0.5, acon_cfg=dict(type='MetaAconC'))
    one = ShuffleNetV2ACON(widen_factor=1.0, acon_cfg=dict(type='MetaAconC'))
    assert isinstance(half.first_conv[2], MetaAconC)
    assert half.first_conv[2].r == 8 and half.first_conv[2].fc1.out_channels == 8
    assert one.first_conv[2].r == 16 and one.first_conv[2].fc1.out_channels == 16
    relu = ShuffleNetV2ACON(widen_factor=0.5, acon_cfg=dict(type='ReLU'))
    assert not list(iter_acon_layers(relu))
    assert isinstance(relu.features[3].branch_main[7], nn.ReLU)


def test_shufflenet_split_is_official_shuffle():
    from acon_mm.models.backbones.shufflenetv2_acon import ShuffleV2BlockACON
    x = _rand(2, 8, 3, 5)
    a, b = ShuffleV2BlockACON.channel_split(x)
    ra, rb = official_channel_shuffle(x)
    assert torch.equal(a, ra) and torch.equal(b, rb)


def test_shufflenet_frozen_norm_eval_and_bad_config():
    m = ShuffleNetV2ACON(widen_factor=0.5, frozen_stages=2).train()
    _frozen_ok([m.first_conv] + [m.features[k] for k in range(12)])
    assert all(p.requires_grad for p in m.features[12].parameters())
    assert m.features[12].branch_main[1].training
    n = ShuffleNetV2ACON(widen_factor=0.5, norm_eval=True).train()
    assert not any(s.training for s in n.modules() if isinstance(s, _BatchNorm))
    with pytest.raises(ValueError, match=r'widen_factor 0.75.*\[0.5, 1.0, 1.5, 2.0\]'):
        ShuffleNetV2ACON(widen_factor=0.75)
    with pytest.raises(ValueError, match='frozen_stages=5 is out of range'):
        ShuffleNetV2ACON(frozen_stages=5)
    with pytest.raises(ValueError, match='out_indices entry 4 is out of range'):
        ShuffleNetV2ACON(out_indices=(4, ))
    with pytest.raises(KeyError, match="'Acon'.*first_conv.2"):
        ShuffleNetV2ACON(acon_cfg=dict(type='Acon'))


# --------------------------------------------------------------------------
# stock mmdet / mmseg configs with the backbone swapped in
def _stock_config(pkg, rel):
    from mmengine.config import Config
    mod = __import__(pkg)
    path = os.path.join(os.path.dirname(mod.__file__), '.mim', 'configs', rel)
    assert os.path.isfile(path), path
    return Config.fromfile(path)


def _syncbn_to_bn(cfg):
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k == 'norm_cfg' and isinstance(v, dict) and v.get('type') == 'SyncBN':
                v['type'] = 'BN'
            else:
                _syncbn_to_bn(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _syncbn_to_bn(v)


def _acon_grads_ok(backbone):
    grads = [p.grad for n, p in backbone.named_parameters()
             if '.acon.' in n and p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_retinanet_stock_config_forward_backward():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData
    register_all_modules()
    cfg = _stock_config('mmdet', 'retinanet/retinanet_r50_fpn_1x_coco.py')
    bb = cfg.model.backbone
    cfg.model.backbone = dict(type='ResNetACON', depth=50,
                              acon_cfg=dict(type='AconC'),
                              out_indices=bb.out_indices,
                              frozen_stages=bb.frozen_stages,
                              norm_cfg=bb.norm_cfg, norm_eval=bb.norm_eval)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    assert type(model.backbone).__name__ == 'ResNetACON'
    samples, imgs = [], []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]]),
            labels=torch.tensor([i, 7]))
        samples.append(s)
        imgs.append((torch.rand(3, 64, 64) * 255).to(torch.uint8))
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    total = sum(v if torch.is_tensor(v) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    _acon_grads_ok(model.backbone)
    # frozen stem/stage 1 of the stock config stay without gradients
    assert model.backbone.layer1[0].acon.p1.grad is None


def test_pspnet_stock_config_forward_backward():
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _stock_config('mmseg',
                        'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py')
    bb = cfg.model.backbone
    assert bb.type == 'ResNetV1c'
    cfg.model.backbone = dict(type='ResNetACON', depth=50,
                              acon_cfg=dict(type='MetaAconC'), deep_stem=True,
                              strides=bb.strides, dilations=bb.dilations,
                              contract_dilation=bb.contract_dilation,
                              out_indices=bb.out_indices,
                              norm_cfg=dict(type='BN', requires_grad=True),
                              norm_eval=bb.norm_eval)
    cfg.model.pretrained = None  # the stock 'open-mmlab://resnet50_v1c' (no network)
    _syncbn_to_bn(cfg.model)
    cfg.model.data_preprocessor.size = (64, 64)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    samples, imgs = [], []
    for i in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        label = torch.randint(0, 19, (1, 64, 64))
        label[:, :4] = 255
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
        imgs.append((torch.rand(3, 64, 64) * 255).to(torch.uint8))
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)
    feats = model.extract_feat(data['inputs'])
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    _acon_grads_ok(model.backbone)
    assert model.backbone.layer4[2].acon.fc1.weight.grad is not None
