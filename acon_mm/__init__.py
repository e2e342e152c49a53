"""acon-mm: ACON / meta-ACON and Swish-beta for OpenMMLab.

``import acon_mm`` (or ``custom_imports = dict(imports=['acon_mm'])`` in a config)
registers every module in mmengine's root registries, which mmdet's and mmseg's
registries inherit from.
"""
from .version import __version__  # noqa: F401
from . import ops  # noqa: F401,E402
from . import activations  # noqa: F401,E402
from . import utils  # noqa: F401,E402
from . import backbones  # noqa: F401,E402
from . import hooks  # noqa: F401,E402
from . import datasets  # noqa: F401,E402
from .activations import *  # noqa: F401,F403,E402
from .backbones import *  # noqa: F401,F403,E402

__all__ = ['__version__'] + activations.__all__ + backbones.__all__
