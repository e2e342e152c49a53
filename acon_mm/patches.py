"""Every change acon-mm makes to mmengine and mmcv, installed from here.

``import acon_mm`` calls :func:`install_patches`, which installs:

=============================  ====================================================
name                           what it changes
=============================  ====================================================
``conv_module_acon_width``     mmcv ``ConvModule.__init__`` materialises a lazy
                               ACON ``act_cfg`` with the conv's width
                               (:mod:`acon_mm.models.layers.conv_module`)
``safe_checkpoint_loading``    mmengine's local ``CheckpointLoader`` loads with
                               ``weights_only=True`` and mmengine's own types
                               allowed (:mod:`acon_mm.engine.checkpoint`)
``atomic_checkpoint_saving``   mmengine's ``LocalBackend.put``/``put_text`` write
                               aside and rename; ``find_latest_checkpoint``
                               never picks a truncated file
=============================  ====================================================

(The registry entries are not patches: acon-mm's ``CheckpointHook`` is
registered under mmengine's own name, see :mod:`acon_mm.engine.hooks`.)

Set the environment variable ``ACON_MM_NO_PATCHES=1`` before importing acon_mm
to install none of them (e.g. to compare with stock mmengine/mmcv); the layers
and backbones still work, but a lazy ACON ``act_cfg`` in a ``ConvModule`` then
gets its parameters only at the first forward, ``--resume`` of an mmengine
checkpoint fails on torch >= 2.6, and checkpoints are written in place.
"""
import os
from typing import Callable, Dict, List

from .engine.checkpoint import (install_atomic_checkpoint_saving,
                                install_safe_checkpoint_loading)
from .models.layers.conv_module import patch_conv_module

__all__ = ['PATCHES', 'install_patches', 'patches_disabled']

#: name -> function that installs the patch (each is idempotent)
PATCHES: Dict[str, Callable[[], None]] = {
    'conv_module_acon_width': patch_conv_module,
    'safe_checkpoint_loading': install_safe_checkpoint_loading,
    'atomic_checkpoint_saving': install_atomic_checkpoint_saving,
}


def patches_disabled() -> bool:
    """Whether ``ACON_MM_NO_PATCHES`` asks for no patches."""
    return os.environ.get('ACON_MM_NO_PATCHES', '0').strip().lower() in (
        '1', 'true', 'yes', 'on')


def install_patches() -> List[str]:
    """Install every patch of :data:`PATCHES` unless ``ACON_MM_NO_PATCHES=1``.

    Returns:
        list[str]: the names installed (empty when disabled).
    """
    if patches_disabled():
        return []
    for install in PATCHES.values():
        install()
    return list(PATCHES)
