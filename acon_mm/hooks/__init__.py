from .acon_stats_hook import AconStatsHook  # noqa: F401

__all__ = ['AconStatsHook']
from .checkpoint_hook import CheckpointHook  # noqa: F401,E402
from .nan_hook import NonFiniteLossError, NonFiniteLossHook  # noqa: F401,E402

__all__ += ['CheckpointHook', 'NonFiniteLossHook', 'NonFiniteLossError']
