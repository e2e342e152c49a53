r"""ResNet with ACON / meta-ACON activations, as an OpenMMLab backbone.

``ResNetACON`` is the network of "Activate or Not: Learning Customized
Activation" (Ma et al., CVPR 2021) in the form mmdet's detectors, mmseg's
segmentors and mmpretrain's classifiers expect of a backbone (``out_indices``,
``frozen_stages``, ``norm_eval``, ``with_cp``, dilation, ...). **Its defaults
reproduce the official ImageNet network** — stride on the first 1x1 conv of a
bottleneck (``style='caffe'``), biased convolutions, a biased 7x7 stem and one
ACON layer after the 3x3 conv of every bottleneck — so checkpoints converted
with ``tools/model_converters/acon_official_to_mm.py`` load with no extra flag.

Bottleneck (``acon_positions='paper'``)::

    x -> conv1 (1x1, stride) -> bn1 -> ReLU (act1)
      -> conv2 (3x3, dilation) -> bn2 -> ACON (acon)
      -> conv3 (1x1) -> bn3 -> (+ downsample(x)) -> ReLU (act3)

with ACON-C :math:`f(x) = (p_1 - p_2) x\,\sigma(\beta (p_1 - p_2) x) + p_2 x` or
any other activation of :func:`acon_mm.models.layers.build_acon_layer`
(``acon_cfg=dict(type='ReLU')`` is the baseline built by the same code).

Stable names of the activation layers (``acon_positions``: where the layer is
``acon_cfg``; everywhere else it is ``nn.ReLU``):

=====================================  ========================  =================
module name                            position                  ``acon_cfg`` when
=====================================  ========================  =================
``stem_act``                           after the 7x7 stem's BN   ``'all'``
``stem.2``, ``stem.5``, ``stem.8``     deep stem                 ``'all'``
``layer{i}.{j}.acon1``                 BasicBlock, after bn1     ``'paper'``, ``'all'``
``layer{i}.{j}.acon2``                 BasicBlock, after the add ``'paper'``, ``'all'``
``layer{i}.{j}.act1``                  Bottleneck, after bn1     ``'all'``
``layer{i}.{j}.acon``                  Bottleneck, after bn2     ``'paper'``, ``'all'``
``layer{i}.{j}.act3``                  Bottleneck, after the add ``'all'``
=====================================  ========================  =================

(``i`` = 1..4, ``j`` = block index; the names match the official checkpoints.)
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmengine.model import Sequential
from mmengine.registry import MODELS
from torch import Tensor

from ..layers import name_acon_layers
from .base import BaseACONBackbone, build_norm, with_switch_norm
from .resnet_blocks import BasicBlockACON, BottleneckACON, _act, check_plugins, stage_plugins

__all__ = ['ResNetACON', 'BasicBlockACON', 'BottleneckACON']

ACON_POSITIONS = ('paper', 'all')


@MODELS.register_module()
class ResNetACON(BaseACONBackbone):
    """ResNet backbone with ACON / meta-ACON activations (Ma et al., CVPR 2021).

    Defaults reproduce the official ImageNet ACON ResNets (stride on the first
    1x1 conv, biased convs, biased 7x7 stem, ACON after each bottleneck's 3x3 conv);
    converted official checkpoints load into ``ResNetACON(depth=50)`` (ACON-C) or
    ``ResNetACON(depth=50, acon_cfg=dict(type='MetaAconC'))`` with no other flag.
    The options follow mmdet's / mmseg's ``ResNet``.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        acon_cfg (dict | None): activation at the ACON positions, built by
            :func:`acon_mm.models.layers.build_acon_layer`: ``AconC`` (default),
            ``MetaAconC``, ``AconA``, ``SwishBeta``, ``AconB``, or ``ReLU`` (the
            baseline, built by the same code path).
        acon_positions (str): ``'paper'`` (default; after the 3x3 conv of each
            bottleneck, both activations of a basic block) or ``'all'`` (every
            activation of the backbone, stem included).
        in_channels (int): input image channels. Default: 3.
        stem_channels (int, optional): stem width; default ``base_channels``.
        base_channels (int): width of the first stage. Default: 64.
        num_stages (int): number of stages, 1..4. Default: 4.
        strides (Sequence[int]): stride of the first block of each stage.
        dilations (Sequence[int]): dilation of each stage.
        contract_dilation (bool): halve the dilation of the first block of a
            dilated stage (mmseg's ResNetV1c/PSPNet). Default: False.
        out_indices (Sequence[int]): stages whose outputs are returned (0-based).
        style (str): ``'caffe'`` (default, official: stride on the 1x1 conv)
            or ``'pytorch'`` (stride on the 3x3 conv).
        deep_stem (bool): three 3x3 convs instead of the 7x7 stem. Default: False.
        avg_down (bool): average-pool then 1x1 conv in the shortcut. Default: False.
        frozen_stages (int): ``-1`` freezes nothing, ``0`` the stem, ``k`` the
            stem and stages 1..k (no gradients, BN in eval mode).
        conv_cfg (dict, optional): conv layer config.
        norm_cfg (dict): norm config, e.g. ``dict(type='BN')``, ``SyncBN``, ``GN``.
        norm_eval (bool): keep every BatchNorm (meta-ACON switch BNs included)
            in eval mode while training. Default: False.
        with_cp (bool): gradient checkpointing of each block. Default: False.
        dcn (dict, optional): deformable 3x3 conv of the bottlenecks, mmdet's
            format, e.g. ``dict(type='DCNv2', deform_groups=1,
            fallback_on_stride=False)`` (:mod:`.resnet_blocks`).
        stage_with_dcn (Sequence[bool]): the stages that get ``dcn``.
        plugins (list[dict], optional): mmdet's plugins, e.g. GCNet's
            ``[dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
            stages=(False, True, True, True), position='after_conv3')]``.
        conv_bias (bool): biased convolutions (official). Default: True.
        zero_init_residual (bool): zero-init the last norm of each block when no
            ``init_cfg`` is given. Default: True.
        switch_norm_cfg (dict, optional): norm of meta-ACON's switch network
            when ``acon_cfg`` gives none; default: follows ``norm_cfg``
            (``BN`` -> ``AconSwitchBN``, ``SyncBN`` -> ``AconSwitchSyncBN``), see
            :func:`acon_mm.models.backbones.base.with_switch_norm`.
        strict_pretrained (bool): refuse a local ``Pretrained`` checkpoint
            whose keys or shapes do not match this backbone (mmengine alone
            only logs them). Default: True.
        pretrained (str, optional): deprecated, use ``init_cfg``.
        init_cfg (dict | list[dict], optional): e.g.
            ``dict(type='Pretrained', checkpoint='resnet50_acon_mm.pth')``.

    Example:
        >>> import torch, acon_mm
        >>> m = ResNetACON(depth=50, out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(o.shape) for o in m(torch.rand(1, 3, 64, 64))]
        [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]
    """

    arch_settings = {
        18: (BasicBlockACON, (2, 2, 2, 2)),
        34: (BasicBlockACON, (3, 4, 6, 3)),
        50: (BottleneckACON, (3, 4, 6, 3)),
        101: (BottleneckACON, (3, 4, 23, 3)),
        152: (BottleneckACON, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 acon_cfg: Optional[dict] = dict(type='AconC'),
                 acon_positions: str = 'paper',
                 in_channels: int = 3,
                 stem_channels: Optional[int] = None,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 contract_dilation: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'caffe',
                 deep_stem: bool = False,
                 avg_down: bool = False,
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 dcn: Optional[dict] = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 plugins: Optional[List[dict]] = None,
                 conv_bias: bool = True,
                 zero_init_residual: bool = True,
                 strict_pretrained: bool = True,
                 switch_norm_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg)
        name = type(self).__name__
        if depth not in self.arch_settings:
            raise KeyError(f'{name}: invalid depth {depth!r}; valid depths are '
                           f'{sorted(self.arch_settings)}')
        if acon_positions not in ACON_POSITIONS:
            raise ValueError(f'{name}: invalid acon_positions {acon_positions!r};'
                             f' valid values are {list(ACON_POSITIONS)}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"{name}: invalid style {style!r}; valid values are "
                             "['pytorch', 'caffe']")
        if not isinstance(num_stages, int) or not 1 <= num_stages <= 4:
            raise ValueError(f'{name}: num_stages must be 1..4, got {num_stages!r}')
        if len(strides) < num_stages or len(dilations) < num_stages:
            raise ValueError(
                f'{name}: strides {tuple(strides)} and dilations '
                f'{tuple(dilations)} need one entry per stage ({num_stages})')
        out_indices = tuple(out_indices)
        for i in out_indices:
            if not isinstance(i, int) or not 0 <= i < num_stages:
                raise ValueError(
                    f'{name}: out_indices entry {i!r} is out of range; valid '
                    f'indices are 0..{num_stages - 1} (one per stage)')
        if not isinstance(frozen_stages, int) or \
                not -1 <= frozen_stages <= num_stages:
            raise ValueError(
                f'{name}: frozen_stages={frozen_stages!r} is out of range; valid '
                f'values are -1 (nothing), 0 (stem) .. {num_stages} (stem and '
                f'stages 1..{num_stages})')
        if dcn is not None and len(stage_with_dcn) != num_stages:
            raise ValueError(f'{name}: stage_with_dcn {tuple(stage_with_dcn)} needs one '
                             f'entry per stage ({num_stages})')
        check_plugins(plugins, num_stages, name)
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'{name}: give init_cfg or pretrained, not both')
            self.init_cfg = dict(type='Pretrained', checkpoint=pretrained)

        self.depth = depth
        self.acon_cfg = with_switch_norm(acon_cfg, norm_cfg, switch_norm_cfg)
        self.acon_positions = acon_positions
        self.stem_channels = stem_channels or base_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = tuple(strides[:num_stages])
        self.dilations = tuple(dilations[:num_stages])
        self.contract_dilation = contract_dilation
        self.out_indices = out_indices
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.dcn = dcn
        self.stage_with_dcn = tuple(stage_with_dcn)
        self.plugins = plugins
        self.conv_bias = conv_bias
        self.zero_init_residual = zero_init_residual
        self.strict_pretrained = strict_pretrained
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]

        block_init_cfg = None
        if self.init_cfg is None:
            self._default_init_cfg()
            if zero_init_residual:
                last = 'bn2' if self.block is BasicBlockACON else 'bn3'
                block_init_cfg = dict(type='Constant', val=0,
                                      override=dict(name=last))

        self._make_stem_layer(in_channels, self.stem_channels)
        self.res_layers = []
        inplanes = self.stem_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            layer_name = f'layer{i + 1}'
            layer = self._make_res_layer(inplanes, planes, num_blocks,
                                         self.strides[i], self.dilations[i],
                                         layer_name, block_init_cfg, stage=i)
            inplanes = planes * self.block.expansion
            self.add_module(layer_name, layer)
            self.res_layers.append(layer_name)
        self.feat_dim = inplanes
        self._freeze_stages()
        name_acon_layers(self)

    # -- construction --------------------------------------------------------
    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        all_pos = self.acon_positions == 'all'
        if self.deep_stem:
            half = stem_channels // 2
            layers = []
            for k, (cin, cout, s) in enumerate(
                    ((in_channels, half, 2), (half, half, 1),
                     (half, stem_channels, 1))):
                layers += [
                    build_conv_layer(self.conv_cfg, cin, cout, 3, stride=s,
                                     padding=1, bias=self.conv_bias),
                    build_norm(self.norm_cfg, cout),
                    _act(self.acon_cfg, cout, f'stem.{3 * k + 2}', all_pos)
                ]
            self.stem = nn.Sequential(*layers)
        else:
            self.conv1 = build_conv_layer(self.conv_cfg, in_channels,
                                          stem_channels, 7, stride=2,
                                          padding=3, bias=self.conv_bias)
            self.bn1 = build_norm(self.norm_cfg, stem_channels)
            self.stem_act = _act(self.acon_cfg, stem_channels, 'stem_act',
                                 all_pos)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def _make_res_layer(self, inplanes: int, planes: int, num_blocks: int,
                        stride: int, dilation: int, layer_name: str,
                        block_init_cfg: Optional[dict], stage: int = 0) -> Sequential:
        block = self.block
        out_ch = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out_ch:
            ds = []
            conv_stride = stride
            if self.avg_down:
                conv_stride = 1
                ds.append(nn.AvgPool2d(kernel_size=stride, stride=stride,
                                       ceil_mode=True, count_include_pad=False))
            ds += [
                build_conv_layer(self.conv_cfg, inplanes, out_ch, 1,
                                 stride=conv_stride, bias=self.conv_bias),
                build_norm(self.norm_cfg, out_ch)
            ]
            downsample = nn.Sequential(*ds)
        first_dilation = dilation // 2 if (self.contract_dilation
                                           and dilation > 1) else dilation
        common = dict(style=self.style, with_cp=self.with_cp,
                      conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                      conv_bias=self.conv_bias, acon_cfg=self.acon_cfg,
                      acon_positions=self.acon_positions,
                      dcn=self.dcn if self.dcn is not None and self.stage_with_dcn[stage]
                      else None,
                      plugins=stage_plugins(self.plugins, stage),
                      init_cfg=block_init_cfg)
        layers = [block(inplanes, planes, stride=stride,
                        dilation=first_dilation, downsample=downsample,
                        where=f'{layer_name}.0', **common)]
        for j in range(1, num_blocks):
            layers.append(block(out_ch, planes, stride=1, dilation=dilation,
                                where=f'{layer_name}.{j}', **common))
        # mmengine's Sequential, so that init_weights reaches the blocks
        return Sequential(*layers)

    def _describe(self) -> str:
        return f'ResNetACON(depth={self.depth}, acon_cfg={self.acon_cfg})'

    # -- dcn and plugins -----------------------------------------------------
    def _pretrained_optional(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """What an ImageNet checkpoint of the plain network cannot fit: the
        DCN offsets and the plugins (absent: they keep their init) and the
        ``conv2.bias`` that mmcv's unbiased ``DCN`` drops (present: not loaded)."""
        absent, dropped = [], []
        for name, m in self.named_modules():
            if isinstance(m, BottleneckACON):
                if hasattr(m.conv2, 'conv_offset'):
                    absent.append(f'{name}.conv2.conv_offset.')
                    if self.conv_bias and getattr(m.conv2, 'bias', None) is None:
                        dropped.append(f'{name}.conv2.bias')
                absent += [f'{name}.{p}.' for p in m.all_plugin_names]
        return tuple(absent), tuple(dropped)

    def init_weights(self) -> None:
        """Initialise; unless a checkpoint is loaded, the DCN offsets start at
        zero and plugins without ``init_weights`` get their own
        ``reset_parameters`` back after the default Kaiming init."""
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        if any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs):
            return
        for m in self.modules():
            if not isinstance(m, BottleneckACON):
                continue
            if hasattr(m.conv2, 'conv_offset'):
                nn.init.zeros_(m.conv2.conv_offset.weight)
                nn.init.zeros_(m.conv2.conv_offset.bias)
            for name in m.all_plugin_names:
                plugin = getattr(m, name)
                # e.g. ContextBlock's zero-initialised last conv (the block
                # starts as the identity), which the Kaiming init overwrote
                if not hasattr(plugin, 'init_weights') and \
                        hasattr(plugin, 'reset_parameters'):
                    plugin.reset_parameters()

    # -- freezing ------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stem = [self.stem] if self.deep_stem else \
            [self.conv1, self.bn1, self.stem_act]
        return stem + [getattr(self, f'layer{i}')
                       for i in range(1, self.frozen_stages + 1)]

    # -- forward -------------------------------------------------------------
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return the outputs of the stages in ``out_indices``.

        Output strides are 4, 8, 16, 32 for stages 0..3 with the default
        ``strides``/``dilations`` (8, 8, 8 for stages 1..3 with PSPNet's
        ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)``).
        """
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.stem_act(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
