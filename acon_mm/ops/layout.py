"""How the Triton ACON kernels see their arguments (used by :mod:`.acon_func`).

The input ``x`` of shape ``(N, C, *)`` is handled in one of two memory layouts:

* NCHW (``nhwc=False``): ``x`` contiguous, viewed as ``(R, L)`` rows with
  ``R = N * C`` and ``L = prod(x.shape[2:])``; element ``(n, c, l)`` at
  ``(n * C + c) * L + l``.
* NHWC (``nhwc=True``): a 4-d channels_last ``x``, viewed as ``(P, C)`` rows with
  ``P = N * L`` and the channel fastest; element ``(n, c, l)`` at
  ``(n * L + l) * C + c``. No copy is made.

A non-dense input (a slice) is made contiguous by the caller (NCHW), once per pass.

The parameters become per-channel ``(C,)`` vectors ``d = p1 - p2`` and ``q = p2``
(``f(x) = d x sigmoid(beta d x) + q x``) and beta takes one of two modes:

* ``BETA_ROW`` (0): constant over the pixels, ``beta[n * bsn + c * bsc]`` with
  ``bsn, bsc`` zero where beta is broadcast (scalar, per channel, per sample, per
  sample and channel);
* ``BETA_PIX`` (1): constant over the channels, ``beta[n * bsn + l]`` (``bsn`` is
  ``L`` or ``0``), e.g. meta-ACON's per-pixel switch ``(N, 1, H, W)``.

These are the shapes the layers produce. Anything else (a parameter that is not per
channel, a beta that varies over both the channels and the pixels, e.g. one of ``x``'s
full shape) returns ``None``: the PyTorch fused function (the C++ extension applies
the same rule).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['KernelLayout', 'kernel_layout', 'compute_dtype', 'is_nhwc', 'padded',
           'BETA_ROW', 'BETA_PIX']

BETA_ROW, BETA_PIX = 0, 1
_HALF = (torch.float16, torch.bfloat16)


class KernelLayout:
    """The kernels' view of one call: sizes, per-channel ``d``/``q``, beta and its mode.

    Attributes:
        N, C, L (int): batch, channels, pixels per sample.
        nhwc (bool): ``x`` is channels_last (the NHWC kernels), else contiguous.
        d, q (Tensor): ``(C,)`` contiguous, in the compute dtype.
        beta (Tensor): ``(Nb, Cb, 1)`` (row mode) or ``(Nb, 1, L)`` (pixel mode),
            contiguous, in the compute dtype.
        bmode (int): ``BETA_ROW`` or ``BETA_PIX``.
        bsn, bsc (int): beta's strides over ``n`` and ``c`` (0 where broadcast).
        bshape (tuple): beta's shape padded with leading ones to ``x.dim()``.
    """
    __slots__ = ('N', 'C', 'L', 'nhwc', 'd', 'q', 'beta', 'bmode', 'bsn', 'bsc', 'bshape')


def padded(shape, ndim: int) -> tuple:
    """``shape`` with leading ones up to ``ndim`` dimensions."""
    return (1, ) * (ndim - len(shape)) + tuple(shape)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision inputs, else ``x.dtype``."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def is_nhwc(x: Tensor) -> bool:
    """A 4-d channels_last tensor that is not also plainly contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last)


def _channel_vector(p: Tensor, ndim: int, C: int, dtype) -> Optional[Tensor]:
    """``p`` as a contiguous (C,) vector, or ``None`` if it varies along another
    dimension. (Called inside ``AconFunction.forward``, where autograd is off.)"""
    shape = p.shape
    if len(shape) > ndim:
        return None
    ci = len(shape) - ndim + 1  # p's index of the channel axis
    for i, s in enumerate(shape):
        if s != 1 and i != ci:
            return None
    v = p.reshape(-1)
    if v.dtype != dtype:
        v = v.to(dtype)
    if v.numel() != C:
        v = v.expand(C).contiguous()
    return v


_CONSTS = {}


def _const_vector(value: float, C: int, dtype, device) -> Tensor:
    """A cached read-only (C,) vector filled with ``value``."""
    key = (value, C, dtype, device)
    t = _CONSTS.get(key)
    if t is None:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        t = _CONSTS[key] = torch.full((C, ), value, dtype=dtype, device=device)
    return t


def _params(p1, p2, ndim, C, dtype, device) -> Optional[Tuple[Tensor, Tensor]]:
    v1 = v2 = None
    if p1 is not None:
        v1 = _channel_vector(p1, ndim, C, dtype)
        if v1 is None:
            return None
    if p2 is not None:
        v2 = _channel_vector(p2, ndim, C, dtype)
        if v2 is None:
            return None
    if v1 is None and v2 is None:
        return _const_vector(1.0, C, dtype, device), _const_vector(0.0, C, dtype, device)
    if v2 is None:
        return v1, _const_vector(0.0, C, dtype, device)
    if v1 is None:
        return 1 - v2, v2
    return v1 - v2, v2


def kernel_layout(x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor], beta: Tensor,
                  dtype: torch.dtype) -> Optional[KernelLayout]:
    """The kernels' view of the arguments, or ``None`` if they need the generic path.

    ``x`` is judged as given: channels_last gives the NHWC layout; anything else the
    NCHW one (the caller makes a non-contiguous ``x`` contiguous).

    Args:
        x (Tensor): input (N, C, ...).
        p1, p2 (Tensor | None): the parameters (``None``: 1 and 0).
        beta (Tensor): broadcastable to ``x``.
        dtype (torch.dtype): the compute dtype (:func:`compute_dtype`).

    Returns:
        KernelLayout | None: the layout, or ``None`` for arguments the kernels do not
        take (see the module docstring).
    """
    ndim = x.dim()
    if ndim < 2:
        return None
    N, C = x.shape[0], x.shape[1]
    L = 1
    for s in x.shape[2:]:
        L *= s
    dq = _params(p1, p2, ndim, C, dtype, x.device)
    if dq is None or beta.dim() > ndim:
        return None
    nhwc = is_nhwc(x)
    bshape = padded(beta.shape, ndim)
    Nb, Cb, spatial = bshape[0], bshape[1], bshape[2:]
    b = beta if beta.dtype == dtype else beta.to(dtype)
    if all(s == 1 for s in spatial):
        bmode = BETA_ROW
        b = b.reshape(Nb, Cb, 1).contiguous()
        bsn, bsc = (Cb if Nb > 1 else 0), (1 if Cb > 1 else 0)
    elif Cb == 1:
        bmode = BETA_PIX
        b = b.reshape(bshape)
        if tuple(spatial) != tuple(x.shape[2:]):
            b = b.expand(bshape[:2] + tuple(x.shape[2:]))
        b = b.reshape(Nb, 1, L).contiguous()
        bsn, bsc = (L if Nb > 1 else 0), 0
    else:  # varies over the channels and the pixels: the PyTorch fused function
        return None
    lay = KernelLayout()
    lay.N, lay.C, lay.L, lay.nhwc = N, C, L, nhwc
    lay.d, lay.q = dq
    lay.beta, lay.bmode, lay.bsn, lay.bsc, lay.bshape = b, bmode, bsn, bsc, bshape
    return lay
