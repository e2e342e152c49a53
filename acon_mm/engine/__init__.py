"""Training-time pieces: hooks (:mod:`.hooks`), mmengine's checkpoint I/O made
safe (:mod:`.checkpoint`), the official weight-decay rule
(:mod:`.optimizers`), the input-convention check of pretrained weights
(:mod:`.input_convention`) and what the tools share to set a run up
(:mod:`.runner_utils`)."""
from .checkpoint import find_latest_checkpoint, is_complete_checkpoint
from .hooks import *  # noqa: F401,F403
from .hooks import __all__ as _hooks
from .input_convention import InputConventionError, check_input_convention
from .optimizers import AconOptimWrapperConstructor, official_decay

__all__ = [
    'find_latest_checkpoint', 'is_complete_checkpoint',
    'InputConventionError', 'check_input_convention',
    'AconOptimWrapperConstructor', 'official_decay'
] + _hooks
