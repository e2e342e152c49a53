"""acon-mm: ACON / meta-ACON and Swish-beta for OpenMMLab.

``import acon_mm`` (or ``custom_imports = dict(imports=['acon_mm'])`` in a config)
registers every module in mmengine's root registries, which mmdet's, mmseg's and
mmpretrain's registries inherit from, and installs the patches listed in
:mod:`acon_mm.patches` (``ACON_MM_NO_PATCHES=1`` turns them off).

Packages, bottom to top (each imports only those before it):
``utils`` -> ``ops`` -> ``models`` -> ``datasets`` -> ``engine`` ->
``analysis`` / ``testing``.
"""
# The subpackages are imported bottom to top, in the layering order above: keep it.
# isort: off
from .version import __version__  # noqa: F401
from . import utils  # noqa: F401,E402
from . import ops  # noqa: F401,E402
from . import models  # noqa: F401,E402
from . import datasets  # noqa: F401,E402
from . import engine  # noqa: F401,E402
from .models import *  # noqa: F401,F403,E402
from .patches import install_patches  # noqa: E402
# isort: on

install_patches()

__all__ = ['__version__'] + models.__all__
