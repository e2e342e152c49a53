"""acon_mm.ops.triton.utils: the optional Triton import and the device guard of every
launch."""
import types
from contextlib import contextmanager

import torch

from acon_mm.ops.triton import utils as tu


def test_triton_available_needs_triton_and_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(tu, 'HAS_TRITON', True)
    assert tu.triton_available()
    monkeypatch.setattr(tu, 'HAS_TRITON', False)
    assert not tu.triton_available()
    monkeypatch.setattr(tu, 'HAS_TRITON', True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert not tu.triton_available()


def test_sm_count_is_one_off_cuda():
    assert tu.sm_count(torch.zeros(1)) == 1


def test_device_guard_uses_the_tensor_device(monkeypatch):
    entered = []

    @contextmanager
    def fake_device(dev):
        entered.append(dev)
        yield

    monkeypatch.setattr(torch.cuda, 'device', fake_device)
    with tu.device_guard(types.SimpleNamespace(device=torch.device('cuda', 1))):
        pass
    assert entered == [torch.device('cuda', 1)]
    with tu.device_guard(torch.zeros(1)):  # CPU (interpreter): no CUDA call
        pass
    assert entered == [torch.device('cuda', 1)]
