"""Training-time pieces: hooks (:mod:`.hooks`), mmengine's checkpoint I/O made
safe (:mod:`.checkpoint`) and what the tools share to set a run up
(:mod:`.runner_utils`)."""
from .checkpoint import (find_latest_checkpoint,
                         install_atomic_checkpoint_saving,
                         install_safe_checkpoint_loading,
                         is_complete_checkpoint)
from .hooks import *  # noqa: F401,F403
from .hooks import __all__ as _hooks

__all__ = [
    'find_latest_checkpoint', 'install_atomic_checkpoint_saving',
    'install_safe_checkpoint_loading', 'is_complete_checkpoint'
] + _hooks
