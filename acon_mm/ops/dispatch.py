"""Which implementation runs an ACON call: the one place where it is decided.

The implementation *setting* (what the user asks for) is one of :data:`ACON_IMPLS`,
chosen with :func:`set_acon_impl`, the context manager :func:`acon_impl` or the
environment variable ``ACON_MM_IMPL`` (read once, at import):

* ``'auto'`` (default): the compiled kernels where they apply: the C++ extension on
  CPU (:mod:`acon_mm.ops.cpu_ext`), the Triton kernels on CUDA
  (:mod:`acon_mm.ops.triton`), else the PyTorch fused function.
* ``'torch'``: the PyTorch fused function :class:`~acon_mm.ops.AconFunction` only, the
  one switch that turns every compiled kernel off (same results and memory, slower).
* ``'naive'``: :func:`~acon_mm.ops.acon_naive`, the plain autograd formula.

:func:`acon_backend` maps the setting and a tensor to the *backend* that runs;
:func:`acon_mm.ops.acon` and the fused meta-ACON-C layer
(:func:`acon_mm.ops.meta_func.meta_acon_channel`, which runs only where the backend is
``'cpu'``) both ask it, as mmcv's ``DISPATCH_DEVICE_IMPL`` picks a kernel per device:

============  =======================================================================
backend       when
============  =======================================================================
``'naive'``   setting ``'naive'``, or under ``torch.compile`` / tracing / scripting
              (the plain formula is traced and inductor fuses it itself)
``'cpu'``     setting ``'auto'``, a floating-point CPU tensor and the extension built
``'triton'``  setting ``'auto'``, a float32/float16/bfloat16 CUDA tensor, Triton
              available and its one-time probe passed on that device and dtype
``'torch'``   everything else (setting ``'torch'``, no compiler, no Triton, a failed
              probe, float64 on CUDA, other devices)
============  =======================================================================

The backend is a choice of *device code*; argument shapes a compiled kernel does not
take (a parameter that is not per channel, a beta varying over both the channels and
the pixels) are handed to the PyTorch fused function by that kernel's caller.
"""
import contextlib
import os
import warnings
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from . import cpu_ext
from .utils import is_compiling

__all__ = ['ACON_IMPLS', 'set_acon_impl', 'get_acon_impl', 'acon_impl', 'acon_backend']

#: Valid values of :func:`set_acon_impl` / ``ACON_MM_IMPL``.
ACON_IMPLS = ('auto', 'torch', 'naive')
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_impl(name: str, source: str) -> str:
    if name not in ACON_IMPLS:
        raise ValueError(f'{source}: unknown ACON implementation {name!r}; '
                         f'valid ones are {list(ACON_IMPLS)}')
    return name


_impl = _check_impl(os.environ.get('ACON_MM_IMPL', 'auto') or 'auto',
                    'environment variable ACON_MM_IMPL')


def set_acon_impl(name: str) -> None:
    """Select the implementation of every ACON call (see the module docstring).

    Args:
        name (str): one of :data:`ACON_IMPLS`.

    Raises:
        ValueError: ``name`` is not one of them (the message lists them).
    """
    global _impl
    _impl = _check_impl(name, 'set_acon_impl')


def get_acon_impl() -> str:
    """The implementation setting now (one of :data:`ACON_IMPLS`)."""
    return _impl


@contextlib.contextmanager
def acon_impl(name: str) -> Iterator[None]:
    """Context manager: use implementation ``name`` inside the ``with`` block."""
    global _impl
    old = _impl
    set_acon_impl(name)
    try:
        yield
    finally:
        _impl = old


# --------------------------------------------------------------------------
# Triton: availability and the one-time probe per (device, dtype)
# --------------------------------------------------------------------------
_warned_fallback = set()
#: (device, dtype) -> None (the Triton probe passed) or why it failed
_triton_probe_results: Dict[Tuple[torch.device, torch.dtype], Optional[str]] = {}


def _triton_available() -> bool:
    """:func:`acon_mm.ops.triton.triton_available` (imported here, on first CUDA use:
    Triton is optional and slow to import)."""
    try:
        from .triton import triton_available
    except ImportError:
        return False
    return triton_available()


def _probe_triton(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Run :func:`acon_mm.ops.triton.probe`: ``None`` if the kernels compiled, launched
    and matched the PyTorch formula, else the reason (exception text)."""
    try:
        from . import triton as triton_kernels
        triton_kernels.probe(device, dtype)
    except Exception as e:  # noqa: BLE001 - any failure means: do not use Triton here
        return f'{type(e).__name__}: {e}'.strip()
    return None


def _cuda_backend(device: torch.device, dtype: torch.dtype) -> str:
    """``'triton'`` or ``'torch'`` for a CUDA tensor of ``dtype`` on ``device``.

    Triton is used when it is available (importable and a CUDA device present) and the
    one-time probe passed for this device and dtype; the first failure warns once, with
    the reason, and that device and dtype keep the PyTorch fused function for the rest
    of the process.
    """
    if not _triton_available():
        if 'triton' not in _warned_fallback:
            _warned_fallback.add('triton')
            warnings.warn('acon_mm: Triton is not available; fused ACON on CUDA uses '
                          'the PyTorch fused function (memory efficient, slower)')
        return 'torch'
    key = (device, dtype)
    if key not in _triton_probe_results:
        reason = _triton_probe_results[key] = _probe_triton(device, dtype)
        if reason is not None:
            warnings.warn(f'acon_mm: the Triton ACON kernels failed their first-use check '
                          f'on {device} ({dtype}): {reason}; using the PyTorch fused '
                          'function there for the rest of the process')
    return 'triton' if _triton_probe_results[key] is None else 'torch'


def acon_backend(x: Tensor, impl: Optional[str] = None) -> str:
    """The backend an ACON call on ``x`` runs (the table in the module docstring).

    Cheap after the first call per device and dtype (the extension's build and the
    Triton probe are cached).

    Args:
        x (Tensor): the input (only its ``device`` and ``dtype`` are read).
        impl (str, optional): an implementation setting; the current one if ``None``.

    Returns:
        str: ``'naive'``, ``'cpu'`` (the C++ extension), ``'triton'`` or ``'torch'``
        (the compiled-kernel-free fused function).

    Raises:
        ValueError: ``impl`` is not one of :data:`ACON_IMPLS`.
    """
    impl = _impl if impl is None else _check_impl(impl, 'acon_backend')
    if impl == 'naive' or is_compiling():
        return 'naive'
    if impl == 'torch' or x.dtype not in _FLOATS:
        return 'torch'
    device = x.device
    if device.type == 'cpu':
        if cpu_ext.load_cpu_ext() is not None:
            return 'cpu'
    elif device.type == 'cuda' and x.dtype != torch.float64:
        return _cuda_backend(device, x.dtype)
    return 'torch'
