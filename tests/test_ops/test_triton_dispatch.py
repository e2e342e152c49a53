"""The Triton dispatch on CPU: first-use probe and fallback, device guard, the number
of compiled kernel variants, the NCHW and NHWC kernels in Triton's interpreter, and the
benchmark's ``--json`` / ``--device cuda`` handling.

The kernels themselves only run where Triton is installed (``pip install triton``; its
interpreter, ``TRITON_INTERPRET=1``, runs them on CPU tensors); the dispatch tests
replace the probe and the launches with mocks and run everywhere.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import types
from contextlib import contextmanager

import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.ops import acon_backend, acon_func, triton_kernel, triton_utils
from acon_mm.ops.layout import BETA_FULL, BETA_PIX, BETA_ROW, kernel_layout

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HAS_TRITON = importlib.util.find_spec('triton') is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')
CUDA0 = torch.device('cuda', 0)


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Triton "available" (as on a CUDA machine), no probe run yet, no warning given."""
    monkeypatch.setattr(acon_func, '_triton_probe_results', {})
    monkeypatch.setattr(acon_func, '_warned_fallback', set())
    monkeypatch.setattr(acon_func, '_triton_available', lambda: True)
    calls = []

    def probe_ok(device, dtype):
        calls.append((device, dtype))

    monkeypatch.setattr(triton_kernel, 'probe', probe_ok)
    return calls


def _fake_cuda(dtype=torch.float32, index=0):
    """What acon_backend reads of a CUDA tensor (no GPU here)."""
    return types.SimpleNamespace(device=torch.device('cuda', index), dtype=dtype)


# --------------------------------------------------------------------------
# probe and fallback
# --------------------------------------------------------------------------
def test_probe_runs_once_per_device_and_dtype(fresh_dispatch, recwarn):
    for _ in range(3):
        assert acon_backend(_fake_cuda(), 'auto') == 'triton'
    assert fresh_dispatch == [(CUDA0, torch.float32)]
    assert acon_backend(_fake_cuda(torch.bfloat16), 'fused') == 'triton'
    assert acon_backend(_fake_cuda(index=1), 'fused') == 'triton'
    assert len(fresh_dispatch) == 3
    assert acon_backend(_fake_cuda(), 'torch') == 'torch'
    assert acon_backend(_fake_cuda(torch.float64), 'fused') == 'torch'  # no fp64 kernels
    assert len(fresh_dispatch) == 3
    assert not [w for w in recwarn if 'acon_mm' in str(w.message)]


def test_probe_failure_warns_once_and_falls_back(fresh_dispatch, monkeypatch):
    calls = []

    def broken(device, dtype):
        calls.append(device)
        raise RuntimeError('PTX assembler not found')

    monkeypatch.setattr(triton_kernel, 'probe', broken)
    with pytest.warns(UserWarning, match='PTX assembler not found') as rec:
        assert acon_backend(_fake_cuda(), 'fused') == 'torch'
    assert len([w for w in rec if 'first-use check' in str(w.message)]) == 1
    assert 'cuda:0' in str(rec[0].message) and 'RuntimeError' in str(rec[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning, no second probe
        for _ in range(3):
            assert acon_backend(_fake_cuda(), 'fused') == 'torch'
    assert calls == [CUDA0]
    # another device is probed on its own (and may work)
    monkeypatch.setattr(triton_kernel, 'probe', lambda device, dtype: None)
    assert acon_backend(_fake_cuda(index=1), 'fused') == 'triton'
    assert acon_backend(_fake_cuda(index=0), 'fused') == 'torch'


def test_probe_detects_a_wrong_result(monkeypatch):
    """The real probe compares with the PyTorch formula: kernels returning zeros fail."""
    monkeypatch.setattr(triton_kernel, '_HAS_TRITON', True)

    def fwd(x, lay):
        return torch.zeros_like(x)

    def bwd(go, x, lay):
        z = torch.zeros(lay.N, lay.C)
        return torch.zeros_like(x), z, z, z

    monkeypatch.setattr(triton_kernel, 'acon_fwd_triton', fwd)
    monkeypatch.setattr(triton_kernel, 'acon_bwd_triton', bwd)
    reason = acon_func._probe_triton(torch.device('cpu'), torch.float32)
    assert reason is not None and 'wrong result' in reason and '(y,' in reason
    # the exact formula passes
    monkeypatch.setattr(triton_kernel, 'acon_fwd_triton', _torch_fwd)
    monkeypatch.setattr(triton_kernel, 'acon_bwd_triton', _torch_bwd)
    assert acon_func._probe_triton(torch.device('cpu'), torch.float32) is None


def _torch_fwd(x, lay):
    return triton_kernel._reference(torch.zeros_like(x), x, lay.d, lay.q,
                                    lay.beta.view(1, -1, 1, 1))[0].to(x.dtype)


def _torch_bwd(go, x, lay):
    _, dx, a, b, db = triton_kernel._reference(go, x, lay.d, lay.q, lay.beta.view(1, -1, 1, 1))
    return dx.to(x.dtype), a, b, db


@needs_triton
def test_probe_reports_a_launch_failure(monkeypatch):
    """Without a GPU (and without the interpreter) a launch fails: the reason is the
    exception text, not an exception of the dispatch."""
    def no_launch(kernel, grid, args, meta):
        raise RuntimeError('0 active drivers ([]). There should only be one.')

    monkeypatch.setattr(triton_utils, 'launch', no_launch)
    reason = acon_func._probe_triton(torch.device('cpu'), torch.float32)
    assert reason == 'RuntimeError: 0 active drivers ([]). There should only be one.'


@pytest.mark.parametrize('value', ['1', 'yes'])
def test_disable_env_var_skips_triton_and_probe(fresh_dispatch, monkeypatch, value):
    monkeypatch.setattr(acon_func, '_triton_available', triton_kernel.triton_available)
    monkeypatch.setattr(triton_kernel, '_HAS_TRITON', True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert acon_backend(_fake_cuda(), 'fused') == 'triton'  # the mocked machine works
    monkeypatch.setenv('ACON_MM_DISABLE_TRITON', value)
    with pytest.warns(UserWarning, match='Triton is not available'):
        assert acon_backend(_fake_cuda(torch.float16), 'fused') == 'torch'
    assert fresh_dispatch == [(CUDA0, torch.float32)]  # no probe for float16


# --------------------------------------------------------------------------
# device guard and layout
# --------------------------------------------------------------------------
def test_device_guard_uses_the_tensor_device(monkeypatch):
    entered = []

    @contextmanager
    def fake_device(dev):
        entered.append(dev)
        yield

    monkeypatch.setattr(torch.cuda, 'device', fake_device)
    with triton_utils.device_guard(types.SimpleNamespace(device=torch.device('cuda', 1))):
        pass
    assert entered == [torch.device('cuda', 1)]
    with triton_utils.device_guard(torch.zeros(1)):  # CPU (interpreter): no CUDA call
        pass
    assert entered == [torch.device('cuda', 1)]


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
    monkeypatch.setattr(triton_utils, 'launch', rec.launch)
    monkeypatch.setattr(triton_utils, 'device_guard', rec.guard)
    C = 8
    for bshape in [(1, C, 1, 1), (2, 1, 5, 6), (2, C, 5, 6)]:
        for cl in (False, True):
            x = torch.randn(2, C, 5, 6)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            lay = kernel_layout(x, torch.rand(1, C, 1, 1), None, torch.rand(bshape),
                                torch.float32)
            triton_kernel.acon_fwd_triton(x, lay)
            triton_kernel.acon_bwd_triton(torch.randn_like(x), x, lay)
    assert set(rec.launches) == {'_acon_fwd_kernel', '_acon_bwd_row_kernel',
                                 '_acon_bwd_pix_kernel', '_acon_fwd_nhwc_kernel',
                                 '_acon_bwd_nhwc_kernel'}


def test_kernel_layout_modes():
    x = torch.randn(2, 4, 3, 5)
    xl = x.contiguous(memory_format=torch.channels_last)
    p = torch.randn(1, 4, 1, 1)
    cases = {(1, 1, 1, 1): (BETA_ROW, 0, 0), (1, 4, 1, 1): (BETA_ROW, 0, 1),
             (2, 1, 1, 1): (BETA_ROW, 1, 0), (2, 4, 1, 1): (BETA_ROW, 4, 1),
             (2, 1, 3, 5): (BETA_PIX, 15, 0), (1, 1, 3, 1): (BETA_PIX, 0, 0),
             (2, 4, 3, 5): (BETA_FULL, 0, 0)}
    for bshape, (mode, bsn, bsc) in cases.items():
        for xx in (x, xl):
            lay = kernel_layout(xx, p, p * 0.5, torch.rand(bshape), torch.float32)
            assert (lay.bmode, lay.bsn, lay.bsc) == (mode, bsn, bsc), bshape
            assert lay.nhwc == (xx is xl)
            if mode == BETA_FULL:  # same offsets as x
                assert lay.beta.stride() == xx.stride()
    assert kernel_layout(x, p, None, torch.rand(1, 4, 3, 1), torch.float32) is None
    assert kernel_layout(x, p, None, torch.rand(1, 4, 3, 5), torch.float32) is None
    assert not kernel_layout(x[..., ::2], p, None, torch.rand(1), torch.float32).nhwc


# --------------------------------------------------------------------------
# specialisation: a bounded number of variants whatever the image sizes
# --------------------------------------------------------------------------
@needs_triton
def test_compiled_variants_do_not_grow_with_the_image_size(monkeypatch):
    """Multi-scale training: 60 image sizes, both layouts, row and pixel beta."""
    rec = _Recorder()
    monkeypatch.setattr(triton_utils, 'launch', rec.launch)
    monkeypatch.setattr(triton_utils, 'device_guard', rec.guard)
    naive_keys = set()
    real_launch = rec.launch

    def launch(kernel, grid, args, meta):
        real_launch(kernel, grid, args, meta)
        naive_keys.add((kernel.fn.__name__, ) + _specialisation(kernel, args, meta, False))

    monkeypatch.setattr(triton_utils, 'launch', launch)
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
                    triton_kernel.acon_fwd_triton(x, lay)
                    triton_kernel.acon_bwd_triton(x, x, lay)
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
from acon_mm.ops import triton_kernel, triton_utils

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
                     sample_channel=(N, C, 1, 1), pixel=(N, 1, H, W), full=(N, C, H, W))
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
    """Every beta shape (scalar, channel, sample, sample x channel, pixel, full), fp32
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


@needs_triton
def test_probe_passes_in_interpreter():
    code = ('import torch; from acon_mm.ops import acon_func; '
            'r = acon_func._probe_triton(torch.device("cpu"), torch.float16); '
            'assert r is None, r; print("PROBE OK")')
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and 'PROBE OK' in proc.stdout, proc.stderr[-3000:]


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------
BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_acon.py')


def test_benchmark_json_on_cpu(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, BENCH, '--quick', '--skip-detector', '--batch',
                           '1', '--repeats', '2', '--json', str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target failed (busy CPU)
    res = json.loads(out.read_text())
    assert res['device'] == 'cpu' and res['batch'] == 1 and res['detector'] is None
    layers = {(r['layer'], r['impl']) for r in res['activations']}
    assert {('AconC', 'fused'), ('nn.SiLU', '-'), ('MetaAconC', 'naive')} <= layers
    assert res['targets'] and all(set(t) == {'text', 'ok'} for t in res['targets'])
    assert 'Targets:' in proc.stdout


def test_benchmark_cuda_without_cuda_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    proc = subprocess.run([sys.executable, BENCH, '--device', 'cuda'], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert 'CUDA is not available' in proc.stderr, proc.stderr[-2000:]


def test_benchmark_bandwidth_helpers():
    sys.path.insert(0, osp.dirname(BENCH))
    try:
        import benchmark_acon as bench
    finally:
        sys.path.pop(0)
    # forward reads x, writes y; backward reads x and gout, writes dx: 5 tensors
    assert bench.fused_pass_bytes(torch.empty(2, 3, 4, 5, dtype=torch.bfloat16)) == \
        5 * 120 * 2
    props = types.SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=6144,
                                  name='X')
    assert abs(bench.peak_bandwidth_gbs(props, None) - 2 * 2.619e9 * 768 / 1e9) < 1e-6
    assert bench.peak_bandwidth_gbs(props, 4800.0) == 4800.0
    assert bench.peak_bandwidth_gbs(types.SimpleNamespace(name='NVIDIA H200'), None) == 4800.0
    assert bench.peak_bandwidth_gbs(types.SimpleNamespace(name='GPU'), None) is None
