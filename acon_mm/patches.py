"""Every change acon-mm makes to another package, installed from here only.

``import acon_mm`` calls :func:`install_patches`, which installs:

=============================  ====================================================
name                           what it changes, and why it cannot be avoided
=============================  ====================================================
``conv_module_acon_width``     mmcv ``ConvModule.__init__`` materialises a lazy
                               ACON ``act_cfg`` with the conv's width
                               (:mod:`acon_mm.models.layers.conv_module`):
                               ``ConvModule`` builds its activation without the
                               channel count, so a neck or head built with
                               ``act_cfg=dict(type='AconC')`` would otherwise get
                               its parameters only at the first forward, after the
                               optimizer and DistributedDataParallel saw the model
``safe_checkpoint_loading``    mmengine's local ``CheckpointLoader`` scheme loads
                               with ``weights_only=True`` and mmengine's own types
                               allowed (:mod:`acon_mm.engine.checkpoint`): on
                               torch >= 2.6 mmengine's plain ``torch.load`` refuses
                               mmengine's own checkpoints (``--resume``,
                               ``load_from``, ``init_cfg`` Pretrained)
=============================  ====================================================

Nothing else is changed in another package: the registry entries acon-mm adds
(layers, backbones, ``AconCheckpointHook``, ``AconStatsHook``, ...) are new names,
never upstream ones replaced, and the project's configs select them
(``default_hooks.checkpoint.type='AconCheckpointHook'``). Resuming from the latest
complete checkpoint is done by ``tools/train.py --resume`` itself
(:func:`acon_mm.engine.find_latest_checkpoint`), not by replacing mmengine's lookup.

Set the environment variable ``ACON_MM_NO_PATCHES=1`` before importing acon_mm
to install none of them (e.g. to compare with stock mmengine/mmcv); the layers
and backbones still work, but a lazy ACON ``act_cfg`` in a ``ConvModule`` then
gets its parameters only at the first forward, and ``--resume`` of an mmengine
checkpoint fails on torch >= 2.6.
"""
import os
from typing import Callable, Dict, List

from .engine.checkpoint import install_safe_checkpoint_loading
from .models.layers.conv_module import patch_conv_module

__all__ = ['PATCHES', 'install_patches', 'patches_disabled']

#: name -> function that installs the patch (each is idempotent)
PATCHES: Dict[str, Callable[[], None]] = {
    'conv_module_acon_width': patch_conv_module,
    'safe_checkpoint_loading': install_safe_checkpoint_loading,
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
