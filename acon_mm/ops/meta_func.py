"""Fused meta-ACON-C with the channel switch (CPU): one autograd node for the layer.

meta-ACON-C's channel switch generator is a handful of tiny operations on an
``(N, C, 1, 1)`` map,

.. math::
    \\beta = \\sigma(\\mathrm{bn2}(\\mathrm{fc2}(\\mathrm{bn1}(\\mathrm{fc1}(
    \\mathrm{GAP}(x)))))),\\qquad
    f(x) = (p_1 - p_2) x \\, \\sigma(\\beta (p_1 - p_2) x) + p_2 x.

Run as PyTorch modules they cost about ten operator calls and autograd nodes
forward and as many backward: on a CPU that fixed cost is several times the cost
of ``nn.SiLU`` on a ResNet-50 stage-4 activation. :func:`meta_acon_channel` runs the
whole layer (pooling, the switch network with its BatchNorms, ACON) in one call of
the compiled kernel forward and one backward (:mod:`acon_mm.ops.cpu_kernel`): the
switch network is computed in the input's precision inside (as the modules compute
it), the pooling's gradient is added to ``dx`` in a cache-warm pass, and autograd saves
only the input plus the small switch intermediates. Where the C++ extension
(:mod:`acon_mm.ops.cpu_ext`) is built, the same computation runs as a C++ autograd
function; :class:`MetaAconChannelFunction` (Python, ctypes) is its fallback.

The fused path is taken only where it computes exactly what the modules compute:
CPU, float32/float64, plain 1x1 ``nn.Conv2d`` switch convs, norms that are
``AconSwitchBN`` / ``nn.BatchNorm2d`` / ``nn.Identity``, no hooks on the switch
modules, not under ``torch.compile``/tracing, and the ``'auto'``/``'fused'``
implementation. Everything else (CUDA, SyncBN, GroupNorm, half precision, ...)
returns ``None`` and the layer runs its modules.

BatchNorm semantics follow PyTorch: batch statistics in training (the running
statistics updated with ``momentum``, or the cumulative average for
``momentum=None``, and ``num_batches_tracked`` incremented), running statistics in
eval mode and in ``AconSwitchBN``'s batch-1 fallback.
"""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules import module as _nn_module
from torch.autograd.function import once_differentiable

from . import acon_func
from .acon_func import _SEG, _as_input_layout, _is_compiling
from .cpu_ext import load_cpu_ext
from .cpu_kernel import load_cpu_kernels

__all__ = ['meta_acon_channel']

_FLOATS = (torch.float32, torch.float64)


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


class _NormSpec:
    """How the kernel applies one switch norm (see ``NormSpec`` in the C++ source)."""
    __slots__ = ('mode', 'weight', 'bias', 'rm', 'rv', 'eps', 'factor')

    def __init__(self, mode: int = 0, weight: Optional[Tensor] = None,
                 bias: Optional[Tensor] = None, eps: float = 0.0):
        self.mode, self.weight, self.bias, self.eps = mode, weight, bias, eps
        self.rm = self.rv = None
        self.factor = 0.0

    def args(self) -> tuple:
        return (self.mode, _ptr(self.weight), _ptr(self.bias), _ptr(self.rm),
                _ptr(self.rv), self.eps, self.factor)


_IDENTITY = _NormSpec()  # mode 0 (no norm); never modified


def _ok_tensor(t: Optional[Tensor], dtype) -> bool:
    return t is None or (t.dtype == dtype and t.is_cpu and t.is_contiguous())


def _norm_static(norm: nn.Module, batch_norm_types: tuple) -> Optional[bool]:
    """``False`` for an identity, ``True`` for a BatchNorm the kernel runs, ``None``
    for anything else (checked once per norm module, see :func:`_plan`)."""
    if type(norm) is nn.Identity:
        return False
    if type(norm) in batch_norm_types:
        return True
    return None


def _norm_spec(norm: nn.Module, is_bn: bool, N: int, dtype) -> Optional[_NormSpec]:
    """The kernel's description of ``norm``, or ``None`` if the kernel cannot run it.

    Has no side effect: the caller bumps ``num_batches_tracked`` (see
    :func:`_commit`) once every check has passed.
    """
    if not is_bn:
        return _IDENTITY
    params, buffers = norm._parameters, norm._buffers
    w, b = params.get('weight'), params.get('bias')
    rm, rv = buffers.get('running_mean'), buffers.get('running_var')
    if not (_ok_tensor(w, dtype) and _ok_tensor(b, dtype) and _ok_tensor(rm, dtype)
            and _ok_tensor(rv, dtype)):
        return None
    spec = _NormSpec(0, w, b, float(norm.eps))
    tracking = norm.track_running_stats and rm is not None
    training = norm.training
    use_batch = training or not tracking
    if use_batch and N == 1:
        # AconSwitchBN falls back to its running statistics; nn.BatchNorm2d raises
        # (let the module path raise its own error)
        if tracking and getattr(norm, '_acon_batch1_fallback', False):
            use_batch = False
        else:
            return None
    if use_batch:
        spec.mode = 1
        if training and tracking:
            spec.rm, spec.rv = rm, rv
    else:
        spec.mode = 2
        spec.rm, spec.rv = rm, rv
    return spec


def _stats_args(norm: nn.Module, spec: _NormSpec) -> tuple:
    """``(num_batches_tracked, momentum)`` for the extension, which does :func:`_commit`'s
    bookkeeping itself (momentum ``None`` passed as -1)."""
    if spec.rm is None:
        return None, 0.0
    momentum = norm.momentum
    return norm._buffers.get('num_batches_tracked'), \
        -1.0 if momentum is None else float(momentum)


def _commit(norm: nn.Module, spec: _NormSpec) -> None:
    """PyTorch's ``num_batches_tracked`` bookkeeping and the averaging factor."""
    if spec.mode != 1 or spec.rm is None:
        return
    momentum = norm.momentum
    nbt = norm._buffers.get('num_batches_tracked')
    if nbt is not None:
        nbt.add_(1)
        if momentum is None:
            spec.factor = 1.0 / float(nbt)
            return
    spec.factor = 0.0 if momentum is None else float(momentum)


class MetaAconChannelFunction(torch.autograd.Function):
    """The fused layer; see the module docstring. Inputs: ``x, p1, p2, fc1.weight,
    fc1.bias, bn1.weight, bn1.bias, fc2.weight, fc2.bias, bn2.weight, bn2.bias`` (any
    bias / norm parameter may be ``None``) and the two norm specs."""

    @staticmethod
    def forward(ctx, x, p1, p2, w1, b1, g1, e1, w2, b2, g2, e2, n1: _NormSpec,
                n2: _NormSpec):
        kern = load_cpu_kernels()
        suf = 'f64' if x.dtype == torch.float64 else 'f32'
        xc = x.contiguous()
        N, C = x.shape[0], x.shape[1]
        L = xc.numel() // (N * C)
        H = w1.shape[0]
        q = p2.reshape(C)
        d = p1.reshape(C) - q
        saved = torch.empty(kern.meta_saved_size(N, C, H), dtype=torch.float64)
        beta = torch.empty(N * C, dtype=x.dtype)
        y = torch.empty_like(xc)
        kern.meta_fwd[suf](xc.data_ptr(), y.data_ptr(), N, C, L, H, d.data_ptr(), q.data_ptr(),
                           w1.data_ptr(), _ptr(b1), *n1.args(), w2.data_ptr(), _ptr(b2),
                           *n2.args(), saved.data_ptr(), beta.data_ptr(), _SEG,
                           torch.get_num_threads())
        ctx.save_for_backward(x, p1, p2, w1, w2)
        ctx.norms = (n1, n2)
        ctx.extra = (saved, beta, d, q, H)
        ctx.has = (b1 is not None, g1 is not None, e1 is not None, b2 is not None,
                   g2 is not None, e2 is not None)
        return _as_input_layout(y, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        x, p1, p2, w1, w2 = ctx.saved_tensors
        n1, n2 = ctx.norms
        saved, beta, d, q, H = ctx.extra
        kern = load_cpu_kernels()
        suf = 'f64' if x.dtype == torch.float64 else 'f32'
        xc = x.contiguous()
        go = gout.contiguous()
        if go.dtype != xc.dtype:
            go = go.to(xc.dtype)
        N, C = x.shape[0], x.shape[1]
        L = xc.numel() // (N * C)
        dx = torch.empty_like(xc)
        sizes = (C, C, H * C, H, H, H, C * H, C, C, C)
        grads = torch.zeros(sum(sizes), dtype=xc.dtype)
        ptr, es = grads.data_ptr(), grads.element_size()
        kern.meta_bwd[suf](go.data_ptr(), xc.data_ptr(), dx.data_ptr(), N, C, L, H,
                           d.data_ptr(), q.data_ptr(), w1.data_ptr(), *n1.args(),
                           w2.data_ptr(), *n2.args(), saved.data_ptr(), beta.data_ptr(),
                           ptr, ptr + C * es, ptr + 2 * C * es, _SEG,
                           torch.get_num_threads())
        parts = grads.split(sizes)
        dp1 = parts[0].view(p1.shape)
        dp2 = parts[1].view(p2.shape)
        dw1 = parts[2].view(w1.shape)
        dw2 = parts[6].view(w2.shape)
        hb1, hg1, he1, hb2, hg2, he2 = ctx.has
        db1 = parts[3] if hb1 else None
        dg1 = parts[4] if hg1 else None
        de1 = parts[5] if he1 else None
        db2 = parts[7] if hb2 else None
        dg2 = parts[8] if hg2 else None
        de2 = parts[9] if he2 else None
        dx = dx if dx.shape == x.shape else dx.reshape(x.shape)
        return dx, dp1, dp2, dw1, db1, dg1, de1, dw2, db2, dg2, de2, None, None


def _plain_1x1(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.groups == 1
            and conv.padding in ((0, 0), 'valid') and conv.stride == (1, 1)
            and conv.dilation == (1, 1))


def _plan(owner: nn.Module, fc1, bn1, fc2, bn2, batch_norm_types) -> Optional[tuple]:
    """Type-level checks of the switch modules, cached on ``owner`` (the layer) while it
    keeps the same sub-modules: ``None`` if the kernel cannot run them, else
    ``(bn1 is a BatchNorm, bn2 is a BatchNorm)``."""
    hit = owner.__dict__.get('_acon_fused_plan')
    if hit is not None and hit[0] is fc1 and hit[1] is bn1 and hit[2] is fc2 \
            and hit[3] is bn2 and hit[4] is batch_norm_types:
        return hit[5]
    plan = None
    if _plain_1x1(fc1) and _plain_1x1(fc2):
        s1 = _norm_static(bn1, batch_norm_types)
        s2 = _norm_static(bn2, batch_norm_types)
        if s1 is not None and s2 is not None:
            plan = (s1, s2)
    # plain attribute (not a sub-module, not in the state dict)
    owner.__dict__['_acon_fused_plan'] = (fc1, bn1, fc2, bn2, batch_norm_types, plan)
    return plan


def _has_hooks(fc1: nn.Module, bn1: nn.Module, fc2: nn.Module, bn2: nn.Module) -> bool:
    if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
        return True
    return bool(fc1._forward_hooks or fc1._forward_pre_hooks or bn1._forward_hooks
                or bn1._forward_pre_hooks or fc2._forward_hooks or fc2._forward_pre_hooks
                or bn2._forward_hooks or bn2._forward_pre_hooks)


def meta_acon_channel(owner: nn.Module, x: Tensor, p1: Tensor, p2: Tensor, fc1: nn.Module,
                      bn1: nn.Module, fc2: nn.Module, bn2: nn.Module,
                      batch_norm_types: tuple) -> Optional[Tensor]:
    """meta-ACON-C (channel switch) in one fused call, or ``None`` if it does not apply.

    Args:
        owner (nn.Module): the layer (caches the type-level checks).
        x (Tensor): input (N, C, H, W).
        p1, p2 (Tensor): (1, C, 1, 1) ACON-C parameters.
        fc1, bn1, fc2, bn2 (nn.Module): the switch generator's layers.
        batch_norm_types (tuple): norm classes with ``nn.BatchNorm2d`` semantics the
            kernel may run (a class with the ``_acon_batch1_fallback`` attribute uses
            its running statistics for a training batch of one).

    Returns:
        Tensor | None: the layer's output, or ``None`` (the caller runs its modules).
    """
    dtype = x.dtype
    if dtype not in _FLOATS or not x.is_cpu or x.dim() != 4 or x.numel() == 0 \
            or acon_func._impl not in ('auto', 'fused') or _is_compiling():
        return None
    plan = _plan(owner, fc1, bn1, fc2, bn2, batch_norm_types)
    if plan is None or _has_hooks(fc1, bn1, fc2, bn2) or load_cpu_kernels() is None:
        return None
    C = x.shape[1]
    f1, f2 = fc1._parameters, fc2._parameters
    w1, b1, w2, b2 = f1['weight'], f1.get('bias'), f2['weight'], f2.get('bias')
    for t in (p1, p2, w1, b1, w2, b2):
        if not _ok_tensor(t, dtype):
            return None
    if p1.numel() != C or p2.numel() != C:
        return None
    N = x.shape[0]
    n1 = _norm_spec(bn1, plan[0], N, dtype)
    if n1 is None:
        return None
    n2 = _norm_spec(bn2, plan[1], N, dtype)
    if n2 is None:
        return None
    ext = load_cpu_ext()
    if ext is not None:  # the same function in C++ (no Python autograd overhead)
        # factor -1: the extension does _commit's bookkeeping itself
        nbt1, m1 = _stats_args(bn1, n1)
        nbt2, m2 = _stats_args(bn2, n2)
        return ext.meta_channel(x, p1, p2, w1, b1, n1.weight, n1.bias, w2, b2, n2.weight,
                                n2.bias, n1.rm, n1.rv, n2.rm, n2.rv, n1.mode, n1.eps, -1.0,
                                n2.mode, n2.eps, -1.0, nbt1, nbt2, m1, m2)
    _commit(bn1, n1)
    _commit(bn2, n2)
    return MetaAconChannelFunction.apply(x, p1, p2, w1, b1, n1.weight, n1.bias, w2, b2,
                                         n2.weight, n2.bias, n1, n2)
