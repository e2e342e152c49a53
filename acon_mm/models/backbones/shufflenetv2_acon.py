r"""ShuffleNetV2 with ACON / meta-ACON in every activation, as an OpenMMLab backbone.

The network is the official ImageNet ShuffleNetV2-ACON of "Activate or Not:
Learning Customized Activation" (Ma et al., CVPR 2021), with the same module
names, so converted official checkpoints load with a prefix strip:

* ``first_conv`` = [3x3 conv stride 2 (0), BN (1), ACON (2)], then ``maxpool``
  (3x3, stride 2);
* ``features.{k}``, k = 0..15: the blocks of stage 1 (k = 0..3), stage 2
  (k = 4..11) and stage 3 (k = 12..15); the first block of a stage has stride 2;
* ``conv_last`` = [1x1 conv (0), BN (1), ACON (2)].

Block with stride 1: the input is split by the channel shuffle into
``x_proj`` (even channels) and ``x`` (odd channels); the output is
``concat(x_proj, branch_main(x))``. Block with stride 2:
``concat(branch_proj(x), branch_main(x))``.

``branch_main`` = [1x1 conv (0), BN (1), ACON (2), 3x3 depthwise conv (3), BN (4),
1x1 conv (5), BN (6), ACON (7)]; ``branch_proj`` = [3x3 depthwise conv stride 2 (0),
BN (1), 1x1 conv (2), BN (3), ACON (4)].

Stable names of the ACON layers: ``first_conv.2``, ``features.{k}.branch_main.2``,
``features.{k}.branch_main.7``, ``features.{k}.branch_proj.4`` (k = 0, 4, 12) and
``conv_last.2``.
"""
import copy
import inspect
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor

from ..layers import build_acon_layer, name_acon_layers
from .base import BaseACONBackbone, build_norm, maybe_checkpoint, with_switch_norm

__all__ = ['ShuffleNetV2ACON', 'ShuffleV2BlockACON', 'meta_acon_reduction']


def meta_acon_reduction(widen_factor: float) -> int:
    """The official meta-ACON switch reduction ``r`` of a ShuffleNetV2 width:
    8 at 0.5x, 16 otherwise."""
    return 8 if widen_factor == 0.5 else 16


class ShuffleV2BlockACON(BaseModule):
    """A ShuffleNetV2 unit with ACON after every pointwise conv branch.

    Args:
        in_channels (int): channels of the block's input.
        out_channels (int): channels of the block's output.
        stride (int): 1 (channel split) or 2 (two branches, downsampling).
        conv_cfg (dict, optional): conv layer config.
        norm_cfg (dict): norm layer config.
        conv_bias (bool): biased convolutions (official). Default: True.
        acon_cfg (dict | None): activation config.
        with_cp (bool): gradient checkpointing.
        where (str): module path, used to name the activation layers.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'), conv_bias: bool = True,
                 acon_cfg: Optional[dict] = dict(type='AconC'),
                 with_cp: bool = False, where: str = '',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if stride not in (1, 2):
            raise ValueError(f'ShuffleV2BlockACON {where}: stride must be 1 or 2,'
                             f' got {stride!r}')
        self.stride = stride
        self.with_cp = with_cp
        inp = in_channels if stride == 2 else in_channels // 2
        mid = out_channels // 2
        main_out = out_channels - inp
        self.branch_main = nn.Sequential(
            build_conv_layer(conv_cfg, inp, mid, 1, bias=conv_bias),
            build_norm(norm_cfg, mid),
            build_acon_layer(acon_cfg, mid, where=f'{where}.branch_main.2'),
            build_conv_layer(conv_cfg, mid, mid, 3, stride=stride, padding=1,
                             groups=mid, bias=conv_bias),
            build_norm(norm_cfg, mid),
            build_conv_layer(conv_cfg, mid, main_out, 1, bias=conv_bias),
            build_norm(norm_cfg, main_out),
            build_acon_layer(acon_cfg, main_out,
                             where=f'{where}.branch_main.7'),
        )
        if stride == 2:
            self.branch_proj = nn.Sequential(
                build_conv_layer(conv_cfg, inp, inp, 3, stride=2, padding=1,
                                 groups=inp, bias=conv_bias),
                build_norm(norm_cfg, inp),
                build_conv_layer(conv_cfg, inp, inp, 1, bias=conv_bias),
                build_norm(norm_cfg, inp),
                build_acon_layer(acon_cfg, inp, where=f'{where}.branch_proj.4'),
            )
        else:
            self.branch_proj = None

    @staticmethod
    def channel_split(x: Tensor) -> Tuple[Tensor, Tensor]:
        """The official shuffle-and-split: (even channels, odd channels)."""
        return x[:, 0::2], x[:, 1::2]

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x):
            if self.stride == 1:
                x_proj, x_main = self.channel_split(x)
                return torch.cat((x_proj, self.branch_main(x_main)), dim=1)
            return torch.cat((self.branch_proj(x), self.branch_main(x)), dim=1)

        return maybe_checkpoint(_inner_forward, x, self.with_cp)


@MODELS.register_module()
class ShuffleNetV2ACON(BaseACONBackbone):
    """ShuffleNetV2 backbone with ACON / meta-ACON in every activation.

    Args:
        widen_factor (float): 0.5, 1.0, 1.5 or 2.0.
        acon_cfg (dict | None): activation of every position, built by
            :func:`acon_mm.models.layers.build_acon_layer` (``AconC`` default,
            ``MetaAconC``, ``AconA``, ``SwishBeta``, ``AconB``, ``ReLU``).
            For ``MetaAconC`` without an explicit ``r``, ``r = 8`` at 0.5x and
            16 otherwise (as the official networks).
        out_indices (Sequence[int]): outputs among (stage 1, stage 2, stage 3,
            ``conv_last``) = (0, 1, 2, 3); output strides 8, 16, 32, 32.
        frozen_stages (int): ``-1`` nothing, ``0`` ``first_conv``, ``k`` (1..4)
            ``first_conv`` and the first ``k`` of (stage 1, stage 2, stage 3,
            ``conv_last``).
        conv_cfg (dict, optional): conv layer config.
        norm_cfg (dict): norm config (BN, SyncBN, GN, ...).
        norm_eval (bool): keep every BatchNorm in eval mode while training.
        with_cp (bool): gradient checkpointing of each block.
        conv_bias (bool): biased convolutions (official). Default: True.
        in_channels (int): input image channels. Default: 3.
        switch_norm_cfg (dict, optional): norm of meta-ACON's switch network
            when ``acon_cfg`` gives none; default: follows ``norm_cfg``
            (``BN`` -> ``AconSwitchBN``, ``SyncBN`` -> ``AconSwitchSyncBN``), see
            :func:`acon_mm.models.backbones.base.with_switch_norm`.
        strict_pretrained (bool): refuse a local ``Pretrained`` checkpoint
            whose keys or shapes do not match this backbone (mmengine alone
            only logs them). Default: True.
        init_cfg (dict | list[dict], optional): e.g. a ``Pretrained`` config.
    """

    #: widen factor -> (stem, stage 1, stage 2, stage 3, conv_last) channels
    arch_settings = {
        0.5: (24, 48, 96, 192, 1024),
        1.0: (24, 116, 232, 464, 1024),
        1.5: (24, 176, 352, 704, 1024),
        2.0: (24, 244, 488, 976, 2048),
    }
    stage_repeats = (4, 8, 4)

    def __init__(self,
                 widen_factor: float = 1.0,
                 acon_cfg: Optional[dict] = dict(type='AconC'),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 conv_bias: bool = True,
                 in_channels: int = 3,
                 strict_pretrained: bool = True,
                 switch_norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg)
        name = type(self).__name__
        if widen_factor not in self.arch_settings:
            raise ValueError(
                f'{name}: invalid widen_factor {widen_factor!r}; valid values '
                f'are {sorted(self.arch_settings)}')
        out_indices = tuple(out_indices)
        for i in out_indices:
            if not isinstance(i, int) or not 0 <= i <= 3:
                raise ValueError(
                    f'{name}: out_indices entry {i!r} is out of range; valid '
                    'indices are 0..3 (stage 1, stage 2, stage 3, conv_last)')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ValueError(
                f'{name}: frozen_stages={frozen_stages!r} is out of range; valid '
                'values are -1 (nothing), 0 (first_conv), 1..4 (first_conv and '
                'stage 1, 2, 3, conv_last in turn)')
        acon_cfg = copy.deepcopy(acon_cfg)
        if isinstance(acon_cfg, dict):
            t = acon_cfg.get('type')
            t_name = t.__name__ if inspect.isclass(t) else t
            if t_name == 'MetaAconC' and 'r' not in acon_cfg:
                acon_cfg['r'] = meta_acon_reduction(widen_factor)
        self.widen_factor = widen_factor
        acon_cfg = with_switch_norm(acon_cfg, norm_cfg, switch_norm_cfg)
        self.acon_cfg = acon_cfg
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.strict_pretrained = strict_pretrained
        self._default_init_cfg()

        stem, *stage_channels, last = self.arch_settings[widen_factor]
        self.stage_channels = tuple(stage_channels)
        self.out_channels = tuple(stage_channels) + (last, )
        self.first_conv = nn.Sequential(
            build_conv_layer(conv_cfg, in_channels, stem, 3, stride=2,
                             padding=1, bias=conv_bias),
            build_norm(norm_cfg, stem),
            build_acon_layer(acon_cfg, stem, where='first_conv.2'),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks = []
        self.stage_ranges = []
        inp = stem
        for repeats, out in zip(self.stage_repeats, stage_channels):
            start = len(blocks)
            for i in range(repeats):
                k = len(blocks)
                blocks.append(
                    ShuffleV2BlockACON(inp, out, stride=2 if i == 0 else 1,
                                       conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                       conv_bias=conv_bias, acon_cfg=acon_cfg,
                                       with_cp=with_cp,
                                       where=f'features.{k}'))
                inp = out
            self.stage_ranges.append((start, len(blocks)))
        self.features = nn.Sequential(*blocks)
        self.conv_last = nn.Sequential(
            build_conv_layer(conv_cfg, inp, last, 1, bias=conv_bias),
            build_norm(norm_cfg, last),
            build_acon_layer(acon_cfg, last, where='conv_last.2'),
        )
        self._freeze_stages()
        name_acon_layers(self)

    def _describe(self) -> str:
        return (f'ShuffleNetV2ACON(widen_factor={self.widen_factor}, '
                f'acon_cfg={self.acon_cfg})')

    def _stage_modules(self, i: int):
        """Modules of output ``i`` (0..2 the stages, 3 ``conv_last``)."""
        if i == 3:
            return [self.conv_last]
        start, end = self.stage_ranges[i]
        return [self.features[k] for k in range(start, end)]

    def _frozen_modules(self) -> List[nn.Module]:
        frozen = [self.first_conv] if self.frozen_stages >= 0 else []
        for i in range(self.frozen_stages):
            frozen += self._stage_modules(i)
        return frozen

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return the outputs listed in ``out_indices`` (strides 8, 16, 32, 32)."""
        x = self.maxpool(self.first_conv(x))
        outs = []
        for i, (start, end) in enumerate(self.stage_ranges):
            for k in range(start, end):
                x = self.features[k](x)
            if i in self.out_indices:
                outs.append(x)
        if 3 in self.out_indices:
            outs.append(self.conv_last(x))
        return tuple(outs)
