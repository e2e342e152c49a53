"""Every implementation of the ACON formula against ONE reference, on the SAME inputs.

The forward ``f(x) = (p1 - p2) x sigmoid(beta (p1 - p2) x) + p2 x`` and its backward
(``dx``, ``dp1``, ``dp2``, ``dbeta``) are written out in Python, Triton and C++ (the
list, file by file, is in docs/kernels.md, "Changing the formula: every place"). Here
each implementation available on this machine runs the same cases and is compared with
the float64 autograd of :func:`acon_mm.ops.acon_naive` on the same values:

* ``naive-float32``: :func:`acon_naive` in float32;
* ``torch-float64`` / ``torch-float32``: :class:`AconFunction` with PyTorch ops;
* ``cpu-float64`` / ``cpu-float32``: the C++ extension's ``acon_fused`` (its float64
  template and its float32 vector code: row-major, channel-major, flat-layout and
  segmented rows are all among the shapes);
* ``acon-auto``: :func:`acon` as the layers call it, whatever the dispatch picks here;
* ``triton-interpreter``: the NCHW and NHWC Triton kernels in Triton's CPU interpreter
  (``TRITON_INTERPRET=1``, in a subprocess: the flag is read when Triton is imported);
* ``triton-cuda``: the same kernels on a GPU (``pytest -m cuda``; skipped without one);
* ``meta-cpu-float64`` / ``meta-cpu-float32``: the fused meta-ACON-C layer (one C++
  call: pooling, switch network, ACON) against the layer's modules, in float64 with the
  naive formula.

Cases: the beta shapes the layers make (scalar: SwishBeta / ACON-A, per channel:
ACON-B/C, per sample: meta-ACON layer switch, per sample and channel: channel switch,
per pixel: pixel switch), the parameter forms ``p1 = p2 = None`` (ACON-A, Swish),
``p1 = None`` (ACON-B) and both (ACON-C), contiguous and channels_last inputs; the
implementations that take any broadcastable beta also get one of the input's full
shape. A wrong sign or factor in any one place makes its implementation's test fail
with the case and the output named.
"""
import copy
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.models.layers import MetaAconC
from acon_mm.ops import AconFunction, acon, acon_impl, acon_naive

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HAS_TRITON = importlib.util.find_spec('triton') is not None
HAS_CUDA = torch.cuda.is_available()

#: (N, C, H, W): C++ channel-major rows (16 values), flat layout (7x7), segmented rows
#: (1600 > 1024 values; several BLOCK_L tiles in Triton)
SHAPES = {'4x4': (3, 6, 4, 4), '7x7': (2, 5, 7, 7), '40x40': (2, 3, 40, 40)}
LAYER_BETAS = ('scalar', 'channel', 'sample', 'sample_channel', 'pixel')
COMBOS = ('none', 'p2', 'both')
LAYOUTS = ('contiguous', 'channels_last')
OUTPUTS = ('y', 'dx', 'dp1', 'dp2', 'dbeta')
#: max |got - ref| / max(1, max |ref|)
TOL = {torch.float64: 1e-10, torch.float32: {'y': 1e-5, 'dx': 2e-5, 'sum': 1e-4}}


def _beta_shape(name, shape):
    N, C, H, W = shape
    return {'scalar': (1, 1, 1, 1), 'channel': (1, C, 1, 1), 'sample': (N, 1, 1, 1),
            'sample_channel': (N, C, 1, 1), 'pixel': (N, 1, H, W), 'full': shape}[name]


def _cases(full=False):
    """Deterministic float32 inputs: ``[(case name, dict(x, p1, p2, beta, gout))]``."""
    out = []
    betas = LAYER_BETAS + (('full', ) if full else ())
    for si, (sname, shape) in enumerate(SHAPES.items()):
        for bi, bname in enumerate(betas):
            for ci, combo in enumerate(COMBOS):
                g = torch.Generator().manual_seed(1000 * si + 10 * bi + ci)
                C = shape[1]
                x = torch.randn(shape, generator=g) * 2
                p1 = torch.randn(1, C, 1, 1, generator=g) if combo == 'both' else None
                p2 = torch.randn(1, C, 1, 1, generator=g) if combo != 'none' else None
                beta = torch.rand(_beta_shape(bname, shape), generator=g) * 2 + 0.1
                gout = torch.randn(shape, generator=g)
                for layout in LAYOUTS:
                    xx = x.contiguous(memory_format=torch.channels_last) \
                        if layout == 'channels_last' else x
                    out.append((f'{sname}/{bname}/{combo}/{layout}',
                                dict(x=xx, p1=p1, p2=p2, beta=beta, gout=gout)))
    return out


def _reference(case):
    """y and the gradients of x, p1, p2, beta: float64 autograd of acon_naive."""
    args = [None if case[k] is None else case[k].detach().double().requires_grad_()
            for k in ('x', 'p1', 'p2', 'beta')]
    y = acon_naive(*args)
    y.backward(case['gout'].double())
    return [y.detach()] + [None if a is None else a.grad for a in args]


def _run(fn, case, dtype, device='cpu'):
    """``fn(x, p1, p2, beta)`` on the case's values in ``dtype``: ``[y, dx, dp1, dp2,
    dbeta]`` and the name of the autograd node that made ``y``."""
    args = []
    for k in ('x', 'p1', 'p2', 'beta'):
        t = case[k]
        if t is not None:
            # .to() keeps the memory format (channels_last stays channels_last)
            t = t.detach().to(device=device, dtype=dtype).requires_grad_()
        args.append(t)
    y = fn(*args)
    node = y.grad_fn.name()
    y.backward(case['gout'].to(device=device, dtype=dtype))
    return [y.detach()] + [None if a is None else a.grad for a in args], node


def _errors(impl, name, got, ref, dtype):
    """Messages naming the implementation, the case and the output that is off."""
    bad = []
    for what, a, r in zip(OUTPUTS, got, ref):
        if r is None:
            if a is not None:
                bad.append(f'{impl} {name}: {what} given for an absent parameter')
            continue
        if a is None or tuple(a.shape) != tuple(r.shape):
            bad.append(f'{impl} {name}: {what} has shape '
                       f'{None if a is None else tuple(a.shape)}, expected {tuple(r.shape)}')
            continue
        err = ((a.detach().cpu().double() - r).abs().max() / r.abs().max().clamp(min=1)).item()
        tol = TOL[dtype] if dtype == torch.float64 else \
            TOL[dtype].get(what, TOL[dtype]['sum'])
        if not err <= tol:  # also catches NaN
            bad.append(f'{impl} {name}: {what} max relative error {err:.3g} > {tol:g}')
    return bad


def _check(impl, fn, dtype, device='cpu', full=False, expect_node=None):
    bad = []
    for name, case in _cases(full):
        got, node = _run(fn, case, dtype, device)
        if expect_node is not None and expect_node not in node:
            bad.append(f'{impl} {name}: ran {node}, not {expect_node}')
        bad += _errors(impl, name, got, _reference(case), dtype)
    assert not bad, f'{len(bad)} mismatches:\n' + '\n'.join(bad[:40])


# --------------------------------------------------------------------------
# Python and C++ implementations, in process
# --------------------------------------------------------------------------
def test_naive_float32():
    _check('naive-float32', acon_naive, torch.float32, full=True)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
def test_torch_fused_function(dtype):
    _check(f'torch-{dtype}', lambda *a: AconFunction.apply(*a, 'torch'), dtype, full=True,
           expect_node='AconFunction')


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
def test_cpu_extension(cpu_ext, dtype):
    """The C++ kernels (acon_kernel.h, acon_vec.h) through the binding's AconFn: every
    layer beta shape is a kernel case (AconFn, not a fallback)."""
    _check(f'cpu-{dtype}', cpu_ext.acon_fused, dtype, expect_node='AconFn')


def test_acon_as_the_layers_call_it():
    """acon() under 'auto', on whichever backend the dispatch picks on this machine."""
    def f(*a):
        with acon_impl('auto'):
            return acon(*a)

    _check('acon-auto', f, torch.float32, full=True)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_meta_acon_fused_vs_modules(cpu_ext, dtype, train):
    """The fused meta-ACON-C channel layer (acon_meta_kernel.h: pooling, switch network,
    then acon_kernel.h's drivers) against the same layer's modules with the naive
    formula in float64: output, dx and every parameter gradient."""
    bad = []
    for sname, shape in SHAPES.items():
        for layout in LAYOUTS:
            name = f'{sname}/{layout}'
            torch.manual_seed(len(name))
            layer = MetaAconC(shape[1], r=2)
            with torch.no_grad():  # away from the init, so every term matters
                for p in layer.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
            layer.train(train)
            ref_layer = copy.deepcopy(layer).double()
            fused = copy.deepcopy(layer).to(dtype)
            x = torch.randn(shape) * 2
            if layout == 'channels_last':
                x = x.contiguous(memory_format=torch.channels_last)
            gout = torch.randn(shape)
            xr = x.double().requires_grad_()
            with acon_impl('naive'):
                yr = ref_layer(xr)
            yr.backward(gout.double())
            xf = x.to(dtype).requires_grad_()
            with acon_impl('auto'):
                yf = fused(xf)
            if 'MetaFn' not in yf.grad_fn.name():
                bad.append(f'meta-cpu-{dtype} {name}: ran {yf.grad_fn.name()}, not MetaFn')
            yf.backward(gout.to(dtype))
            got = [yf.detach(), xf.grad] + [p.grad for _, p in fused.named_parameters()]
            ref = [yr.detach(), xr.grad] + [p.grad for _, p in ref_layer.named_parameters()]
            names = ['y', 'dx'] + [f'd{n}' for n, _ in fused.named_parameters()]
            for what, a, r in zip(names, got, ref):
                err = ((a.double() - r).abs().max() / r.abs().max().clamp(min=1)).item()
                tol = 1e-10 if dtype == torch.float64 else (2e-5 if what in ('y', 'dx')
                                                            else 2e-4)
                if not err <= tol:
                    bad.append(f'meta-cpu-{dtype} {name} ({"train" if train else "eval"}): '
                               f'{what} max relative error {err:.3g} > {tol:g}')
    assert not bad, '\n'.join(bad)


# --------------------------------------------------------------------------
# Triton: the interpreter on CPU (a subprocess), the real kernels on a GPU
# --------------------------------------------------------------------------
_TRITON_SCRIPT = r'''
import sys
import torch
from acon_mm.ops import AconFunction
from acon_mm.ops.triton import utils

launched = []
real_launch = utils.launch


def counting_launch(kernel, grid, args, meta):
    launched.append(kernel.fn.__name__)
    return real_launch(kernel, grid, args, meta)


utils.launch = counting_launch
cases = torch.load(sys.argv[1])
results = {}
for name, case in cases:
    args = [None if case[k] is None else case[k].clone().requires_grad_()
            for k in ('x', 'p1', 'p2', 'beta')]
    del launched[:]
    y = AconFunction.apply(*args, 'triton')
    y.backward(case['gout'])
    nhwc = case['x'].dim() == 4 and not case['x'].is_contiguous()
    ok = bool(launched) and all(('nhwc' in k) == nhwc for k in launched)
    results[name] = dict(out=[y.detach()] + [None if a is None else a.grad for a in args],
                         launched=list(launched), ok=ok)
torch.save(results, sys.argv[2])
print('DONE', len(results))
'''


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed (CPU-only torch)')
def test_triton_kernels_in_interpreter(tmp_path):
    cases = _cases()
    torch.save(cases, tmp_path / 'cases.pt')
    script = tmp_path / 'run_triton.py'
    script.write_text(_TRITON_SCRIPT)
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / 'cases.pt'),
                           str(tmp_path / 'out.pt')], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = torch.load(tmp_path / 'out.pt')
    bad = []
    for name, case in cases:
        res = results[name]
        if not res['ok']:  # the kernels of the input's layout ran, nothing else
            bad.append(f'triton-interpreter {name}: launched {res["launched"]}')
        bad += _errors('triton-interpreter', name, res['out'], _reference(case),
                       torch.float32)
    assert not bad, f'{len(bad)} mismatches:\n' + '\n'.join(bad[:40])


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason='needs CUDA')
def test_triton_kernels_on_cuda():
    from acon_mm.ops import acon_backend
    assert acon_backend(torch.zeros(1, device='cuda'), 'auto') == 'triton'
    _check('triton-cuda', lambda *a: AconFunction.apply(*a, 'triton'), torch.float32,
           device='cuda', expect_node='AconFunction')
