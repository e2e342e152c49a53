"""What the Triton kernels share (:mod:`.nchw` for contiguous inputs, :mod:`.nhwc` for
channels_last): the optional Triton import (:data:`HAS_TRITON`,
:func:`triton_available`), the launch helpers (every launch goes through
:func:`launch`, on the tensor's own device: :func:`device_guard`) and the element-wise
backward of ACON (:func:`acon_bwd_elem`)."""
import contextlib

import torch
from torch import Tensor

try:  # Triton is optional: only CUDA builds of torch ship it
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    HAS_TRITON = False

__all__ = ['HAS_TRITON', 'triton_available', 'device_guard', 'launch', 'sm_count']


def triton_available() -> bool:
    """Triton importable (:data:`HAS_TRITON`) and a CUDA device present.

    The kernels are used only where :func:`acon_mm.ops.acon_backend` says
    ``'triton'`` (this, the ``'auto'`` setting and the first-use probe).
    """
    return HAS_TRITON and torch.cuda.is_available()


def device_guard(t: Tensor):
    """``torch.cuda.device(t.device)`` for a CUDA tensor (launch on the tensor's own
    device, not the current one); a no-op context otherwise (the interpreter)."""
    if t.device.type == 'cuda':
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def launch(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """``kernel[grid](*args, **meta)``: every launch goes through here (tests count
    the specialisation variants by replacing it)."""
    kernel[grid](*args, **meta)


def sm_count(t: Tensor) -> int:
    """Multiprocessors of ``t``'s GPU (1 on CPU / in the interpreter)."""
    if t.device.type != 'cuda':
        return 1
    return torch.cuda.get_device_properties(t.device).multi_processor_count


if HAS_TRITON:

    @triton.jit
    def acon_bwd_elem(x, go, d, q, b):
        """Backward of one tile: ``dx = go (d g + q)`` with ``u = d x``,
        ``s = sigmoid(b u)``, ``g = s + b u s (1 - s)``; returns
        ``(dx, g, go u^2 s (1 - s))`` (the last is dbeta's summand), float32."""
        u = d * x
        s = tl.sigmoid(b * u)
        ss = s * (1.0 - s)
        g = s + b * u * ss
        return go * (d * g + q), g, go * u * u * ss
