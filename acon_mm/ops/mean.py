"""A mean whose backward does not materialise a full-size gradient.

``x.mean(dim, keepdim=True)`` backpropagates ``grad.expand(x.shape) / n``: one
full-size tensor written, then added to the input's other gradients (another full
pass). :func:`spatial_mean` returns the same value, but its backward hands autograd
a broadcast *view* of the small ``grad / n``: autograd adds it to the input's other
gradient in place, so meta-ACON's switch generator (global average pooling of the
activation's own input) costs one read pass forward and one add pass backward.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from .utils import is_compiling

__all__ = ['spatial_mean']


class _SpatialMean(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, dims: tuple, dtype) -> Tensor:
        ctx.shape = x.shape
        ctx.in_dtype = x.dtype
        count = 1
        for d in dims:
            count *= x.shape[d]
        ctx.count = count
        return x.mean(dim=dims, keepdim=True, dtype=dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = (grad / ctx.count).to(ctx.in_dtype)
        return g.expand(ctx.shape), None, None


def spatial_mean(x: Tensor, dim: Sequence[int] = (2, 3),
                 dtype: Optional[torch.dtype] = None) -> Tensor:
    """``x.mean(dim, keepdim=True, dtype=dtype)`` with a broadcast-view backward.

    Args:
        x (Tensor): input.
        dim (Sequence[int]): dimensions to average. Default: (2, 3).
        dtype (torch.dtype, optional): accumulation / output dtype, as in
            :meth:`torch.Tensor.mean`.

    Returns:
        Tensor: the mean, with ``keepdim=True``.
    """
    dims = tuple(d % x.dim() for d in dim)
    if is_compiling() or not (torch.is_grad_enabled() and x.requires_grad):
        return x.mean(dim=dims, keepdim=True, dtype=dtype)
    return _SpatialMean.apply(x, dims, dtype)
