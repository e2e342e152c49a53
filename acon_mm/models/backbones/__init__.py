"""Backbones with ACON activations, registered in mmengine's ``MODELS``."""
from .resnet_acon import BasicBlockACON, BottleneckACON, ResNetACON
from .shufflenetv2_acon import ShuffleNetV2ACON, ShuffleV2BlockACON

__all__ = [
    'ResNetACON', 'BasicBlockACON', 'BottleneckACON', 'ShuffleNetV2ACON',
    'ShuffleV2BlockACON'
]
