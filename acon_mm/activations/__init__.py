from .acon import (ACON_TYPES, AconA, AconB, AconC, AconSwitchBN, BaseAcon,
                   MetaAconC, SwishBeta)
from .builder import build_acon_layer
from .conv_module import patch_conv_module

patch_conv_module()

__all__ = [
    'ACON_TYPES', 'AconA', 'AconB', 'AconC', 'AconSwitchBN', 'BaseAcon',
    'MetaAconC', 'SwishBeta', 'build_acon_layer'
]
