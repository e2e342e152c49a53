"""The CIFAR ResNets (He et al., 2016, section 4.2) with ACON or searched
activations: the child network of the activation search.

ResNet-20/32/44/56/110: a 3x3 stem conv of 16 channels (stride 1, no max
pool), then three stages of :math:`n` basic blocks of 16, 32, 64 channels
(strides 1, 2, 2), depth :math:`6n + 2`. "Searching for Activation Functions"
trains ResNet-20 on CIFAR-10 with the candidate in place of *every* ReLU, so
``acon_positions='all'`` is the default here (the stem's activation included).
"""
from typing import Optional, Sequence

from mmcv.cnn import build_conv_layer
from mmengine.registry import MODELS
from torch import nn

from .base import build_norm
from .resnet_acon import ResNetACON
from .resnet_blocks import BasicBlockACON, _act

__all__ = ['ResNetCIFARACON']


@MODELS.register_module()
class ResNetCIFARACON(ResNetACON):
    """CIFAR ResNet (depth 20, 32, 44, 56 or 110) of :class:`ResNetACON`'s blocks.

    Args:
        depth (int): :math:`6n + 2` for :math:`n` blocks per stage.
        acon_cfg (dict | None): the activation, e.g.
            ``dict(type='SearchedActivation', expr='max(x, sigmoid(x))')``,
            ``dict(type='ReLU')``.
        acon_positions (str): ``'all'`` (default: every activation) or
            ``'paper'`` (a basic block's two; the stem's is a ReLU).
        out_indices (Sequence[int]): stages returned; default the last (64
            channels at 1/4 of the input size), for ``GlobalAveragePooling``
            and a ``LinearClsHead`` of 64 inputs.
        **kwargs: the other options of :class:`ResNetACON` (``base_channels``
            16 and ``num_stages`` 3 by default here; ``deep_stem`` is refused).

    Example:
        >>> import torch, acon_mm
        >>> m = ResNetCIFARACON(depth=20, acon_cfg=dict(type='ReLU')).eval()
        >>> [tuple(o.shape) for o in m(torch.rand(2, 3, 32, 32))]
        [(2, 64, 8, 8)]
    """

    arch_settings = {
        20: (BasicBlockACON, (3, 3, 3)),
        32: (BasicBlockACON, (5, 5, 5)),
        44: (BasicBlockACON, (7, 7, 7)),
        56: (BasicBlockACON, (9, 9, 9)),
        110: (BasicBlockACON, (18, 18, 18)),
    }

    def __init__(self, depth: int = 20, acon_cfg: Optional[dict] = dict(type='AconC'),
                 acon_positions: str = 'all', base_channels: int = 16,
                 num_stages: int = 3, strides: Sequence[int] = (1, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1), out_indices: Sequence[int] = (2, ),
                 style: str = 'pytorch', conv_bias: bool = False, **kwargs):
        if kwargs.get('deep_stem'):
            raise ValueError('ResNetCIFARACON: deep_stem is not a CIFAR ResNet option '
                             '(its stem is one 3x3 conv)')
        if num_stages > 3:
            raise ValueError(f'ResNetCIFARACON: num_stages must be 1..3, got {num_stages!r}')
        super().__init__(depth, acon_cfg=acon_cfg, acon_positions=acon_positions,
                         base_channels=base_channels, num_stages=num_stages,
                         strides=strides, dilations=dilations, out_indices=out_indices,
                         style=style, conv_bias=conv_bias, **kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        self.conv1 = build_conv_layer(self.conv_cfg, in_channels, stem_channels, 3,
                                      stride=1, padding=1, bias=self.conv_bias)
        self.bn1 = build_norm(self.norm_cfg, stem_channels)
        self.stem_act = _act(self.acon_cfg, stem_channels, 'stem_act',
                             self.acon_positions == 'all')
        self.maxpool = nn.Identity()

    def _describe(self) -> str:
        return f'ResNetCIFARACON(depth={self.depth}, acon_cfg={self.acon_cfg})'
