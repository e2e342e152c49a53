"""Tests of the fused ACON op (acon_mm.ops.acon_func): exact gradients, memory, dtypes,
training and torch.compile, through the dispatch of :func:`acon` (the C++ extension on
CPU, the PyTorch fused function, the naive reference). The extension's own functions are
tested in test_cpu_ext.py, the dispatch in test_dispatch.py, every implementation against
one reference in test_all_implementations.py. Speed is measured by
tools/analysis_tools/benchmark_acon.py."""
import copy
import shutil

import pytest
import torch
import torch.nn as nn
from torch.autograd import gradcheck

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.models.layers import AconA, AconB, AconC, MetaAconC, SwishBeta
from acon_mm.ops import AconFunction, acon, acon_backend, acon_impl, acon_naive, load_cpu_ext

N, C, H, W = 2, 3, 3, 2
BETA_SHAPES = {
    'scalar': (1, 1, 1, 1),
    'channel': (1, C, 1, 1),
    'sample': (N, 1, 1, 1),
    'sample_channel': (N, C, 1, 1),
    'pixel': (N, 1, H, W),
    'odd': (1, 1, H, 1),  # broadcast over some spatial dimensions
    'full': (N, C, H, W),  # varies over channels and pixels: the PyTorch fused function
}
P_COMBOS = ('none', 'p1', 'p2', 'both')
HAS_CXX = any(shutil.which(c) for c in ('g++', 'c++', 'clang++'))
BACKENDS = ['torch'] + (['cpu'] if HAS_CXX else [])


def _make(beta_shape, combo, dtype=torch.float64, shape=(N, C, H, W), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 2
    pshape = (1, shape[1]) + (1, ) * (len(shape) - 2)
    p1 = torch.randn(pshape, generator=g, dtype=dtype) if combo in ('p1', 'both') else None
    p2 = torch.randn(pshape, generator=g, dtype=dtype) if combo in ('p2', 'both') else None
    beta = torch.rand(beta_shape, generator=g, dtype=dtype) * 2 + 0.1
    return [t.requires_grad_() if t is not None else None for t in (x, p1, p2, beta)]


def _fwd_bwd(fn, args, gout):
    args = [a.detach().clone().requires_grad_() if a is not None else None for a in args]
    y = fn(*args)
    y.backward(gout)
    return y.detach(), [a.grad if a is not None else None for a in args]


def test_cpu_backend_is_the_extension_where_a_compiler_exists():
    if not HAS_CXX:
        pytest.skip('no C++ compiler on this machine')
    from acon_mm.ops import cpu_ext_error
    assert load_cpu_ext() is not None, cpu_ext_error()
    assert acon_backend(torch.zeros(1, 1, 1, 1)) == 'cpu'
    x, p1, p2, beta = _make(BETA_SHAPES['channel'], 'both', torch.float32)
    with acon_impl('auto'):
        assert 'AconFn' in acon(x, p1, p2, beta).grad_fn.name()


def _fused(backend, node='AconFn'):
    """``acon`` through ``backend``: 'cpu' the extension (via the dispatch of
    :func:`acon`; its autograd node must be ``node``), 'torch' the PyTorch fused
    function."""
    if backend == 'torch':
        return lambda *a: AconFunction.apply(*a, 'torch')

    def f(x, p1, p2, beta):
        with acon_impl('auto'):
            y = acon(x, p1, p2, beta)
        assert node in y.grad_fn.name(), y.grad_fn.name()  # the expected path
        return y

    return f


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('combo', P_COMBOS)
@pytest.mark.parametrize('beta_name', list(BETA_SHAPES))
def test_gradcheck_float64(backend, combo, beta_name):
    args = _make(BETA_SHAPES[beta_name], combo)
    # a full-shape beta is accepted, and runs the PyTorch fused function on CPU too
    fn = _fused(backend, 'AconFunction' if beta_name == 'full' else 'AconFn')
    present = [a for a in args if a is not None]

    def f(*inputs):  # gradcheck takes the tensors only
        it = iter(inputs)
        return fn(*[next(it) if a is not None else None for a in args])

    assert gradcheck(f, tuple(present))
    # and the value is ACON's
    torch.testing.assert_close(f(*present), acon_naive(*args))


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided', '3d', '2d'])
@pytest.mark.parametrize('beta_name', ['scalar', 'channel', 'sample_channel', 'pixel'])
def test_fused_matches_naive_float32(layout, beta_name):
    shape = {'3d': (4, 8, 37), '2d': (6, 8)}.get(layout, (4, 8, 9, 7))
    bshape = (1, ) * len(shape)
    if beta_name != 'scalar':
        full = {'channel': (1, 8), 'sample_channel': (shape[0], 8),
                'pixel': (shape[0], 1)}[beta_name]
        bshape = full + (tuple(shape[2:]) if beta_name == 'pixel' else (1, ) * (len(shape) - 2))
    x, p1, p2, beta = _make(bshape, 'both', torch.float32, shape=shape, seed=1)
    if layout == 'channels_last':
        x = x.detach().contiguous(memory_format=torch.channels_last)
    elif layout == 'strided':
        x = torch.randn(shape[0], 16, *shape[2:])[:, ::2]
        assert not x.is_contiguous()
    gout = torch.randn(shape)
    y0, g0 = _fwd_bwd(acon_naive, (x, p1, p2, beta), gout)
    with acon_impl('auto'):
        y1, g1 = _fwd_bwd(acon, (x, p1, p2, beta), gout)
    if layout == 'channels_last':
        assert y1.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(('x', 'p1', 'p2', 'beta'), g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f'grad of {name}')


@pytest.mark.skipif(not HAS_CXX, reason='no C++ compiler on this machine')
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('beta_name', ['scalar', 'channel', 'sample_channel', 'pixel'])
@pytest.mark.parametrize('hw', [(4, 4), (1, 17), (7, 7), (9, 7), (14, 14), (15, 17)])
def test_short_rows_flat_layout(hw, beta_name, threads):
    # float32 rows of 16 <= L < 256 values, L not a multiple of 16, are walked as one flat
    # array of vectors (a vector spans two rows: blended parameters, split sums); 101
    # channels and enough values for two threads put a thread boundary inside a vector
    # (16 = 4 x 4 keeps the row layout; a per-pixel beta always does). Reference: the
    # naive formula in float64.
    shape = (6, 101) + hw
    bshape = {'scalar': (1, 1, 1, 1), 'channel': (1, 101, 1, 1),
              'sample_channel': (6, 101, 1, 1), 'pixel': (6, 1) + hw}[beta_name]
    x, p1, p2, beta = _make(bshape, 'both', torch.float32, shape=shape, seed=sum(hw))
    gout = torch.randn(shape)
    args64 = [t.detach().double() for t in (x, p1, p2, beta)]
    y0, g0 = _fwd_bwd(acon_naive, args64, gout.double())
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with acon_impl('auto'):
            y1, g1 = _fwd_bwd(acon, (x, p1, p2, beta), gout)
    finally:
        torch.set_num_threads(n)
    assert acon_backend(x) == 'cpu'
    torch.testing.assert_close(y1.double(), y0, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(('x', 'p1', 'p2', 'beta'), g1, g0):
        # parameter gradients are sums over up to 6 x 255 values (float32 partial sums)
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3, msg=f'grad of {name}')


LAYERS = {
    'AconA': lambda: AconA(8),
    'AconB': lambda: AconB(8),
    'AconC': lambda: AconC(8),
    'MetaAconC-channel': lambda: MetaAconC(8, r=4),
    'MetaAconC-layer': lambda: MetaAconC(8, switch='layer'),
    'MetaAconC-pixel': lambda: MetaAconC(8, switch='pixel'),
    'SwishBeta': lambda: SwishBeta(beta=1.5),
    'SwishBeta-per-channel': lambda: SwishBeta(per_channel=True, num_channels=8),
    'SwishBeta-fixed': lambda: SwishBeta(beta=2.0, learnable=False),
}


@pytest.mark.parametrize('name', list(LAYERS))
def test_layers_fused_vs_naive(name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(4, 8, 6, 5)
    gout = torch.randn_like(x)
    out = {}
    for impl in ('naive', 'auto'):
        m = copy.deepcopy(layer)
        xx = x.clone().requires_grad_()
        with acon_impl(impl):
            y = m(xx)
        y.backward(gout)
        out[impl] = (y.detach(), xx.grad,
                     {k: p.grad for k, p in m.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out['auto'][0], out['naive'][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out['auto'][1], out['naive'][1], rtol=1e-4, atol=1e-5)
    assert out['auto'][2].keys() == out['naive'][2].keys()
    assert bool(out['naive'][2]) == (name != 'SwishBeta-fixed')
    for k in out['naive'][2]:
        torch.testing.assert_close(out['auto'][2][k], out['naive'][2][k], rtol=1e-4,
                                   atol=1e-4, msg=f'{name}.{k}.grad')


def _saved_bytes(module, x) -> int:
    """Bytes of the distinct storages (parameters aside) autograd saves for backward."""
    storages = {}
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


@pytest.mark.parametrize('name,bound', [('AconC', 1.1), ('SwishBeta', 1.1),
                                        ('MetaAconC-channel', 1.2)])
def test_saved_memory_bounded(name, bound):
    layer = LAYERS[name]()
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    nbytes = x.numel() * x.element_size()
    with acon_impl('auto'):
        fused = _saved_bytes(layer, x)
    with acon_impl('naive'):
        naive = _saved_bytes(layer, x)
    assert fused <= bound * nbytes, f'{name} fused saves {fused / nbytes:.2f}x the input'
    assert naive >= 2 * nbytes  # the measurement sees what the naive formula keeps


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('beta_name', ['channel', 'pixel'])
def test_half_precision_close_to_float32(dtype, beta_name):
    shape = (2, 8, 6, 6)
    bshape = (1, 8, 1, 1) if beta_name == 'channel' else (2, 1, 6, 6)
    x, p1, p2, beta = _make(bshape, 'both', torch.float32, shape=shape, seed=2)
    gout = torch.randn(shape)
    y32, g32 = _fwd_bwd(acon_naive, (x, p1, p2, beta), gout)
    xh = x.detach().to(dtype)
    with acon_impl('auto'):
        yh, gh = _fwd_bwd(acon, (xh, p1, p2, beta), gout.to(dtype))
    assert yh.dtype == dtype and gh[0].dtype == dtype
    assert gh[1].dtype == torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    for a, b in zip([yh] + gh, [y32] + g32):
        assert torch.isfinite(a).all()
        scale = b.abs().max().clamp_min(1)
        assert ((a.float() - b).abs().max() / scale) < tol


class _TinyNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = AconC(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = MetaAconC(8, r=4)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act3 = MetaAconC(8, switch='pixel')
        self.act4 = SwishBeta()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        x = self.act4(self.act3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def test_training_fused_matches_naive_step_for_step():
    torch.manual_seed(0)
    net = _TinyNet()
    data = [(torch.randn(4, 3, 12, 12), torch.randint(0, 4, (4, ))) for _ in range(6)]
    runs = {}
    for impl in ('naive', 'auto'):
        model = copy.deepcopy(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses, params = [], []
        with acon_impl(impl):
            for x, t in data:
                loss = nn.functional.cross_entropy(model(x), t)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                params.append([p.detach().clone() for p in model.parameters()])
        runs[impl] = losses, params
    for step in range(len(data)):
        assert abs(runs['auto'][0][step] - runs['naive'][0][step]) < 1e-4, step
        for a, b in zip(runs['auto'][1][step], runs['naive'][1][step]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f'step {step}')
    assert runs['naive'][0][-1] != runs['naive'][0][0]  # it did train


def test_torch_compile_smoke():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), AconC(8), MetaAconC(8, r=4), SwishBeta())
    x = torch.randn(2, 3, 6, 6)
    with acon_impl('auto'):
        ref = model(x)
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        out = compiled(x)
        out.sum().backward()
    torch.testing.assert_close(out, ref)
    assert model[1].p1.grad is not None and torch.isfinite(model[1].p1.grad).all()


def test_argument_errors_name_the_culprit():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match='beta of shape'):
        acon(x, None, None, torch.ones(1, 5, 1, 1))
    with pytest.raises(ValueError, match='p1 of shape'):
        acon(x, torch.ones(2, 3, 4, 4, 4), None, torch.ones(1))
    with pytest.raises(TypeError, match='beta must be a Tensor'):
        acon(x, None, None, None)


def test_spatial_mean_matches_mean():
    from acon_mm.ops import spatial_mean
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: spatial_mean(t, (2, 3)), (x, ))
    torch.testing.assert_close(spatial_mean(x, (1, 2, 3)), x.mean((1, 2, 3), keepdim=True))
    g, = torch.autograd.grad(spatial_mean(x).sum(), x)
    assert g.stride()[2:] == (0, 0)  # a broadcast view, nothing full-size written
    xh = x.detach().half().requires_grad_()
    y = spatial_mean(xh, dtype=torch.float32)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert xh.grad.dtype == torch.float16


def test_fallback_when_the_extension_cannot_be_built(monkeypatch, tmp_path):
    """No working compiler: a warning, then the pure-PyTorch fused function."""
    from acon_mm.ops import cpu_ext
    monkeypatch.setattr(cpu_ext, '_tried', False)
    monkeypatch.setattr(cpu_ext, '_ext', None)
    monkeypatch.setattr(cpu_ext, '_error', None)
    monkeypatch.setenv('ACON_MM_CACHE_DIR', str(tmp_path))
    monkeypatch.setattr(cpu_ext, '_compiler', lambda: str(tmp_path / 'no-such-c++'))
    with pytest.warns(UserWarning, match='could not be built'):
        assert load_cpu_ext() is None
    assert 'no-such-c++' in cpu_ext.cpu_ext_error()
    x, p1, p2, beta = _make(BETA_SHAPES['channel'], 'both', torch.float32, seed=3)
    with acon_impl('auto'):
        assert acon_backend(x) == 'torch'
        y = acon(x, p1, p2, beta)
    torch.testing.assert_close(y, acon_naive(x, p1, p2, beta))
    assert y.grad_fn.name() == 'AconFunctionBackward'
