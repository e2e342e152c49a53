"""Functional ACON: one entry point for the whole family.

Every member of the family is the smooth maximum of two linear units,

    f(x) = (p1 - p2) * x * sigmoid(beta * (p1 - p2) * x) + p2 * x,

with ``p1 = 1, p2 = 0`` for ACON-A / Swish-beta, ``p1 = 1, p2 = p`` for ACON-B and
learnable ``p1, p2`` for ACON-C / meta-ACON-C. :func:`acon` is what the layers in
:mod:`acon_mm.activations` call; its implementation can be swapped (naive autograd
formula vs. fused kernels) without touching the layers.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ['acon', 'acon_naive']


def acon_naive(x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor],
               beta: Tensor) -> Tensor:
    """ACON written as plain autograd ops (as the official code does).

    Args:
        x (Tensor): input of shape (N, C, *).
        p1 (Tensor | None): broadcastable to ``x``; ``None`` means 1.
        p2 (Tensor | None): broadcastable to ``x``; ``None`` means 0.
        beta (Tensor): switching factor broadcastable to ``x``.

    Returns:
        Tensor: ``(p1 - p2) x sigmoid(beta (p1 - p2) x) + p2 x`` in ``x.dtype``
        (computed in float32 for half-precision inputs).
    """
    dtype = x.dtype
    xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    if p1 is None and p2 is None:
        dpx = xf
    elif p2 is None:
        dpx = p1 * xf
    elif p1 is None:
        dpx = (1 - p2) * xf
    else:
        dpx = (p1 - p2) * xf
    out = dpx * torch.sigmoid(beta * dpx)
    if p2 is not None:
        out = out + p2 * xf
    return out.to(dtype)


def acon(x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor],
         beta: Tensor) -> Tensor:
    """ACON, the implementation used by the layers (see :func:`acon_naive`)."""
    return acon_naive(x, p1, p2, beta)
