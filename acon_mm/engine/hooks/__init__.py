"""Hooks, one per file, registered in mmengine's ``HOOKS``."""
from .acon_stats_hook import AconStatsHook
from .checkpoint_hook import AconCheckpointHook
from .nonfinite_loss_hook import NonFiniteLossError, NonFiniteLossHook

__all__ = [
    'AconCheckpointHook', 'AconStatsHook', 'NonFiniteLossHook', 'NonFiniteLossError'
]
