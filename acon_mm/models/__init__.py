"""Models: ACON layers (:mod:`.layers`), backbones (:mod:`.backbones`), the key
mapping of the official ImageNet checkpoints onto them (:mod:`.official_ckpt`) and
the strict check of ``Pretrained`` checkpoints (:mod:`.utils`).

Everything is registered in mmengine's root ``MODELS`` registry, which the
registries of mmdet, mmseg and mmpretrain inherit from."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers

__all__ = _layers + _backbones
