"""The fused meta-ACON-C channel path (acon_mm.ops.meta_func, the extension's
``meta_channel``): one C++ call for pooling, switch network (with its BatchNorms) and
ACON must equal the layer's modules exactly, in every BatchNorm regime, and step aside
wherever it cannot."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.autograd import gradcheck

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.models.layers import MetaAconC
from acon_mm.ops import acon_impl, load_cpu_ext

pytestmark = pytest.mark.skipif(load_cpu_ext() is None,
                                reason='no C++ compiler: the fused kernel is not built')

NORMS = {
    'AconSwitchBN': dict(type='AconSwitchBN'),
    'BN-cumulative': dict(type='BN', momentum=None),
    'none': None,
}


def _is_fused(y) -> bool:
    """The output came from the fused function (the C++ extension's MetaFn)."""
    name = y.grad_fn.name() if y.grad_fn is not None else ''
    return 'MetaFn' in name


def _layer(C, norm, dtype=torch.float64, seed=0, r=4):
    torch.manual_seed(seed)
    m = MetaAconC(C, r=r, norm_cfg=NORMS[norm]).to(dtype)
    with torch.no_grad():  # away from the init, so every term matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for name, b in m.named_buffers():
            if name.endswith('running_mean'):
                b.normal_()
            elif name.endswith('running_var'):
                b.uniform_(0.5, 2)
    return m


def _run(m, x, gout, impl):
    xx = x.detach().clone().requires_grad_()
    with acon_impl(impl):
        y = m(xx)
    y.backward(gout)
    return y, xx.grad


def _compare(m, x, train, dtype):
    ref = copy.deepcopy(m)
    m.train(train)
    ref.train(train)
    gout = torch.randn_like(x)
    y, gx = _run(m, x, gout, 'auto')
    y_ref, gx_ref = _run(ref, x, gout, 'torch')  # the modules, then the fused ACON op
    assert _is_fused(y), 'the fused path was not taken'
    # float32: both the fused kernel and the modules are ~1e-5 away from a float64
    # run on long rows (33x33: 1.04e-5 and 1.25e-5), so they may differ by 2e-5
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4,
                                                                         atol=3e-5)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    scale = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, p), p_ref in zip(m.named_parameters(), ref.parameters()):
        # biases followed by a batch-statistics norm have a zero gradient: compare on
        # the scale of the layer's gradients
        assert (p.grad - p_ref.grad).abs().max().item() <= tol['rtol'] * scale + tol['atol'], \
            name
    for (name, b), b_ref in zip(m.named_buffers(), ref.buffers()):
        # float32: the switch network runs in float32 as the modules do, summing in
        # another order (a few ulp of the pooled values)
        btol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float64 else dict(rtol=1e-5,
                                                                               atol=1e-6)
        torch.testing.assert_close(b, b_ref, **btol, msg=lambda s: f'{name}: {s}')


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('norm', list(NORMS))
@pytest.mark.parametrize('train', [True, False])
def test_fused_equals_modules(dtype, norm, train):
    m = _layer(24, norm, dtype)
    x = torch.randn(5, 24, 7, 6, dtype=dtype) * 2
    _compare(m, x, train, dtype)


@pytest.mark.parametrize('hw', [(1, 2), (3, 3), (4, 4), (5, 5), (6, 8), (7, 7), (8, 8),
                                (9, 9), (14, 14), (28, 28), (33, 33)])
def test_fused_row_lengths(hw):
    # pooling and the pooled gradient walk a row in vector pairs, one vector and a
    # masked tail: row lengths 2 .. 1089 take every combination of those and both thread splits
    # of the pooled gradient (by channel for rows <= 512, flat for short rows, by row for longer
    # rows; float32)
    torch.manual_seed(sum(hw))
    m = _layer(32, 'AconSwitchBN', torch.float32)
    x = torch.randn(3, 32, *hw) * 2
    _compare(m, x, True, torch.float32)


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('hw', [(7, 7), (14, 14)])
def test_fused_flat_rows_threads(hw, threads):
    # float32 rows of 49 and 196 values take the flat layout (ACON passes and the pooled
    # gradient); 7 x 97 rows and enough values for two threads put the thread boundary
    # inside a vector
    torch.manual_seed(hw[0])
    m = _layer(97, 'AconSwitchBN', torch.float32, r=16)
    x = torch.randn(7, 97, *hw) * 2
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _compare(m, x, True, torch.float32)
    finally:
        torch.set_num_threads(n)


def test_running_statistics_follow_batchnorm():
    m = _layer(16, 'AconSwitchBN', torch.float64)
    ref = copy.deepcopy(m)
    for step in range(3):
        x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
        _run(m, x, torch.randn_like(x), 'auto')
        _run(ref, x, torch.randn_like(x), 'torch')
    assert int(m.bn1.num_batches_tracked) == 3
    for (name, b), b_ref in zip(m.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, b_ref, msg=name)


def test_batch_one_uses_running_statistics():
    m = _layer(16, 'AconSwitchBN', torch.float64)
    before = {k: v.clone() for k, v in m.named_buffers()}
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    _compare(m, x, True, torch.float64)
    for k, v in m.named_buffers():
        assert torch.equal(v, before[k]), f'{k} changed by a batch of one'


def test_batch_one_with_plain_batchnorm_raises_like_pytorch():
    m = MetaAconC(16, norm_cfg=dict(type='BN')).train()
    with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
        m(torch.randn(1, 16, 4, 4))


def test_channels_last_input():
    m = _layer(16, 'AconSwitchBN', torch.float32)
    x = torch.randn(3, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    with acon_impl('auto'):
        y = m(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _compare(_layer(16, 'AconSwitchBN', torch.float32), x, True, torch.float32)


def test_steps_aside_for_hooks_and_other_norms():
    x = torch.randn(2, 16, 4, 4)
    m = MetaAconC(16)
    calls = []
    m.fc1.register_forward_hook(lambda *a: calls.append(1))
    with acon_impl('auto'):
        y = m(x)
    assert calls, 'a hook on the switch generator must see its call'
    assert not _is_fused(y)
    gn = MetaAconC(16, norm_cfg=dict(type='GN', num_groups=4))
    with acon_impl('auto'):
        y = gn(x)
    assert not _is_fused(y)
    for impl in ('naive', 'torch'):
        with acon_impl(impl):
            y = MetaAconC(16)(x)
        assert not _is_fused(y)


def test_module_swaps_are_seen():
    """The cached type checks follow a replaced sub-module (e.g. a norm conversion)."""
    m = MetaAconC(16)
    x = torch.randn(2, 16, 4, 4)
    with acon_impl('auto'):
        assert _is_fused(m(x))
        m.bn1 = nn.GroupNorm(4, m.bn1.num_features)
        assert not _is_fused(m(x))


def test_layers_use_the_extension():
    from acon_mm.models.layers import AconC
    with acon_impl('auto'):
        y = AconC(4)(torch.randn(2, 4, 3, 3, requires_grad=True))
        z = MetaAconC(8)(torch.randn(2, 8, 3, 3, requires_grad=True))
    assert 'AconFn' in y.grad_fn.name() and 'MetaFn' in z.grad_fn.name()


@pytest.mark.parametrize('mode', [0, 1, 2])
def test_gradcheck_float64(mode):
    """Every input of the extension's fused function, by finite differences (float64),
    for each norm mode (0 none, 1 batch statistics, 2 running statistics)."""
    ext = load_cpu_ext()
    torch.manual_seed(2)
    N, C, H = 3, 6, 4
    dt = torch.float64

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=dt) * scale).requires_grad_()

    x = t(N, C, 3, 2, scale=2)
    p1, p2 = t(1, C, 1, 1), t(1, C, 1, 1)
    w1, b1, w2, b2 = t(H, C, 1, 1), t(H), t(C, H, 1, 1), t(C)
    g1, e1, g2, e2 = t(H), t(H), t(C), t(C)
    rm1, rv1 = torch.randn(H, dtype=dt), torch.rand(H, dtype=dt) + 0.5
    rm2, rv2 = torch.randn(C, dtype=dt), torch.rand(C, dtype=dt) + 0.5
    stats = (rm1, rv1, rm2, rv2) if mode == 2 else (None, ) * 4

    def f(x, p1, p2, w1, b1, w2, b2, *norm):
        a1, c1, a2, c2 = norm if norm else (None, ) * 4
        return ext.meta_channel(x, p1, p2, w1, b1, a1, c1, w2, b2, a2, c2, *stats, mode,
                                1e-5, mode, 1e-5, None, None, 0.1, 0.1)

    inputs = (x, p1, p2, w1, b1, w2, b2) + ((g1, e1, g2, e2) if mode else ())
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_without_extension_the_modules_run(monkeypatch):
    """No extension: meta-ACON runs its modules, its ACON the PyTorch fused function."""
    from acon_mm.models.layers import AconC
    from acon_mm.ops import cpu_ext
    monkeypatch.setattr(cpu_ext, '_ext', None)
    monkeypatch.setattr(cpu_ext, '_tried', True)
    torch.manual_seed(0)
    m = MetaAconC(8)
    ref = copy.deepcopy(m)
    x = torch.randn(2, 8, 3, 3)
    with acon_impl('auto'):
        y = AconC(8)(x.requires_grad_())
        z = m(x)
    assert 'AconFunction' in y.grad_fn.name()
    assert not _is_fused(z) and 'AconFunction' in z.grad_fn.name()
    with acon_impl('naive'):
        torch.testing.assert_close(z, ref(x))
