"""Backbones with ACON activations, registered in mmengine's ``MODELS``."""
from .resnet_acon import BasicBlockACON, BottleneckACON, ResNetACON
from .resnet_cifar_acon import ResNetCIFARACON
from .shufflenetv2_acon import ShuffleNetV2ACON, ShuffleV2BlockACON
from .wrapper import ACONBackbone, PerWidthActivation, replace_activations

__all__ = [
    'ResNetACON', 'ResNetCIFARACON', 'BasicBlockACON', 'BottleneckACON', 'ShuffleNetV2ACON',
    'ShuffleV2BlockACON', 'ACONBackbone', 'PerWidthActivation', 'replace_activations'
]
