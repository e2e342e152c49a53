"""Models: ACON layers (:mod:`.layers`), backbones (:mod:`.backbones`) and the
mapping of the official checkpoints onto them (:mod:`.utils`)."""
from .backbones import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .layers import __all__ as _layers

__all__ = _layers + _backbones
