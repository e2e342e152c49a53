from .checkpoint import (MMENGINE_CHECKPOINT_GLOBALS, UnsafeCheckpointError,
                         install_safe_checkpoint_loading, safe_torch_load)
from .misc import iter_acon_layers, name_acon_layers

install_safe_checkpoint_loading()

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError',
    'install_safe_checkpoint_loading', 'safe_torch_load', 'iter_acon_layers',
    'name_acon_layers'
]
