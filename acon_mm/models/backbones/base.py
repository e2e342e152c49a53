"""What the acon-mm backbones share.

:class:`BaseACONBackbone` gives :class:`~acon_mm.models.backbones.ResNetACON`
and :class:`~acon_mm.models.backbones.ShuffleNetV2ACON` one implementation of

* the default initialisation (Kaiming convs, unit norms),
* the strict check of a local ``Pretrained`` checkpoint before mmengine loads
  it (:func:`acon_mm.models.utils.check_pretrained_keys`),
* freezing (``frozen_stages``: no gradients, eval mode) and
* ``train()`` that keeps frozen stages and, with ``norm_eval``, every
  BatchNorm (meta-ACON's switch norms included) in eval mode.

A subclass lists its frozen modules in :meth:`_frozen_modules` and describes
itself for error messages in :meth:`_describe`.
"""
import copy
from typing import Callable, List, Optional, Tuple

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import switch_norm_cfg as switch_norm_cfg_for
from ..utils.pretrained import check_pretrained_keys, pretrained_path

__all__ = [
    'BaseACONBackbone', 'build_norm', 'maybe_checkpoint', 'with_switch_norm'
]

#: the default ``init_cfg`` of the backbones (as mmdet's ResNet)
DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer='Conv2d'),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
]


def build_norm(norm_cfg: dict, channels: int) -> nn.Module:
    """The norm layer of ``norm_cfg`` for ``channels`` (without its name)."""
    return build_norm_layer(norm_cfg, channels)[1]


def with_switch_norm(acon_cfg: Optional[dict], norm_cfg: dict,
                     switch_norm_cfg: Optional[dict] = None) -> Optional[dict]:
    """``acon_cfg`` whose meta-ACON switch norm follows the backbone's norm.

    For ``MetaAconC`` without an explicit ``norm_cfg``: ``switch_norm_cfg`` if
    given, else the backbone's ``norm_cfg`` mapped by
    :func:`acon_mm.models.layers.switch_norm_cfg` (``BN`` -> ``AconSwitchBN``,
    ``SyncBN`` -> ``AconSwitchSyncBN``); other backbone norms (GN, ...) keep
    the official ``AconSwitchBN``. Reason: the switch norm normalises one
    pooled value per image and channel, so with 2 crops per GPU (PSPNet) a
    per-GPU BatchNorm sees 2 values; the backbone's SyncBN sees the whole batch.
    """
    acon_cfg = copy.deepcopy(acon_cfg)
    t = acon_cfg.get('type') if isinstance(acon_cfg, dict) else None
    if getattr(t, '__name__', t) == 'MetaAconC' and 'norm_cfg' not in acon_cfg:
        if switch_norm_cfg is not None:
            acon_cfg['norm_cfg'] = dict(switch_norm_cfg)
        elif isinstance(norm_cfg, dict) and norm_cfg.get('type') in (
                'BN', 'BN2d', 'SyncBN', 'MMSyncBN'):
            acon_cfg['norm_cfg'] = switch_norm_cfg_for(norm_cfg)
    return acon_cfg


def maybe_checkpoint(fn: Callable[[Tensor], Tensor], x: Tensor,
                     with_cp: bool) -> Tensor:
    """``fn(x)``, with gradient checkpointing when ``with_cp`` and training."""
    if with_cp and x.requires_grad:
        return cp.checkpoint(fn, x, use_reentrant=False)
    return fn(x)


class BaseACONBackbone(BaseModule):
    """Base class of the acon-mm backbones (see the module docstring).

    Subclasses set ``frozen_stages``, ``norm_eval`` and ``strict_pretrained``
    in ``__init__``, call :meth:`_freeze_stages` at its end, and implement
    :meth:`_frozen_modules` and :meth:`_describe`.
    """

    frozen_stages: int = -1
    norm_eval: bool = False
    strict_pretrained: bool = True

    def _default_init_cfg(self) -> None:
        """Use :data:`DEFAULT_INIT_CFG` when no ``init_cfg`` was given."""
        if self.init_cfg is None:
            self.init_cfg = [dict(c) for c in DEFAULT_INIT_CFG]

    def _describe(self) -> str:
        """e.g. ``'ResNetACON(depth=50, acon_cfg=...)'`` for error messages."""
        return type(self).__name__

    def _pretrained_optional(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """Key prefixes a pretrained checkpoint may lack (modules added to the
        plain network) and keys it may hold that are not loaded."""
        return (), ()

    def _frozen_modules(self) -> List[nn.Module]:
        """The modules that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """Initialise; a local ``Pretrained`` checkpoint is checked key for key first."""
        path = pretrained_path(self.init_cfg)
        if path is not None and self.strict_pretrained and not self.is_init:
            absent, dropped = self._pretrained_optional()
            check_pretrained_keys(self, path, self._describe(), absent_ok=absent,
                                  unexpected_ok=dropped)
        super().init_weights()

    def train(self, mode: bool = True) -> 'BaseACONBackbone':
        """Train mode that keeps frozen stages and, with ``norm_eval``, BNs in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
