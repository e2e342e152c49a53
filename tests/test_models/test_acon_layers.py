"""The ACON family as OpenMMLab activation layers."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.models.layers import (
    AconA,
    AconB,
    AconC,
    AconSwitchBN,
    MetaAconC,
    SwishBeta,
    build_acon_layer,
)


# --------------------------------------------------------------------------
# independent float64 references (numpy, written from the paper's formulas)
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_acon_c(x, p1, p2, beta):
    d = (p1 - p2) * x
    return d * _sigmoid(beta * d) + p2 * x


def _np(t):
    return t.detach().double().numpy()


def _channel(t, c):
    return torch.as_tensor(t, dtype=torch.float64).reshape(1, c, 1, 1)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 5, 4, 3, dtype=torch.float64) * 3


def test_acon_a_formula(x):
    layer = AconA(5).double()
    with torch.no_grad():
        layer.beta.copy_(_channel(np.linspace(0.1, 3, 5), 5))
    expected = _np(x) * _sigmoid(_np(layer.beta) * _np(x))
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-12, atol=1e-12)


def test_swish_beta_formula_and_silu(x):
    scalar = SwishBeta(beta=1.7).double()
    assert scalar.beta.numel() == 1 and scalar.beta.requires_grad
    np.testing.assert_allclose(
        _np(scalar(x)), _np(x) * _sigmoid(scalar.beta.item() * _np(x)), rtol=1e-12)
    silu = SwishBeta(beta=1.0, learnable=False).double()
    assert not any(p.requires_grad for p in silu.parameters())
    assert len(list(silu.parameters())) == 0 and 'beta' in dict(silu.named_buffers())
    torch.testing.assert_close(silu(x), nn.functional.silu(x))
    per_channel = SwishBeta(beta=0.5, per_channel=True, num_channels=5).double()
    assert per_channel.beta.shape == (1, 5, 1, 1)
    np.testing.assert_allclose(
        _np(per_channel(x)), _np(x) * _sigmoid(_np(per_channel.beta) * _np(x)), rtol=1e-12)


def test_acon_b_formula(x):
    layer = AconB(5).double()
    with torch.no_grad():
        layer.p.copy_(_channel([0.1, -0.5, 0.25, 2.0, 0.0], 5))
        layer.beta.copy_(_channel([1.0, 2.0, 0.5, 3.0, 0.1], 5))
    p, b, xn = _np(layer.p), _np(layer.beta), _np(x)
    expected = (1 - p) * xn * _sigmoid(b * (1 - p) * xn) + p * xn
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-12, atol=1e-12)


def test_acon_c_formula_and_init(x):
    torch.manual_seed(3)
    layer = AconC(5)
    assert {n: tuple(p.shape) for n, p in layer.named_parameters()} == {
        'p1': (1, 5, 1, 1), 'p2': (1, 5, 1, 1), 'beta': (1, 5, 1, 1)}
    assert torch.equal(layer.beta, torch.ones(1, 5, 1, 1))
    # p1, p2 ~ N(0, 1), as the official code (torch.randn)
    big = AconC(4096)
    for p in (big.p1, big.p2):
        assert abs(p.mean().item()) < 0.1 and abs(p.std().item() - 1) < 0.1
    layer = layer.double()
    expected = ref_acon_c(_np(x), _np(layer.p1), _np(layer.p2), _np(layer.beta))
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('switch', ['layer', 'channel', 'pixel'])
def test_meta_acon_formula(x, switch):
    layer = MetaAconC(5, switch=switch, r=2).double().eval()
    xn = _np(x)
    if switch == 'layer':
        beta = _sigmoid(xn.mean(axis=(1, 2, 3), keepdims=True))
    elif switch == 'channel':
        assert layer.fc1.out_channels == max(2, 5 // 2)
        y = xn.mean(axis=(2, 3), keepdims=True)

        def conv1x1(v, conv):
            w = _np(conv.weight)[:, :, 0, 0]
            return np.einsum('oc,nchw->nohw', w, v) + _np(conv.bias).reshape(1, -1, 1, 1)

        def bn(v, m):
            return ((v - _np(m.running_mean).reshape(1, -1, 1, 1)) /
                    np.sqrt(_np(m.running_var).reshape(1, -1, 1, 1) + m.eps) *
                    _np(m.weight).reshape(1, -1, 1, 1) + _np(m.bias).reshape(1, -1, 1, 1))

        with torch.no_grad():  # non-trivial BN statistics
            for m in (layer.bn1, layer.bn2):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
        beta = _sigmoid(bn(conv1x1(bn(conv1x1(y, layer.fc1), layer.bn1), layer.fc2), layer.bn2))
    else:
        w = _np(layer.fc1.weight)[:, :, 0, 0]
        z = np.einsum('oc,nchw->nohw', w, xn) + _np(layer.fc1.bias).reshape(1, -1, 1, 1)
        m = layer.bn1
        z = (z - _np(m.running_mean).reshape(1, -1, 1, 1)) / np.sqrt(
            _np(m.running_var).reshape(1, -1, 1, 1) + m.eps)
        beta = _sigmoid(z)
        assert layer.switch_beta(x).shape == (2, 1, 4, 3)
    expected = ref_acon_c(xn, _np(layer.p1), _np(layer.p2), beta)
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-10, atol=1e-10)


def test_meta_acon_official_names_and_r():
    layer = MetaAconC(64)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {'p1', 'p2', 'fc1.weight', 'fc1.bias', 'bn1.weight', 'bn1.bias',
                     'fc2.weight', 'fc2.bias', 'bn2.weight', 'bn2.bias'}
    assert layer.fc1.out_channels == 16  # max(r=16, 64 // 16 = 4)
    assert MetaAconC(1024).fc1.out_channels == 64
    assert MetaAconC(48, r=8).fc1.out_channels == 8


# --------------------------------------------------------------------------
@pytest.mark.parametrize('make', [
    lambda: AconA(3), lambda: AconB(3), lambda: AconC(3), lambda: SwishBeta(1.3),
    lambda: SwishBeta(per_channel=True, num_channels=3),
    lambda: MetaAconC(3, switch='channel', r=2, norm_cfg=None),
    lambda: MetaAconC(3, switch='layer'), lambda: MetaAconC(3, switch='pixel', norm_cfg=None)
], ids=['A', 'B', 'C', 'swish', 'swish_pc', 'meta_channel', 'meta_layer', 'meta_pixel'])
def test_gradcheck(make):
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(inp, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_special_cases():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64).reshape(1, 1, 101, 1)
    a = AconA(1, beta_init=1e4).double()
    torch.testing.assert_close(a(x), torch.relu(x), atol=1e-3, rtol=0)
    a0 = AconA(1, beta_init=0.0).double()
    torch.testing.assert_close(a0(x), x / 2)
    c = AconC(1).double()
    with torch.no_grad():
        c.p1.fill_(1.0)
        c.p2.fill_(0.0)
        c.beta.fill_(2.5)
    a = AconA(1, beta_init=2.5).double()
    torch.testing.assert_close(c(x), a(x))
    # ACON-C with beta -> 0 is linear: (p1 - p2) x / 2 + p2 x
    with torch.no_grad():
        c.p1.fill_(0.7)
        c.p2.fill_(-0.3)
        c.beta.fill_(0.0)
    torch.testing.assert_close(c(x), 0.5 * x + (-0.3) * x)


# --------------------------------------------------------------------------
@pytest.mark.parametrize('registry', ['mmdet', 'mmseg', 'mmengine'])
@pytest.mark.parametrize('act', ['AconA', 'AconB', 'AconC', 'MetaAconC', 'SwishBeta'])
def test_build_through_registries(registry, act):
    if registry == 'mmdet':
        from mmdet.registry import MODELS
    elif registry == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmengine.registry import MODELS
    layer = MODELS.build(dict(type=act, num_channels=8))
    assert type(layer).__name__ == act
    assert layer(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_mmcv_build_activation_layer():
    from mmcv.cnn import build_activation_layer
    layer = build_activation_layer(dict(type='AconC', inplace=True))
    assert isinstance(layer, AconC) and not layer.is_materialized
    out = layer(torch.randn(2, 6, 3, 3))  # lazy: width inferred on first use
    assert out.shape == (2, 6, 3, 3) and layer.p1.shape == (1, 6, 1, 1)


@pytest.mark.parametrize('act', ['AconA', 'AconB', 'AconC', 'MetaAconC'])
def test_conv_module_infers_width_at_build(act):
    from mmcv.cnn import ConvModule
    m = ConvModule(4, 24, 3, padding=1, norm_cfg=dict(type='BN'), act_cfg=dict(type=act))
    assert m.activate.is_materialized and m.activate.num_channels == 24
    # all parameters exist before any forward, so an optimizer sees them all
    n_params = sum(p.numel() for p in m.parameters())
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    assert sum(p.numel() for g in opt.param_groups for p in g['params']) == n_params
    key = {'AconA': 'beta', 'AconB': 'p'}.get(act, 'p1')
    before = getattr(m.activate, key).clone()
    m(torch.randn(2, 4, 8, 8)).square().mean().backward()
    opt.step()
    after = getattr(m.activate, key)
    assert not torch.equal(before, after)
    # order act-before-conv takes the conv's input width
    pre = ConvModule(4, 24, 1, act_cfg=dict(type=act), order=('act', 'conv', 'norm'),
                     norm_cfg=None)
    assert pre.activate.num_channels == 4


def test_fpn_and_psphead_with_acon_act_train_under_ddp(tmp_path):
    """A neck and a head built with act_cfg=AconC are whole before DDP wraps them."""
    import torch.distributed as dist
    from mmdet.models.necks import FPN
    from mmengine.registry import DefaultScope
    from mmseg.models.decode_heads import PSPHead
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    fpn = FPN(in_channels=[8, 16], out_channels=8, num_outs=2, act_cfg=dict(type='AconC'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        head = PSPHead(in_channels=16, in_index=0, channels=8, num_classes=3,
                       pool_scales=(1, 2), norm_cfg=dict(type='BN'),
                       act_cfg=dict(type='MetaAconC'))
    from acon_mm.models.layers import iter_acon_layers
    layers = list(iter_acon_layers(fpn)) + list(iter_acon_layers(head))
    assert len(layers) >= 4 and all(layer.is_materialized for _, layer in layers)
    model = nn.ModuleDict(dict(fpn=fpn, head=head))
    init = f'file://{tmp_path}/pg'
    dist.init_process_group('gloo', init_method=init, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        p1 = layers[0][1].p1.detach().clone()
        feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
        outs = ddp.module['fpn'](feats)
        seg = ddp.module['head']([feats[1]])
        (sum(o.square().mean() for o in outs) + seg.square().mean()).backward()
        opt.step()
        assert not torch.equal(p1, layers[0][1].p1)
    finally:
        dist.destroy_process_group()


def test_meta_acon_trains_at_batch_one():
    layer = MetaAconC(16).train()
    x = torch.randn(1, 16, 5, 5, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and layer.p1.grad is not None
    assert layer.fc1.weight.grad is not None and layer.fc1.weight.grad.abs().sum() > 0
    # the official switch norm (plain BatchNorm) cannot
    official = MetaAconC(16, norm_cfg=dict(type='BN')).train()
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        official(torch.randn(1, 16, 5, 5))
    # with batch > 1 the default switch norm is exactly BatchNorm
    bn = nn.BatchNorm2d(16)
    sbn = AconSwitchBN(16)
    y = torch.randn(4, 16, 1, 1)
    torch.testing.assert_close(sbn(y), bn(y))
    torch.testing.assert_close(sbn.running_mean, bn.running_mean)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('make', [lambda: AconC(8), lambda: MetaAconC(8).eval(),
                                  lambda: SwishBeta(1.5), lambda: AconB(8)])
def test_half_precision_inputs(dtype, make):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, 8, 6, 6) * 4
    ref = layer(x)
    out = layer(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(out.float(), ref, atol=tol * 4, rtol=tol)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.2, rtol=5e-2)


# --------------------------------------------------------------------------
def test_unknown_type_lists_acon_types():
    with pytest.raises(KeyError) as err:
        build_acon_layer(dict(type='AconD'), 8, where='layer1.0.acon')
    msg = str(err.value)
    assert 'AconD' in msg and 'layer1.0.acon' in msg
    for t in ('AconA', 'AconB', 'AconC', 'MetaAconC', 'SwishBeta'):
        assert t in msg


def test_wrong_channel_count_names_layer():
    layer = build_acon_layer(dict(type='AconC'), 8, where='backbone.layer2.1.acon')
    with pytest.raises(ValueError) as err:
        layer(torch.randn(1, 6, 2, 2))
    msg = str(err.value)
    assert 'backbone.layer2.1.acon' in msg and '8' in msg and '6' in msg
    with pytest.raises(ValueError, match='num_channels=4 in the config but the layer has 8'):
        build_acon_layer(dict(type='AconC', num_channels=4), 8, where='x')


def test_bad_switch_lists_valid():
    with pytest.raises(ValueError) as err:
        MetaAconC(8, switch='spatial')
    assert 'spatial' in str(err.value)
    for s in ('layer', 'channel', 'pixel'):
        assert s in str(err.value)


def test_lazy_state_dict_round_trip():
    src = AconC(7)
    dst = AconC()
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 7, 3, 3)
    torch.testing.assert_close(dst(x), src(x))
    assert dst.num_channels == 7
