"""Small helpers with no dependency on the rest of acon-mm."""
from .config import walk_dicts
from .io import (
    ATOMIC_TMP_PREFIX,
    MMENGINE_CHECKPOINT_GLOBALS,
    UnsafeCheckpointError,
    atomic_save,
    atomic_write,
    format_keys,
    safe_torch_load,
    strip_module_prefix,
)

__all__ = [
    'walk_dicts', 'ATOMIC_TMP_PREFIX', 'MMENGINE_CHECKPOINT_GLOBALS',
    'UnsafeCheckpointError', 'atomic_save', 'atomic_write', 'format_keys',
    'safe_torch_load', 'strip_module_prefix'
]
