"""Small helpers around ACON layers in a model."""
from typing import Iterator, Tuple

import torch.nn as nn

from ..activations import BaseAcon


def iter_acon_layers(model: nn.Module) -> Iterator[Tuple[str, BaseAcon]]:
    """Yield ``(name, layer)`` for every ACON layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, BaseAcon):
            yield name, module


def name_acon_layers(model: nn.Module, prefix: str = '') -> None:
    """Record each ACON layer's module path (used in its error messages)."""
    for name, module in iter_acon_layers(model):
        module.layer_name = f'{prefix}.{name}' if prefix and name else (name or prefix)
