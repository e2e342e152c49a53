"""The norm layers of meta-ACON's switch generator.

The switch generator normalises a globally pooled ``(N, C, 1, 1)`` map: one
value per image and channel. Two consequences shape these layers:

* with one image per GPU there are no batch statistics at all
  (``nn.BatchNorm2d`` raises): :class:`AconSwitchBN` and
  :class:`AconSwitchSyncBN` then normalise with their running statistics;
* with few images per GPU (PSPNet's recipe: 2 crops/GPU) per-GPU statistics
  come from 2 values per channel, far too few, and the running statistics
  used at test time are as noisy: the switch norm should be synchronised like
  the backbone's own norms (``norm_cfg=SyncBN``), i.e.
  :class:`AconSwitchSyncBN`. :func:`switch_norm_cfg` gives the switch norm for
  a backbone's ``norm_cfg``.

Parameters and buffers are ``BatchNorm2d``'s, so the official checkpoints'
``bn1``/``bn2`` load unchanged.
"""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

__all__ = ['AconSwitchBN', 'AconSwitchSyncBN', 'SWITCH_NORM_TYPES',
           'switch_norm_cfg']


@MODELS.register_module()
class AconSwitchBN(nn.BatchNorm2d):
    """BatchNorm2d for meta-ACON's switch generator that also trains at batch 1.

    The switch generator normalises a globally pooled ``(N, C, 1, 1)`` map. With
    one image per GPU that is one value per channel, where batch statistics do
    not exist and ``nn.BatchNorm2d`` raises. This layer then normalises with its
    running statistics (without updating them), exactly as in eval mode;
    otherwise it is ``nn.BatchNorm2d``, with the same parameters and buffers, so
    the official checkpoints' ``bn1``/``bn2`` load unchanged.
    """

    #: the fused meta-ACON kernel (acon_mm.ops.meta_func) mirrors the batch-1 fallback
    _acon_batch1_fallback = True

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.track_running_stats and \
                x.numel() // x.shape[1] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var,
                                self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


@MODELS.register_module()
class AconSwitchSyncBN(nn.SyncBatchNorm):
    """SyncBatchNorm for meta-ACON's switch generator; also trains at batch 1.

    Why the switch norm should be synchronised: it normalises the globally
    pooled ``(N, C, 1, 1)`` map, one value per image and channel. With the
    PSPNet recipe's 2 crops per GPU a per-GPU BatchNorm estimates mean and
    variance from **2 values** per channel (its running statistics, used at
    test time, are equally noisy); synchronised over 4 GPUs it has 8, as the
    rest of the backbone (``norm_cfg=SyncBN``). Hence the switch norm follows
    the backbone's ``norm_cfg`` (:func:`switch_norm_cfg`).

    When nothing can be synchronised (no process group, a world of one, or a
    CPU tensor, e.g. a gloo run on CPU) it is a per-process BatchNorm; then a
    batch holding a single value per channel is normalised with the running
    statistics, as :class:`AconSwitchBN` does. Parameters and buffers are
    ``BatchNorm2d``'s, so the official ``bn1``/``bn2`` tensors load unchanged.
    The fused CPU meta-ACON kernel does not run SyncBN (its norm types are
    exact: ``AconSwitchBN``, ``nn.BatchNorm2d``), so a layer with this norm
    runs its modules.
    """

    def _syncs(self, x: Tensor) -> bool:
        import torch.distributed as dist
        if not x.is_cuda or not (dist.is_available() and dist.is_initialized()):
            return False
        group = self.process_group or dist.group.WORLD
        return dist.get_world_size(group) > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.track_running_stats and \
                x.numel() // x.shape[1] == 1 and not self._syncs(x):
            return F.batch_norm(x, self.running_mean, self.running_var,
                                self.weight, self.bias, False, 0.0, self.eps)
        if self.training and not self._syncs(x):
            # per-process statistics: a CPU tensor cannot be synchronised
            # (nn.SyncBatchNorm raises), and a world of one has nothing to sync
            return nn.BatchNorm2d.forward(self, x)
        return super().forward(x)


#: a backbone norm type -> the switch-generator norm that replaces it
SWITCH_NORM_TYPES = {
    'BN': 'AconSwitchBN', 'BN2d': 'AconSwitchBN',
    'SyncBN': 'AconSwitchSyncBN', 'MMSyncBN': 'AconSwitchSyncBN',
}


def switch_norm_cfg(norm_cfg: Optional[dict]) -> Optional[dict]:
    """The switch-generator norm for a backbone's (or a user's) ``norm_cfg``.

    ``BN`` becomes :class:`AconSwitchBN` and ``SyncBN`` :class:`AconSwitchSyncBN`
    (the same statistics, plus the batch-1 fallback; ``eps``, ``momentum``,
    ``requires_grad`` are kept); any other norm (``GN``, ``AconSwitchBN``...)
    is used as it is; ``None`` stays ``None`` (no norm).
    """
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    t = cfg.get('type')
    if isinstance(t, str) and t in SWITCH_NORM_TYPES:
        cfg['type'] = SWITCH_NORM_TYPES[t]
    return cfg
