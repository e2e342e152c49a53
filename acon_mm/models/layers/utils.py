"""Small helpers around ACON layers in a model."""
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .acon import BaseAcon, ChannelActivation


def iter_acon_layers(model: nn.Module) -> Iterator[Tuple[str, BaseAcon]]:
    """Yield ``(name, layer)`` for every ACON layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, BaseAcon):
            yield name, module


def name_acon_layers(model: nn.Module, prefix: str = '') -> None:
    """Record the module path of each ACON layer (and searched activation): its
    error messages name it."""
    for name, module in model.named_modules():
        if not isinstance(module, ChannelActivation):
            continue
        module.layer_name = f'{prefix}.{name}' if prefix and name else (name or prefix)


def acon_params(layer: BaseAcon) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""The two linear units and the switch of any ACON layer, as tensors.

    Every member of the family is :math:`(p_1 - p_2) x \sigma(\beta (p_1 - p_2) x)
    + p_2 x`; this returns detached ``(p1, p2, beta)`` with the implicit values
    filled in: ACON-A / Swish-beta ``p1 = 1, p2 = 0``; ACON-B ``p1 = 1, p2 = p``;
    ACON-C and meta-ACON-C their learned ``p1, p2``. ``beta`` is ``None`` for
    meta-ACON (it is generated from the input). The tensors have the layer's
    parameter shapes (``(1, C, 1, 1)``, or ``(1,)`` for a scalar Swish-beta).

    Raises:
        TypeError: ``layer`` is not an ACON layer of a known parametrisation.
    """
    beta = getattr(layer, 'beta', None)
    beta = beta.detach() if isinstance(beta, Tensor) else None
    if hasattr(layer, 'p1') and hasattr(layer, 'p2'):
        return layer.p1.detach(), layer.p2.detach(), beta
    if hasattr(layer, 'p'):  # ACON-B
        p2 = layer.p.detach()
        return torch.ones_like(p2), p2, beta
    if beta is not None:  # ACON-A / Swish-beta
        return torch.ones_like(beta), torch.zeros_like(beta), beta
    raise TypeError(f'acon_params: unsupported ACON layer {type(layer).__name__} '
                    '(no p1/p2, p or beta parameter)')
