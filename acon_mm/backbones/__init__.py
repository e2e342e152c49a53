__all__ = []
from .resnet_acon import BasicBlockACON, BottleneckACON, ResNetACON  # noqa: E402

__all__ += ['ResNetACON', 'BasicBlockACON', 'BottleneckACON']
from .shufflenetv2_acon import ShuffleNetV2ACON, ShuffleV2BlockACON  # noqa: E402

__all__ += ['ShuffleNetV2ACON', 'ShuffleV2BlockACON']
