"""The Triton kernels (acon_mm.ops.triton: the NCHW and NHWC kernels, the probe), on
CPU: the first-use probe against the formula, every launch on its tensor's device, the
number of compiled kernel variants, and the kernels themselves in Triton's interpreter
(``TRITON_INTERPRET=1``, in a subprocess) against the naive formula.

Tests that launch (or specialise) kernels need Triton (``pip install triton``; CUDA
builds of torch ship it); the others replace the launches with mocks and run
everywhere. The dispatch around them is tested in ../test_dispatch.py.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.ops import triton as ops_triton
from acon_mm.ops.layout import kernel_layout
from acon_mm.ops.triton import utils as tu

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
HAS_TRITON = importlib.util.find_spec('triton') is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')


# --------------------------------------------------------------------------
# the first-use probe
# --------------------------------------------------------------------------
def test_probe_detects_a_wrong_result(monkeypatch):
    """The real probe compares with the PyTorch formula: kernels returning zeros fail."""
    monkeypatch.setattr(tu, 'HAS_TRITON', True)

    def fwd(x, lay):
        return torch.zeros_like(x)

    def bwd(go, x, lay):
        z = torch.zeros(lay.N, lay.C)
        return torch.zeros_like(x), z, z, z

    monkeypatch.setattr(ops_triton, 'acon_fwd_triton', fwd)
    monkeypatch.setattr(ops_triton, 'acon_bwd_triton', bwd)
    with pytest.raises(RuntimeError, match=r'wrong result from the Triton kernels \(y, '
                                           r'contiguous, torch.float32\)'):
        ops_triton.probe(torch.device('cpu'), torch.float32)
    # the exact formula passes
    monkeypatch.setattr(ops_triton, 'acon_fwd_triton', _torch_fwd)
    monkeypatch.setattr(ops_triton, 'acon_bwd_triton', _torch_bwd)
    ops_triton.probe(torch.device('cpu'), torch.float32)


def test_probe_without_triton_says_so(monkeypatch):
    monkeypatch.setattr(tu, 'HAS_TRITON', False)
    with pytest.raises(RuntimeError, match='triton is not importable'):
        ops_triton.probe(torch.device('cpu'), torch.float32)


def _torch_fwd(x, lay):
    return ops_triton._reference(torch.zeros_like(x), x, lay.d, lay.q,
                                 lay.beta.view(1, -1, 1, 1))[0].to(x.dtype)


def _torch_bwd(go, x, lay):
    _, dx, a, b, db = ops_triton._reference(go, x, lay.d, lay.q, lay.beta.view(1, -1, 1, 1))
    return dx.to(x.dtype), a, b, db


@needs_triton
def test_probe_reports_a_launch_failure(monkeypatch):
    """Without a GPU (and without the interpreter) a launch fails: the probe raises
    the launch's own exception (which the dispatch turns into its warning)."""
    def no_launch(kernel, grid, args, meta):
        raise RuntimeError('0 active drivers ([]). There should only be one.')

    monkeypatch.setattr(tu, 'launch', no_launch)
    with pytest.raises(RuntimeError, match=r'0 active drivers \(\[\]\)'):
        ops_triton.probe(torch.device('cpu'), torch.float32)


# --------------------------------------------------------------------------
# device guard and specialisation
# --------------------------------------------------------------------------
class _Recorder:
    """Replaces ``launch`` (nothing runs) and ``device_guard``; checks every launch is
    inside a guard of its tensors' device and records the specialisation keys."""

    def __init__(self):
        self.inside, self.launches, self.keys = None, [], set()

    @contextmanager
    def guard(self, t):
        self.inside = t.device
        yield
        self.inside = None

    def launch(self, kernel, grid, args, meta):
        assert self.inside is not None, f'{kernel.fn.__name__} launched outside a guard'
        assert all(a.device == self.inside for a in args if isinstance(a, torch.Tensor))
        self.launches.append(kernel.fn.__name__)
        self.keys.add((kernel.fn.__name__, ) + _specialisation(kernel, args, meta))


def _specialisation(kernel, args, meta, honour_dns=True):
    """Triton's cache key of one launch: the arguments' types and "== 1" /
    "divisible by 16" flags (unless ``do_not_specialize``), and the constexprs."""
    from triton.runtime.jit import BaseBackend, native_specialize_impl
    key = []
    runtime = [p for p in kernel.params if not p.is_constexpr]
    assert len(runtime) == len(args)
    for p, a in zip(runtime, args):
        spec = not (honour_dns and p.do_not_specialize)
        if isinstance(a, torch.Tensor):
            key.append(str(a.dtype))
        else:
            key.append(native_specialize_impl(BaseBackend, a, False, spec, True))
    return tuple(key) + tuple(sorted(meta.items()))


@needs_triton
def test_every_launch_is_device_guarded(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(tu, 'launch', rec.launch)
    monkeypatch.setattr(tu, 'device_guard', rec.guard)
    C = 8
    for bshape in [(1, C, 1, 1), (2, 1, 5, 6)]:
        for cl in (False, True):
            x = torch.randn(2, C, 5, 6)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            lay = kernel_layout(x, torch.rand(1, C, 1, 1), None, torch.rand(bshape),
                                torch.float32)
            ops_triton.acon_fwd_triton(x, lay)
            ops_triton.acon_bwd_triton(torch.randn_like(x), x, lay)
    assert set(rec.launches) == {'_acon_fwd_kernel', '_acon_bwd_row_kernel',
                                 '_acon_bwd_pix_kernel', '_acon_fwd_nhwc_kernel',
                                 '_acon_bwd_nhwc_kernel'}


# --------------------------------------------------------------------------
# specialisation: a bounded number of variants whatever the image sizes
# --------------------------------------------------------------------------
@needs_triton
def test_compiled_variants_do_not_grow_with_the_image_size(monkeypatch):
    """Multi-scale training: 60 image sizes, both layouts, row and pixel beta."""
    rec = _Recorder()
    monkeypatch.setattr(tu, 'launch', rec.launch)
    monkeypatch.setattr(tu, 'device_guard', rec.guard)
    naive_keys = set()
    real_launch = rec.launch

    def launch(kernel, grid, args, meta):
        real_launch(kernel, grid, args, meta)
        naive_keys.add((kernel.fn.__name__, ) + _specialisation(kernel, args, meta, False))

    monkeypatch.setattr(tu, 'launch', launch)
    sizes = [(h, w) for h in range(7, 67, 4) for w in (9, 16, 33, 48)]  # 60 sizes
    C = 64
    for N in (1, 2, 3):
        for H, W in sizes:
            for cl in (False, True):
                x = torch.empty(N, C, H, W)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                for bshape in [(1, C, 1, 1), (N, 1, H, W)]:
                    lay = kernel_layout(x, torch.ones(1, C, 1, 1), None,
                                        torch.ones(bshape), torch.float32)
                    ops_triton.acon_fwd_triton(x, lay)
                    ops_triton.acon_bwd_triton(x, x, lay)
    per_kernel = {}
    for key in rec.keys:
        per_kernel[key[0]] = per_kernel.get(key[0], 0) + 1
    # NCHW: 4 BLOCK_L buckets x (L % 16, L == 1, other) per beta mode (2 here) at most
    assert per_kernel['_acon_fwd_kernel'] <= 2 * 4 * 3, per_kernel
    assert per_kernel['_acon_bwd_row_kernel'] <= 4 * 3, per_kernel
    assert per_kernel['_acon_bwd_pix_kernel'] <= 4 * 3, per_kernel
    # NHWC: C is fixed, so one variant per beta mode whatever H, W and N
    assert per_kernel['_acon_fwd_nhwc_kernel'] == 2, per_kernel
    assert per_kernel['_acon_bwd_nhwc_kernel'] == 2, per_kernel
    # without do_not_specialize the same sizes would compile many more variants
    assert len(naive_keys) > len(rec.keys)
    assert sum(k[0].endswith('nhwc_kernel') for k in naive_keys) > 4


# --------------------------------------------------------------------------
# the kernels in Triton's interpreter
# --------------------------------------------------------------------------
_INTERPRETER_CHECK = r'''
import torch
from acon_mm.ops import AconFunction, acon_naive
from acon_mm.ops.triton import utils as triton_utils

launched, guarded, grids = [], [], []
real_launch, real_guard = triton_utils.launch, triton_utils.device_guard


def counting_launch(kernel, grid, args, meta):
    launched.append(kernel.fn.__name__ if hasattr(kernel, 'fn') else str(kernel))
    if 'bwd_nhwc' in launched[-1]:
        grids.append(tuple(grid))
    return real_launch(kernel, grid, args, meta)


def counting_guard(t):
    guarded.append(t.device)
    return real_guard(t)


triton_utils.launch = counting_launch
triton_utils.device_guard = counting_guard
quick = True  # sms = 64 only: several pixel chunks and channel blocks
torch.manual_seed(0)
worst = {}
SHAPES = [(2, 20, 9, 10), (2, 130, 3, 7)]
for sms in ((64, ) if quick else (1, 64)):  # 64: several pixel chunks / channel chunks per sample
    triton_utils.sm_count = lambda t, s=sms: s
    for shape in SHAPES:
        N, C, H, W = shape
        betas = dict(scalar=(1, 1, 1, 1), channel=(1, C, 1, 1), sample=(N, 1, 1, 1),
                     sample_channel=(N, C, 1, 1), pixel=(N, 1, H, W))
        for dtype in (torch.float32, torch.float16):
            for layout in ('contiguous', 'channels_last', 'sliced'):
                for bname, bshape in betas.items():
                    x = torch.randn(shape) * 2
                    if layout == 'sliced':
                        x = (torch.randn(N, C, H, 2 * W) * 2)[..., ::2]
                    x = x.to(dtype)
                    if layout == 'channels_last':
                        x = x.contiguous(memory_format=torch.channels_last)
                    args = [x, torch.randn(1, C, 1, 1), torch.randn(1, C, 1, 1),
                            torch.rand(bshape) + 0.5]
                    args = [a.detach().requires_grad_() for a in args]
                    gout = torch.randn(shape).to(dtype)
                    del launched[:]
                    y = AconFunction.apply(*args, 'triton')
                    y.backward(gout)
                    assert launched, (bname, layout, 'no kernel ran')
                    assert len(guarded) >= len(launched)
                    if layout == 'channels_last':
                        assert y.is_contiguous(memory_format=torch.channels_last)
                        assert args[0].grad.is_contiguous(memory_format=torch.channels_last)
                        assert all('nhwc' in k for k in launched), launched
                    else:
                        assert not any('nhwc' in k for k in launched), launched
                    got = [y.detach()] + [a.grad.clone() for a in args]
                    ref = [a.detach().double().requires_grad_() for a in args]
                    yr = acon_naive(*ref)
                    yr.backward(gout.double())
                    exp = [yr.detach()] + [r.grad for r in ref]
                    for name, a, b in zip(('y', 'dx', 'dp1', 'dp2', 'dbeta'), got, exp):
                        assert a.shape == b.shape, (name, a.shape, b.shape)
                        err = ((a.double() - b).abs().max() / b.abs().max().clamp(min=1)).item()
                        key = (str(dtype), layout, bname, name)
                        worst[key] = max(worst.get(key, 0.0), err)
# a beta varying over channels and pixels (here the full shape) is not a kernel case:
# the PyTorch fused function runs, nothing is launched
x = torch.randn(2, 4, 3, 5, requires_grad=True)
del launched[:]
y = AconFunction.apply(x, None, None, torch.rand(2, 4, 3, 5) + 0.5, 'triton')
y.sum().backward()
assert not launched and y.grad_fn.name() == 'AconFunctionBackward', launched
assert max(g[1] for g in grids) > 1, grids  # several pixel chunks
assert max(g[2] for g in grids) > 1, grids  # several channel blocks
bad = []
for key, err in sorted(worst.items()):
    dtype, layout, bname, name = key
    # fp16 y/dx are rounded to fp16 on store; the sums are float32 of fp16 inputs
    tol = (1e-5 if dtype == 'torch.float32' else 2e-3) if name in ('y', 'dx') else 2e-4
    if not err <= tol:
        bad.append((key, err))
print('WORST', max(worst.values()), 'cases', len(worst))
assert not bad, bad
print('OK')
'''


@needs_triton
def test_nchw_and_nhwc_kernels_in_interpreter(tmp_path):
    """Every kernel beta shape (scalar, channel, sample, sample x channel, pixel), fp32
    and fp16, contiguous / channels_last / sliced inputs, several pixel chunks and
    channel blocks: output and all gradients against the naive formula in float64;
    channels_last in, channels_last y and dx out, through the NHWC kernels only."""
    script = tmp_path / 'interp_check.py'
    script.write_text(_INTERPRETER_CHECK)
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert 'OK' in proc.stdout


@pytest.mark.slow
@needs_triton
def test_probe_passes_in_interpreter():
    code = ('import torch; from acon_mm.ops import triton; '
            'r = triton.probe(torch.device("cpu"), torch.float16); '
            'assert r is None, r; print("PROBE OK")')
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and 'PROBE OK' in proc.stdout, proc.stderr[-3000:]
