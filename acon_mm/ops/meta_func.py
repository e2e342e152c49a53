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
whole layer (pooling, the switch network with its BatchNorms, ACON) as one C++
autograd function of the compiled extension (:mod:`acon_mm.ops.cpu_ext`, kernel in
``csrc/common/acon_meta_kernel.h``): one call forward and one node backward. The
switch network is computed in the input's precision inside (as the modules compute
it), the pooling's gradient is added to ``dx`` in a cache-warm pass, and autograd saves
only the input plus the small switch intermediates. Without the extension the layer
runs its modules (with the fused ACON op).

The fused path is taken only where it computes exactly what the modules compute: the
backend :func:`acon_mm.ops.dispatch.acon_backend` chooses for the input is ``'cpu'``
(the ``'auto'`` setting, a CPU tensor, the extension built, not under
``torch.compile``/tracing), the input is float32/float64, the switch convs are plain
1x1 ``nn.Conv2d``, the norms ``AconSwitchBN`` / ``nn.BatchNorm2d`` / ``nn.Identity``,
and no hooks sit on the switch modules. Everything else (CUDA, SyncBN, GroupNorm,
half precision, ...) returns ``None`` and the layer runs its modules.

BatchNorm semantics follow PyTorch: batch statistics in training (the running
statistics updated with ``momentum``, or the cumulative average for
``momentum=None``, and ``num_batches_tracked`` incremented), running statistics in
eval mode and in ``AconSwitchBN``'s batch-1 fallback.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules import module as _nn_module

from . import cpu_ext
from .dispatch import acon_backend

__all__ = ['meta_acon_channel']

_FLOATS = (torch.float32, torch.float64)


class _NormSpec:
    """How the kernel applies one switch norm (``NormSpec`` in
    ``csrc/common/acon_meta_kernel.h``): ``mode`` 0 none, 1 batch statistics (the
    running ones ``rm``/``rv`` updated if given), 2 running statistics."""
    __slots__ = ('mode', 'weight', 'bias', 'rm', 'rv', 'eps')

    def __init__(self, mode: int = 0, weight: Optional[Tensor] = None,
                 bias: Optional[Tensor] = None, eps: float = 0.0):
        self.mode, self.weight, self.bias, self.eps = mode, weight, bias, eps
        self.rm = self.rv = None


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

    Has no side effect: the extension bumps ``num_batches_tracked`` (see
    :func:`_stats_args`) once every check has passed.
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


def _stats_args(norm: nn.Module, spec: _NormSpec) -> Tuple[Optional[Tensor], float]:
    """``(num_batches_tracked, momentum)`` for the extension, which does PyTorch's
    BatchNorm bookkeeping (``num_batches_tracked += 1``, the averaging factor
    ``momentum`` or ``1 / num_batches_tracked`` for ``momentum=None``, passed as -1)."""
    if spec.rm is None:
        return None, 0.0
    momentum = norm.momentum
    return norm._buffers.get('num_batches_tracked'), \
        -1.0 if momentum is None else float(momentum)


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
    if dtype not in _FLOATS or x.dim() != 4 or x.numel() == 0 or acon_backend(x) != 'cpu':
        return None
    plan = _plan(owner, fc1, bn1, fc2, bn2, batch_norm_types)
    if plan is None or _has_hooks(fc1, bn1, fc2, bn2):
        return None
    ext = cpu_ext.load_cpu_ext()  # built: acon_backend said 'cpu'
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
    nbt1, m1 = _stats_args(bn1, n1)
    nbt2, m2 = _stats_args(bn2, n2)
    return ext.meta_channel(x, p1, p2, w1, b1, n1.weight, n1.bias, w2, b2, n2.weight,
                            n2.bias, n1.rm, n1.rv, n2.rm, n2.rv, n1.mode, n1.eps, n2.mode,
                            n2.eps, nbt1, nbt2, m1, m2)
