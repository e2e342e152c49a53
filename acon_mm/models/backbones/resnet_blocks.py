r"""The blocks of :class:`~acon_mm.models.backbones.ResNetACON`, and mmdet's
``dcn`` / ``plugins`` options for them.

The options follow mmdet's ``ResNet``/``Bottleneck`` (mmdet 3.3,
``mmdet/models/backbones/resnet.py``), so a stock config that sets them runs with
only ``backbone.type`` changed:

* ``dcn`` (e.g. ``dict(type='DCNv2', deform_groups=1, fallback_on_stride=False)``)
  makes each bottleneck's 3x3 ``conv2`` a deformable conv of mmcv (``DCN``:
  ``DeformConv2dPack``, ``DCNv2``: ``ModulatedDeformConv2dPack``) in the stages
  of ``stage_with_dcn``. ``fallback_on_stride=True`` keeps a plain conv where
  ``conv2`` is strided (what the name says; mmdet 3.3 keeps a plain conv in
  every block then). mmcv's ``DCN`` has no bias: its ``conv2`` is unbiased even
  with ``conv_bias=True``, and a converted official checkpoint's ``conv2.bias``
  of those blocks is not loaded (the strict check allows it). The offsets start
  at zero (a deformable conv starts as the plain one), also when the default
  Kaiming init covers every ``Conv2d``.
* ``plugins``: ``[dict(cfg=..., position=..., stages=(bool, ...)), ...]``, each
  ``cfg`` built by mmcv's ``build_plugin_layer`` (``ContextBlock`` of GCNet,
  ``GeneralizedAttention``, ``NonLocal2d``, ...) with the channels at its
  ``position`` — ``'after_conv1'`` (after ``act1``), ``'after_conv2'`` (after
  the ACON layer) or ``'after_conv3'`` (after ``bn3``, before the shortcut add)
  — under mmdet's module names (``context_block``, ``gen_attention_block``, ...).

As in mmdet, only bottlenecks take them: a basic block (depth 18/34) refuses.
"""
from typing import List, Optional, Sequence

import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_plugin_layer
from mmengine.model import BaseModule
from torch import Tensor

from ..layers import build_acon_layer
from .base import build_norm, maybe_checkpoint

__all__ = ['BasicBlockACON', 'BottleneckACON', 'PLUGIN_POSITIONS', 'stage_plugins']

PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')
_PLUGIN_KEYS = ('cfg', 'position', 'stages')


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _act(acon_cfg: Optional[dict], channels: int, where: str,
         use_acon: bool) -> nn.Module:
    """``acon_cfg`` at an ACON position, an in-place ReLU elsewhere."""
    if use_acon:
        return build_acon_layer(acon_cfg, channels, where=where)
    return _relu()


def check_plugins(plugins: Optional[Sequence[dict]], num_stages: int, where: str) -> None:
    """Refuse a ``plugins`` list that is not mmdet's format, naming the entry."""
    if plugins is None:
        return
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'{where}: plugins must be a list of dicts, got {plugins!r}')
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get('cfg'), dict):
            raise TypeError(f"{where}: plugins[{i}] must be a dict with a 'cfg' dict "
                            f'(mmdet format), got {p!r}')
        extra = sorted(set(p) - set(_PLUGIN_KEYS))
        if extra:
            raise ValueError(f'{where}: plugins[{i}] has unknown key(s) {extra}; '
                             f'valid keys are {list(_PLUGIN_KEYS)}')
        if p.get('position') not in PLUGIN_POSITIONS:
            raise ValueError(f'{where}: plugins[{i}] position {p.get("position")!r} does '
                             f'not exist; valid positions are {list(PLUGIN_POSITIONS)}')
        stages = p.get('stages')
        if stages is not None and len(stages) != num_stages:
            raise ValueError(f'{where}: plugins[{i}] stages {tuple(stages)} needs one '
                             f'entry per stage ({num_stages})')


def stage_plugins(plugins: Optional[Sequence[dict]], stage: int) -> Optional[List[dict]]:
    """The entries of ``plugins`` that apply to stage ``stage`` (0-based),
    without ``stages`` (mmdet's ``ResNet.make_stage_plugins``)."""
    if plugins is None:
        return None
    out = []
    for p in plugins:
        p = dict(p)
        stages = p.pop('stages', None)
        if stages is None or stages[stage]:
            out.append(p)
    return out


class BasicBlockACON(BaseModule):
    """ResNet basic block (two 3x3 convs); both activations are ``acon_cfg``.

    ``conv1`` (3x3, stride, dilation) -> ``bn1`` -> ``acon1`` -> ``conv2`` (3x3)
    -> ``bn2`` -> add shortcut -> ``acon2``.

    Args:
        inplanes (int): input channels.
        planes (int): output channels (expansion 1).
        stride (int): stride of ``conv1``.
        dilation (int): dilation (and padding) of ``conv1``.
        downsample (nn.Module, optional): shortcut projection.
        style (str): ignored for basic blocks (kept for a common signature).
        with_cp (bool): gradient checkpointing of the block.
        conv_cfg (dict, optional): conv layer config.
        norm_cfg (dict): norm layer config.
        conv_bias (bool): biased convolutions.
        acon_cfg (dict, optional): activation config.
        acon_positions (str): ``'paper'`` or ``'all'`` (same for basic blocks).
        dcn, plugins: not supported by basic blocks (as mmdet's ``BasicBlock``):
            given, they are refused.
        where (str): module path, used in error messages.
        init_cfg (dict, optional): initialisation config.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 dilation: int = 1, downsample: Optional[nn.Module] = None,
                 style: str = 'caffe', with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'), conv_bias: bool = True,
                 acon_cfg: Optional[dict] = dict(type='AconC'),
                 acon_positions: str = 'paper', dcn: Optional[dict] = None,
                 plugins: Optional[List[dict]] = None, where: str = '',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        for key, value in (('dcn', dcn), ('plugins', plugins)):
            if value:
                raise ValueError(
                    f'{where or "BasicBlockACON"}: {key} needs bottleneck blocks '
                    '(depth 50, 101, 152), as mmdet\'s ResNet: a basic block '
                    f'(depth 18/34) takes none, got {key}={value!r}')
        self.with_cp = with_cp
        self.conv1 = build_conv_layer(conv_cfg, inplanes, planes, 3,
                                      stride=stride, padding=dilation,
                                      dilation=dilation, bias=conv_bias)
        self.bn1 = build_norm(norm_cfg, planes)
        self.acon1 = _act(acon_cfg, planes, f'{where}.acon1', True)
        self.conv2 = build_conv_layer(conv_cfg, planes, planes, 3, padding=1,
                                      bias=conv_bias)
        self.bn2 = build_norm(norm_cfg, planes)
        self.acon2 = _act(acon_cfg, planes, f'{where}.acon2', True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x):
            identity = x
            out = self.acon1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return out + identity

        return self.acon2(maybe_checkpoint(_inner_forward, x, self.with_cp))


class BottleneckACON(BaseModule):
    """ResNet bottleneck (expansion 4) with ACON after the 3x3 conv.

    ``conv1`` (1x1) -> ``bn1`` -> ``act1`` [after_conv1 plugins] -> ``conv2``
    (3x3, dilation; deformable with ``dcn``) -> ``bn2`` -> ``acon`` [after_conv2]
    -> ``conv3`` (1x1) -> ``bn3`` [after_conv3] -> add shortcut -> ``act3``.
    ``style='caffe'`` (the official network) puts the stride on ``conv1``,
    ``style='pytorch'`` on ``conv2``. ``act1``/``act3`` are ``acon_cfg`` only with
    ``acon_positions='all'``, ``nn.ReLU`` otherwise.

    Args: see :class:`BasicBlockACON`; ``dcn`` and ``plugins`` (this block's
    entries, without ``stages``) as in the module docstring.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 dilation: int = 1, downsample: Optional[nn.Module] = None,
                 style: str = 'caffe', with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'), conv_bias: bool = True,
                 acon_cfg: Optional[dict] = dict(type='AconC'),
                 acon_positions: str = 'paper', dcn: Optional[dict] = None,
                 plugins: Optional[List[dict]] = None, where: str = '',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        assert style in ('pytorch', 'caffe')
        self.with_cp = with_cp
        self.style = style
        self.stride = stride
        self.dilation = dilation
        conv1_stride, conv2_stride = (stride, 1) if style == 'caffe' else (1, stride)
        all_pos = acon_positions == 'all'
        out_ch = planes * self.expansion
        self.conv1 = build_conv_layer(conv_cfg, inplanes, planes, 1,
                                      stride=conv1_stride, bias=conv_bias)
        self.bn1 = build_norm(norm_cfg, planes)
        self.act1 = _act(acon_cfg, planes, f'{where}.act1', all_pos)
        self.conv2 = self._conv2(dcn, conv_cfg, planes, conv2_stride, dilation,
                                 conv_bias, where)
        self.bn2 = build_norm(norm_cfg, planes)
        self.acon = _act(acon_cfg, planes, f'{where}.acon', True)
        self.conv3 = build_conv_layer(conv_cfg, planes, out_ch, 1,
                                      bias=conv_bias)
        self.bn3 = build_norm(norm_cfg, out_ch)
        self.act3 = _act(acon_cfg, out_ch, f'{where}.act3', all_pos)
        self.downsample = downsample
        plugins = plugins or []
        self.plugins = plugins
        self.with_plugins = bool(plugins)
        for pos, channels in zip(PLUGIN_POSITIONS, (planes, planes, out_ch)):
            names = self._make_plugins(channels, [p['cfg'] for p in plugins
                                                  if p['position'] == pos], where)
            setattr(self, f'{pos}_plugin_names', names)

    @staticmethod
    def _conv2(dcn, conv_cfg, planes, stride, dilation, conv_bias, where) -> nn.Module:
        dcn = dict(dcn) if dcn is not None else None
        if dcn is not None and dcn.pop('fallback_on_stride', False) and stride > 1:
            dcn = None  # a plain conv where conv2 is strided
        if dcn is None:
            return build_conv_layer(conv_cfg, planes, planes, 3, stride=stride,
                                    padding=dilation, dilation=dilation, bias=conv_bias)
        if conv_cfg is not None:
            raise ValueError(f'{where}: conv_cfg must be None with dcn (as mmdet), got '
                             f'conv_cfg={conv_cfg!r}, dcn={dcn!r}')
        if 'type' not in dcn:
            raise KeyError(f"{where}: dcn needs a 'type' ('DCN' or 'DCNv2'), got {dcn!r}")
        bias = conv_bias and dcn['type'] != 'DCN'  # mmcv's DeformConv2d has no bias
        return build_conv_layer(dcn, planes, planes, 3, stride=stride,
                                padding=dilation, dilation=dilation, bias=bias)

    def _make_plugins(self, channels: int, cfgs: List[dict], where: str) -> List[str]:
        names = []
        for cfg in cfgs:
            cfg = dict(cfg)
            name, layer = build_plugin_layer(cfg, in_channels=channels,
                                             postfix=cfg.pop('postfix', ''))
            if hasattr(self, name):
                raise ValueError(f'{where}: two plugins named {name!r}; give them '
                                 "different 'postfix' values (mmdet format)")
            self.add_module(name, layer)
            names.append(name)
        return names

    @property
    def all_plugin_names(self) -> List[str]:
        """The plugins' module names, all positions in order."""
        return [n for pos in PLUGIN_POSITIONS for n in getattr(self, f'{pos}_plugin_names')]

    def _run_plugins(self, x: Tensor, names: List[str]) -> Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x):
            identity = x
            out = self.act1(self.bn1(self.conv1(x)))
            out = self._run_plugins(out, self.after_conv1_plugin_names)
            out = self.acon(self.bn2(self.conv2(out)))
            out = self._run_plugins(out, self.after_conv2_plugin_names)
            out = self.bn3(self.conv3(out))
            out = self._run_plugins(out, self.after_conv3_plugin_names)
            if self.downsample is not None:
                identity = self.downsample(x)
            return out + identity

        return self.act3(maybe_checkpoint(_inner_forward, x, self.with_cp))
