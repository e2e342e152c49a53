"""Build an activation layer for a known channel count, with clear errors."""
import copy
import inspect
from typing import Optional

import torch.nn as nn
from mmengine.registry import MODELS

from .acon import ACON_TYPES, ChannelActivation


def build_acon_layer(cfg: Optional[dict], num_channels: int,
                     where: str = '') -> nn.Module:
    """Build the activation described by ``cfg`` for ``num_channels`` channels.

    ACON layers get ``num_channels``; any other registered activation (``ReLU``,
    ``SiLU``, ``GELU``, ...) is built as mmcv would. ``cfg=None`` gives
    ``nn.Identity``.

    Args:
        cfg (dict | None): e.g. ``dict(type='AconC')`` or ``dict(type='ReLU')``.
        num_channels (int): the width of the input.
        where (str): the caller's layer name, used in error messages.

    Raises:
        KeyError: unknown ``type``; the message lists the ACON types.
    """
    if cfg is None:
        return nn.Identity()
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'activation config{" of " + where if where else ""} '
                        f'must be a dict with a "type" key, got {cfg!r}')
    cfg = copy.deepcopy(cfg)
    act_type = cfg['type']
    cls = act_type if inspect.isclass(act_type) else MODELS.get(act_type)
    if cls is None:
        raise KeyError(
            f'unknown activation type {act_type!r}'
            f'{" for " + where if where else ""}; the ACON types are '
            f'{list(ACON_TYPES)}, an expression is '
            f"dict(type='SearchedActivation', expr='max(x, sigmoid(x))'), or any "
            f"activation in the registry, e.g. 'ReLU', 'SiLU', 'GELU'")
    if inspect.isclass(cls) and issubclass(cls, ChannelActivation):
        if cls.__name__ == 'SwishBeta' and not cfg.get('per_channel', False):
            cfg.setdefault('num_channels', num_channels)
        else:
            given = cfg.get('num_channels')
            if given is not None and given != num_channels:
                raise ValueError(
                    f'{act_type} for {where or "this layer"}: num_channels='
                    f'{given} in the config but the layer has {num_channels}')
            cfg['num_channels'] = num_channels
    layer = MODELS.build(cfg)
    if isinstance(layer, ChannelActivation) and where:
        layer.layer_name = where
    return layer
