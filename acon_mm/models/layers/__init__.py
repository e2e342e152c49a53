"""The ACON activation layers, registered in mmengine's ``MODELS``."""
from .acon import (
    ACON_TYPES,
    AconA,
    AconB,
    AconC,
    AconSwitchBN,
    AconSwitchSyncBN,
    BaseAcon,
    ChannelActivation,
    MetaAconC,
    SwishBeta,
    switch_norm_cfg,
)
from .acon_variants import HardAconC, HardMetaAconC, MetaAconCNoBN, hard_acon
from .builder import build_acon_layer
from .searched import SearchedActivation
from .utils import acon_params, iter_acon_layers, name_acon_layers

__all__ = [
    'ACON_TYPES', 'AconA', 'AconB', 'AconC', 'AconSwitchBN',
    'AconSwitchSyncBN', 'switch_norm_cfg', 'BaseAcon', 'ChannelActivation', 'SearchedActivation',
    'MetaAconC', 'SwishBeta', 'HardAconC', 'HardMetaAconC', 'MetaAconCNoBN', 'hard_acon',
    'build_acon_layer', 'acon_params',
    'iter_acon_layers', 'name_acon_layers'
]
