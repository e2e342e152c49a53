"""The dispatch (acon_mm.ops.dispatch): the implementation setting and its environment
variable, the backend chosen per tensor (the same for :func:`acon` and the fused
meta-ACON-C layer), the Triton first-use probe and its fallback. No GPU needed: a CUDA
tensor is faked (the dispatch reads only ``device`` and ``dtype``) and the probe is
mocked."""
import importlib
import types
import warnings

import pytest
import torch

import acon_mm  # noqa: F401  (registers the layers)
import acon_mm.ops.dispatch as dispatch
from acon_mm.models.layers import AconC, MetaAconC
from acon_mm.ops import ACON_IMPLS, acon, acon_backend, acon_impl, get_acon_impl, set_acon_impl
from acon_mm.ops import cpu_ext as cpu_ext_module
from acon_mm.ops import triton as ops_triton

CUDA0 = torch.device('cuda', 0)


def _fake_cuda(dtype=torch.float32, index=0):
    """What acon_backend reads of a CUDA tensor (no GPU here)."""
    return types.SimpleNamespace(device=torch.device('cuda', index), dtype=dtype)


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Triton "available" (as on a CUDA machine), no probe run yet, no warning given;
    returns the list of probe calls."""
    monkeypatch.setattr(dispatch, '_triton_probe_results', {})
    monkeypatch.setattr(dispatch, '_warned_fallback', set())
    monkeypatch.setattr(dispatch, '_triton_available', lambda: True)
    calls = []

    def probe_ok(device, dtype):
        calls.append((device, dtype))

    monkeypatch.setattr(ops_triton, 'probe', probe_ok)
    return calls


@pytest.fixture
def no_extension(monkeypatch):
    """The extension "could not be built"; building it again fails the test."""
    monkeypatch.setattr(cpu_ext_module, '_ext', None)
    monkeypatch.setattr(cpu_ext_module, '_tried', True)
    monkeypatch.setattr(cpu_ext_module, '_build',
                        lambda: pytest.fail('the extension was built'))


# --------------------------------------------------------------------------
# the implementation setting
# --------------------------------------------------------------------------
def test_impl_setting_and_its_errors():
    assert ACON_IMPLS == ('auto', 'torch', 'naive')
    assert get_acon_impl() in ACON_IMPLS
    for bad in ('fast', 'fused'):  # 'fused' was an alias of 'auto': removed
        with pytest.raises(ValueError, match=r"unknown ACON implementation .*\['auto', "
                                             r"'torch', 'naive'\]"):
            set_acon_impl(bad)
    with pytest.raises(ValueError, match='acon_backend'):
        acon_backend(torch.zeros(1), 'fused')
    old = get_acon_impl()
    x = torch.randn(2, 3, 4, 4)
    with acon_impl('naive'):
        assert get_acon_impl() == 'naive' and acon_backend(x) == 'naive'
        with acon_impl('torch'):
            assert acon_backend(x) == 'torch'
        assert get_acon_impl() == 'naive'
    assert get_acon_impl() == old
    with pytest.raises(RuntimeError), acon_impl('torch'):
        raise RuntimeError('restored even on an error')
    assert get_acon_impl() == old


def test_environment_variable_is_read_at_import_and_validated(monkeypatch):
    monkeypatch.setenv('ACON_MM_IMPL', 'naive')
    mod = importlib.reload(dispatch)
    try:
        assert mod.get_acon_impl() == 'naive'
        assert acon_backend(torch.zeros(1)) == 'naive'  # the re-exported function sees it
        for bad in ('bogus', 'fused'):
            monkeypatch.setenv('ACON_MM_IMPL', bad)
            with pytest.raises(ValueError, match='environment variable ACON_MM_IMPL'):
                importlib.reload(dispatch)
    finally:
        monkeypatch.setenv('ACON_MM_IMPL', 'auto')
        importlib.reload(dispatch)
    assert get_acon_impl() == 'auto'


def test_non_float_and_other_devices_take_the_pytorch_function():
    assert acon_backend(torch.zeros(2, dtype=torch.int64), 'auto') == 'torch'
    assert acon_backend(types.SimpleNamespace(device=torch.device('meta'),
                                              dtype=torch.float32), 'auto') == 'torch'


# --------------------------------------------------------------------------
# 'torch': the one switch that turns the compiled kernels off
# --------------------------------------------------------------------------
def test_torch_setting_never_builds_the_extension(no_extension):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    with acon_impl('torch'):
        assert acon_backend(x) == 'torch'
        y = AconC(8)(x)
        z = MetaAconC(8, r=4)(x)
    assert y.grad_fn.name() == 'AconFunctionBackward'
    assert z.grad_fn.name() == 'AconFunctionBackward'  # the modules ran, then ACON


def test_torch_setting_never_probes_triton(fresh_dispatch, recwarn):
    with acon_impl('torch'):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            assert acon_backend(_fake_cuda(dtype)) == 'torch'
    assert fresh_dispatch == []
    assert not [w for w in recwarn if 'acon_mm' in str(w.message)]


# --------------------------------------------------------------------------
# one choice for acon() and the fused meta-ACON-C layer
# --------------------------------------------------------------------------
def test_acon_and_meta_acon_follow_the_same_backend(monkeypatch, cpu_ext):
    """The layer's fused path runs exactly where acon_backend says 'cpu'."""
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    m = MetaAconC(8, r=4)
    assert acon_backend(x, 'auto') == 'cpu'
    with acon_impl('auto'):
        assert 'MetaFn' in m(x).grad_fn.name()
        assert 'AconFn' in acon(x, None, None, torch.ones(1)).grad_fn.name()
    seen = []

    def forced(t, impl=None):
        seen.append(t.shape)
        return 'torch'

    # meta_func and acon_func both ask the one function
    from acon_mm.ops import acon_func, meta_func
    monkeypatch.setattr(meta_func, 'acon_backend', forced)
    monkeypatch.setattr(acon_func, 'acon_backend', forced)
    with acon_impl('auto'):
        y = m(x)
        z = acon(x, None, None, torch.ones(1))
    assert y.grad_fn.name() == 'AconFunctionBackward'
    assert z.grad_fn.name() == 'AconFunctionBackward'
    assert len(seen) == 3  # meta path, then the layer's acon(), then acon()


def test_without_the_extension_cpu_is_never_chosen(no_extension):
    x = torch.randn(2, 8, 3, 3)
    assert acon_backend(x, 'auto') == 'torch'
    with acon_impl('auto'):
        assert MetaAconC(8, r=4)(x.requires_grad_()).grad_fn.name() == \
            'AconFunctionBackward'


# --------------------------------------------------------------------------
# Triton: probe and fallback
# --------------------------------------------------------------------------
def test_probe_runs_once_per_device_and_dtype(fresh_dispatch, recwarn):
    for _ in range(3):
        assert acon_backend(_fake_cuda(), 'auto') == 'triton'
    assert fresh_dispatch == [(CUDA0, torch.float32)]
    assert acon_backend(_fake_cuda(torch.bfloat16), 'auto') == 'triton'
    assert acon_backend(_fake_cuda(index=1), 'auto') == 'triton'
    assert len(fresh_dispatch) == 3
    assert acon_backend(_fake_cuda(), 'torch') == 'torch'
    assert acon_backend(_fake_cuda(), 'naive') == 'naive'
    assert acon_backend(_fake_cuda(torch.float64), 'auto') == 'torch'  # no fp64 kernels
    assert len(fresh_dispatch) == 3
    assert not [w for w in recwarn if 'acon_mm' in str(w.message)]


def test_probe_failure_warns_once_and_falls_back(fresh_dispatch, monkeypatch):
    calls = []

    def broken(device, dtype):
        calls.append(device)
        raise RuntimeError('PTX assembler not found')

    monkeypatch.setattr(ops_triton, 'probe', broken)
    with pytest.warns(UserWarning, match='PTX assembler not found') as rec:
        assert acon_backend(_fake_cuda(), 'auto') == 'torch'
    assert len([w for w in rec if 'first-use check' in str(w.message)]) == 1
    assert 'cuda:0' in str(rec[0].message) and 'RuntimeError' in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning, no second probe
        for _ in range(3):
            assert acon_backend(_fake_cuda(), 'auto') == 'torch'
    assert calls == [CUDA0]
    # another device is probed on its own (and may work)
    monkeypatch.setattr(ops_triton, 'probe', lambda device, dtype: None)
    assert acon_backend(_fake_cuda(index=1), 'auto') == 'triton'
    assert acon_backend(_fake_cuda(index=0), 'auto') == 'torch'


def test_without_triton_cuda_warns_once_and_falls_back(fresh_dispatch, monkeypatch):
    """Triton not importable (the module-level availability): no probe, one warning."""
    monkeypatch.setattr(dispatch, '_triton_available', ops_triton.triton_available)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(ops_triton.utils, 'HAS_TRITON', True)
    assert acon_backend(_fake_cuda(), 'auto') == 'triton'  # the mocked machine works
    monkeypatch.setattr(ops_triton.utils, 'HAS_TRITON', False)
    with pytest.warns(UserWarning, match='Triton is not available'):
        assert acon_backend(_fake_cuda(torch.float16), 'auto') == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert acon_backend(_fake_cuda(torch.bfloat16), 'auto') == 'torch'
    assert fresh_dispatch == [(CUDA0, torch.float32)]  # no probe for float16


def test_probe_reason_is_the_exception_text(monkeypatch):
    def no_launch(device, dtype):
        raise RuntimeError('0 active drivers ([]). There should only be one.')

    monkeypatch.setattr(ops_triton, 'probe', no_launch)
    reason = dispatch._probe_triton(torch.device('cpu'), torch.float32)
    assert reason == 'RuntimeError: 0 active drivers ([]). There should only be one.'
