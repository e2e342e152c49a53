"""Functional ACON: one entry point for the whole family.

Every member of the family is the smooth maximum of two linear units,

    f(x) = (p1 - p2) * x * sigmoid(beta * (p1 - p2) * x) + p2 * x,

with ``p1 = 1, p2 = 0`` for ACON-A / Swish-beta, ``p1 = 1, p2 = p`` for ACON-B and
learnable ``p1, p2`` for ACON-C / meta-ACON-C. :func:`acon` is what the layers in
:mod:`acon_mm.models.layers` call.

Which implementation runs is decided in :mod:`acon_mm.ops.dispatch` (the setting
``'auto'``/``'torch'``/``'naive'`` of :func:`~acon_mm.ops.dispatch.set_acon_impl`, the
context manager :func:`~acon_mm.ops.dispatch.acon_impl` or ``ACON_MM_IMPL``, mapped to a
backend per tensor by :func:`~acon_mm.ops.dispatch.acon_backend`):

* ``'cpu'``: the C++ autograd function of the compiled extension
  (:mod:`acon_mm.ops.cpu_ext`, sources in ``acon_mm/ops/csrc``): one C++ call forward,
  one C++ node backward; it saves only the input (plus the per-channel parameters and
  the small beta tensor), recomputes the gate in backward and reduces the parameter
  gradients per channel.
* ``'triton'``: :class:`AconFunction` with the Triton kernels
  (:mod:`acon_mm.ops.triton`), the same saved tensors.
* ``'torch'``: :class:`AconFunction` with PyTorch ops only (same memory, slower); also
  where a compiled kernel does not take the argument shapes (a parameter that is not per
  channel, a beta varying over both the channels and the pixels, e.g. one of the
  input's full shape).
* ``'naive'``: :func:`acon_naive`, the plain autograd formula (as the official code);
  the reference the fused functions are tested against, and what ``torch.compile``
  traces (inductor fuses it itself).

With ``d = p1 - p2``, ``u = d x``, ``s = sigmoid(beta u)`` and
``g = s + u beta s (1 - s)`` the gradients are

    dx = gout (d g + p2),  dp1 = sum gout x g,  dp2 = sum gout x (1 - g),
    dbeta = sum gout u^2 s (1 - s),

the sums running over the dimensions in which the parameter is broadcast. Every place
that writes this formula out is listed in ``docs/kernels.md`` ("Changing the formula:
every place").
"""
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import cpu_ext
from .dispatch import acon_backend
from .layout import BETA_PIX, BETA_ROW, compute_dtype, kernel_layout, padded

__all__ = ['acon', 'acon_naive', 'AconFunction']

_HALF = (torch.float16, torch.bfloat16)


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
    xf = x.float() if dtype in _HALF else x
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


# --------------------------------------------------------------------------
# Kernel backends of AconFunction (the CPU kernels run as the extension's own C++
# autograd function instead, see acon()): each maps (input, layout) to the output in
# the input's dtype and memory format (the input is contiguous or, for the NHWC
# kernels, channels_last), and (grad, input, layout) to ``(dx, dd, dq, dbeta)`` with
# ``dd``/``dq`` the (C,) gradients of the kernel's ``d``-scaled ``p1`` and of ``p2``
# (see AconFunction.backward) and ``dbeta`` either beta-sized (per-row beta) or (N, L)
# (per-pixel beta).
# --------------------------------------------------------------------------
def _triton_fwd(xk: Tensor, lay) -> Tensor:
    from .triton import acon_fwd_triton
    return acon_fwd_triton(xk, lay)


def _triton_bwd(go: Tensor, xk: Tensor, lay):
    """dx and the parameter gradients from the Triton kernel's per-(n, c) sums
    A = sum gout x g, B = sum gout x, Db = sum gout u^2 s (1 - s)."""
    from .triton import acon_bwd_triton
    dx, A, B, Db = acon_bwd_triton(go, xk, lay)
    if lay.bmode == BETA_ROW:  # per-(n, c) -> beta's (Nb, Cb)
        if lay.bshape[0] == 1:
            Db = Db.sum(0, keepdim=True)
        if lay.bshape[1] == 1:
            Db = Db.sum(1, keepdim=True)
        Db = Db.reshape(-1)
    return dx, A.sum(0), (B - A).sum(0), Db


_KERNELS = {'triton': (_triton_fwd, _triton_bwd)}


def _broadcast_params(p1, p2, dtype):
    """(d, q) as broadcastable tensors in ``dtype`` (q is ``None`` for p2 = 0)."""
    if p1 is None and p2 is None:
        return None, None
    q = p2.to(dtype) if p2 is not None else None
    if p1 is None:
        return 1 - q, q
    d = p1.to(dtype) if q is None else p1.to(dtype) - q
    return d, q


def _sum_to(g: Tensor, p: Tensor) -> Tensor:
    """Reduce a broadcast gradient to the shape (and dtype) of parameter ``p``."""
    return g.sum_to_size(padded(p.shape, g.dim())).reshape(p.shape).to(p.dtype)


class AconFunction(torch.autograd.Function):
    """Memory-efficient ACON: saves the input only, recomputes in backward.

    ``AconFunction.apply(x, p1, p2, beta, backend)`` with ``backend`` ``'triton'``
    (CUDA) or ``'torch'`` (PyTorch ops; also used for any other value and where the
    kernel does not support the argument shapes). On CPU, :func:`acon` uses the
    compiled extension's C++ autograd function instead (same saved tensors). Saved for
    backward: ``x`` (as given, no copy), ``p1``, ``p2`` and ``beta``, plus the
    kernels' per-channel ``d``, ``q`` and beta in the kernels' layout
    (:mod:`acon_mm.ops.layout`). A channels_last input runs the NHWC kernels (no
    copy; ``y`` and ``dx`` channels_last); a non-dense one is made contiguous once per
    pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor], beta: Tensor,
                backend: str) -> Tensor:
        dtype = compute_dtype(x)
        lay = kernel_layout(x, p1, p2, beta, dtype) if backend in _KERNELS else None
        if lay is None:
            backend = 'torch'
        ctx.backend = backend
        ctx.layout = lay  # per-channel / beta-sized tensors only, reused in backward
        ctx.save_for_backward(x, p1, p2, beta)
        if backend == 'torch':
            xf = x.detach().to(dtype)
            d, q = _broadcast_params(p1, p2, dtype)
            u = xf if d is None else d * xf
            y = torch.sigmoid(beta.detach().to(dtype) * u).mul_(u)
            if q is not None:
                y = y.add_(q * xf)
            return y.to(x.dtype)
        return _KERNELS[backend][0](_kernel_input(x.detach(), lay), lay)

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        x, p1, p2, beta = ctx.saved_tensors
        need_x, need_p1, need_p2, need_beta = ctx.needs_input_grad[:4]
        dtype = compute_dtype(x)
        dx = dp1 = dp2 = dbeta = None
        if ctx.backend == 'torch':
            xf = x.to(dtype)
            gf = gout.to(dtype)
            bf = beta.to(dtype)
            d, q = _broadcast_params(p1, p2, dtype)
            u = xf if d is None else d * xf
            s = torch.sigmoid(bf * u)
            ss = s * (1 - s)
            g = s + bf * u * ss
            if need_x:
                dgate = g if d is None else d * g
                if q is not None:
                    dgate = dgate + q
                dx = (gf * dgate).to(x.dtype)
            if need_p1 or need_p2:
                gx = gf * xf
                gxg = gx * g
                if need_p1:
                    dp1 = _sum_to(gxg, p1)
                if need_p2:
                    dp2 = _sum_to(gx - gxg, p2)
            if need_beta:
                dbeta = _sum_to(gf * u * u * ss, beta)
            return dx, dp1, dp2, dbeta, None
        lay = ctx.layout
        dxc, dp1c, dp2c, dbc = _KERNELS[ctx.backend][1](gout, _kernel_input(x, lay), lay)
        if need_x:
            # no .view(): autograd adds other gradients of x (e.g. meta-ACON's switch
            # generator) in place only into a tensor that is not a view
            dx = dxc.to(x.dtype) if dxc.shape == x.shape else dxc.reshape(x.shape).to(x.dtype)
        if need_p1:
            dp1 = _channel_grad(dp1c, p1, x.dim())
        if need_p2:
            dp2 = _channel_grad(dp2c, p2, x.dim())
        if need_beta:
            if lay.bmode == BETA_PIX:  # per-pixel beta: (N, L)
                dbeta = _sum_to(dbc.view((lay.N, 1) + tuple(x.shape[2:])), beta)
            elif dbc.numel() == beta.numel():
                dbeta = dbc.view(beta.shape).to(beta.dtype)
            else:  # beta broadcast over dimensions of size one in x
                dbeta = _sum_to(dbc.view(lay.bshape), beta)
        return dx, dp1, dp2, dbeta, None


def _kernel_input(x: Tensor, lay) -> Tensor:
    """``x`` as the kernels take it: as is when contiguous or channels_last (NHWC
    kernels); a non-dense input (a slice) is copied to contiguous, once per pass."""
    return x if lay.nhwc or x.is_contiguous() else x.contiguous()


def _channel_grad(g: Tensor, p: Tensor, ndim: int) -> Tensor:
    """A kernel's (C,) parameter gradient in the shape of ``p`` (per channel or shared)."""
    if g.numel() == p.numel():
        return g.view(p.shape).to(p.dtype)
    return _sum_to(g.view((1, g.numel()) + (1, ) * (ndim - 2)), p)


def _broadcasts_to(shape, target) -> bool:
    if len(shape) > len(target):
        return False
    for s, t in zip(reversed(shape), reversed(target)):
        if s != 1 and s != t:
            return False
    return True


def _check_args(x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor], beta: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f'acon: x must be a Tensor, got {type(x).__name__}')
    for name, t in (('p1', p1), ('p2', p2), ('beta', beta)):
        if t is None:
            if name == 'beta':
                raise TypeError('acon: beta must be a Tensor, got None')
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f'acon: {name} must be a Tensor or None, got {type(t).__name__}')
        if not _broadcasts_to(t.shape, x.shape):
            raise ValueError(f'acon: {name} of shape {tuple(t.shape)} does not broadcast '
                             f'to the input shape {tuple(x.shape)}')


def acon(x: Tensor, p1: Optional[Tensor], p2: Optional[Tensor],
         beta: Tensor) -> Tensor:
    r"""ACON: :math:`(p_1 - p_2) x \sigma(\beta (p_1 - p_2) x) + p_2 x`.

    Args:
        x (Tensor): input of shape (N, C, \*).
        p1 (Tensor | None): broadcastable to ``x`` (typically (1, C, 1, 1));
            ``None`` means 1.
        p2 (Tensor | None): like ``p1``; ``None`` means 0.
        beta (Tensor): switching factor broadcastable to ``x``: (1, 1, 1, 1),
            (1, C, 1, 1), (N, 1, 1, 1), (N, C, 1, 1), (N, 1, H, W), (N, C, H, W)...
            (the compiled kernels take the first five; one varying over both the
            channels and the pixels runs the PyTorch fused function).

    Returns:
        Tensor: shape and dtype of ``x`` (half-precision inputs are computed in
        float32). The implementation follows :func:`~acon_mm.ops.set_acon_impl`,
        mapped to a backend by :func:`~acon_mm.ops.acon_backend`.

    Raises:
        TypeError: ``x`` or ``beta`` is not a Tensor, or ``p1``/``p2`` neither a Tensor
            nor ``None``.
        ValueError: ``p1``, ``p2`` or ``beta`` does not broadcast to ``x``.
    """
    backend = acon_backend(x)
    if backend == 'naive':
        return acon_naive(x, p1, p2, beta)
    _check_args(x, p1, p2, beta)
    if backend == 'cpu':
        # the extension's C++ autograd function; None: arguments it does not take (a
        # p1/p2 not per channel, a beta varying over channels and pixels, ...), which
        # the PyTorch fused function runs
        y = cpu_ext.load_cpu_ext().acon_fused(x, p1, p2, beta)
        if y is not None:
            return y
        backend = 'torch'
    return AconFunction.apply(x, p1, p2, beta, backend)
