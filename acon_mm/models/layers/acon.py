"""The ACON activation family and trainable Swish-beta as OpenMMLab layers.

All layers are registered in mmengine's root ``MODELS`` registry, so mmcv's
``build_activation_layer`` and the registries of mmdet, mmseg and mmpretrain
(children of the root one) all find them, e.g. ``act_cfg=dict(type='AconC')``.

Every layer takes ``num_channels``. When it is omitted the layer is *lazy*: it
infers the width from its first input (PyTorch's ``LazyModuleMixin``). Inside
mmcv's ``ConvModule`` the width is known when the module is built, and acon-mm
materialises the layer right there (see :mod:`acon_mm.models.layers.conv_module`),
so necks and heads such as FPN or PSPHead built with ``act_cfg=dict(type='AconC')``
have all their parameters before the optimizer or DistributedDataParallel see them.

References:
    Ma et al., "Activate or Not: Learning Customized Activation", CVPR 2021.
    Ramachandran et al., "Searching for Activation Functions", 2017.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from ...ops import acon, spatial_mean
from ...ops.meta_func import meta_acon_channel
from .switch_norm import AconSwitchBN, AconSwitchSyncBN, switch_norm_cfg

__all__ = [
    'AconA', 'AconB', 'AconC', 'MetaAconC', 'SwishBeta', 'AconSwitchBN',
    'AconSwitchSyncBN', 'ACON_TYPES', 'BaseAcon', 'ChannelActivation', 'switch_norm_cfg'
]

#: The activation types acon-mm registers (used in error messages).
ACON_TYPES = ('AconA', 'AconB', 'AconC', 'MetaAconC', 'SwishBeta',
              'HardAconC', 'HardMetaAconC', 'MetaAconCNoBN')  # (variants: acon_variants.py)


def _channel_shape(num_channels: int) -> tuple:
    return (1, num_channels, 1, 1)


class ChannelActivation(LazyModuleMixin, nn.Module):
    """Common machinery: per-channel parameters, lazy width, width checks.

    The base of the ACON family (:class:`BaseAcon`) and of
    :class:`~acon_mm.models.layers.SearchedActivation`:
    :func:`~acon_mm.models.layers.build_acon_layer` gives every subclass its
    ``num_channels``.

    Subclasses list their per-channel parameters in :meth:`_param_inits`
    (name -> initialiser of a ``(1, C, 1, 1)`` tensor) and may build extra
    sub-modules in :meth:`_build_channel_modules`.

    Args:
        num_channels (int, optional): number of channels C of the input
            (dimension 1). ``None`` infers it from the first input.
        inplace (bool): accepted for compatibility with mmcv's ``ConvModule``
            (which passes ``inplace=True``); ACON is never computed in place.
    """

    #: Optional human-readable module path, set by :func:`acon_mm.models.layers.name_acon_layers`.
    layer_name: Optional[str] = None
    cls_to_become = None  # stay the same class once materialised

    def __init__(self, num_channels: Optional[int] = None, inplace: bool = False):
        super().__init__()
        if num_channels is not None and (not isinstance(num_channels, int)
                                         or num_channels <= 0):
            raise ValueError(f'{type(self).__name__}: num_channels must be a '
                             f'positive int or None, got {num_channels!r}')
        self.num_channels = num_channels
        for name in self._param_inits():
            self.register_parameter(name, UninitializedParameter())
        if num_channels is not None:
            self.materialize(num_channels)

    def _drop_lazy_hooks(self) -> None:
        # LazyModuleMixin's forward/load hooks are not needed once materialised.
        if hasattr(self, '_initialize_hook'):
            self._initialize_hook.remove()
            self._load_hook.remove()
            delattr(self, '_initialize_hook')
            delattr(self, '_load_hook')

    # -- to be specialised -------------------------------------------------
    def _param_inits(self) -> Dict[str, callable]:
        return {}

    def _build_channel_modules(self, num_channels: int) -> None:
        pass

    # -- lazy width --------------------------------------------------------
    @property
    def is_materialized(self) -> bool:
        return not self.has_uninitialized_params() and self.num_channels is not None

    def materialize(self, num_channels: int) -> None:
        """Create the per-channel parameters for ``num_channels`` channels."""
        self._materialize(num_channels)
        self._drop_lazy_hooks()

    def _materialize(self, num_channels: int) -> None:
        if self.is_materialized:
            if num_channels != self.num_channels:
                raise ValueError(
                    f'{self._describe()}already has {self.num_channels} '
                    f'channels, cannot re-materialise with {num_channels}')
            return
        self.num_channels = num_channels
        for name, init in self._param_inits().items():
            param = getattr(self, name)
            if isinstance(param, UninitializedParameter):
                param.materialize(_channel_shape(num_channels))
                with torch.no_grad():
                    param.copy_(init(_channel_shape(num_channels)))
            elif tuple(param.shape) != _channel_shape(num_channels):
                raise ValueError(
                    f'{self._describe()}parameter {name!r} has shape '
                    f'{tuple(param.shape)}, expected '
                    f'{_channel_shape(num_channels)} for {num_channels} channels')
        self._build_channel_modules(num_channels)

    def initialize_parameters(self, x: Tensor) -> None:  # LazyModuleMixin API
        if x.dim() < 2:
            raise ValueError(f'{self._describe()}expects an input of shape '
                             f'(N, C, ...), got {tuple(x.shape)}')
        if not self.is_materialized:
            self._materialize(int(x.shape[1]))

    def _describe(self) -> str:
        name = f"'{self.layer_name}' " if self.layer_name else ''
        return f'{type(self).__name__} layer {name}'.rstrip() + ' '


    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            got = x.shape[1] if x.dim() >= 2 else None
            raise ValueError(
                f'{self._describe()}expected {self.num_channels} channels '
                f'(num_channels={self.num_channels}) but got an input with '
                f'{got} channels, shape {tuple(x.shape)}')

    def extra_repr(self) -> str:
        return f'num_channels={self.num_channels}'


class BaseAcon(ChannelActivation):
    """The ACON family: :math:`(p_1 - p_2) x \\sigma(\\beta (p_1 - p_2) x) + p_2 x`
    with its implicit and learned parameters (:func:`~acon_mm.models.layers.acon_params`);
    what :func:`~acon_mm.models.layers.iter_acon_layers` and the analysis tools see."""


def _randn(shape):
    return torch.randn(shape)


def _const(value: float):
    return lambda shape: torch.full(shape, float(value))


@MODELS.register_module()
class AconA(BaseAcon):
    r"""ACON-A: the smooth maximum of :math:`x` and 0, i.e. Swish with learnable beta.

    .. math::
        f(x) = x \cdot \sigma(\beta x)

    with a learnable per-channel :math:`\beta` (shape ``(1, C, 1, 1)``, initialised
    to ``beta_init``). :math:`\beta \to \infty` gives ReLU, :math:`\beta = 0` gives x/2.

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        beta_init (float): initial beta. Default: 1.0.
        inplace (bool): ignored (ConvModule compatibility).
    """

    def __init__(self, num_channels: Optional[int] = None, beta_init: float = 1.0,
                 inplace: bool = False):
        self.beta_init = beta_init
        super().__init__(num_channels, inplace)

    def _param_inits(self):
        return {'beta': _const(self.beta_init)}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return acon(x, None, None, self.beta)


@MODELS.register_module()
class SwishBeta(BaseAcon):
    r"""Swish-beta from "Searching for Activation Functions" (Ramachandran et al.).

    .. math::
        f(x) = x \cdot \sigma(\beta x)

    ``beta`` is a trainable scalar (``per_channel=False``, the paper's choice), a
    trainable per-channel ``(1, C, 1, 1)`` parameter (``per_channel=True``), or a
    fixed constant (``learnable=False``). :math:`\beta = 1` is SiLU.

    Args:
        beta (float): initial (or fixed) beta. Default: 1.0.
        learnable (bool): train beta. Default: True.
        per_channel (bool): one beta per channel (needs / infers C). Default: False.
        num_channels (int, optional): channels C (only used with ``per_channel``).
        inplace (bool): ignored (ConvModule compatibility).
    """

    def __init__(self, beta: float = 1.0, learnable: bool = True,
                 per_channel: bool = False, num_channels: Optional[int] = None,
                 inplace: bool = False):
        if per_channel and not learnable:
            raise ValueError('SwishBeta: per_channel=True needs learnable=True '
                             '(a fixed beta is one constant)')
        self.beta_init = float(beta)
        self.learnable = learnable
        self.per_channel = per_channel
        super().__init__(num_channels if per_channel else None, inplace)
        if not per_channel:
            self.num_channels = num_channels
            self._drop_lazy_hooks()
            value = torch.full((1, 1, 1, 1), self.beta_init)
            if learnable:
                self.beta = nn.Parameter(value)
            else:
                self.register_buffer('beta', value)

    def _param_inits(self):
        return {'beta': _const(self.beta_init)} if self.per_channel else {}

    @property
    def is_materialized(self) -> bool:
        return super().is_materialized if self.per_channel else True

    def _materialize(self, num_channels: int) -> None:
        if self.per_channel:
            super()._materialize(num_channels)
        else:
            self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.per_channel or self.num_channels is not None:
            self._check_input(x)
        return acon(x, None, None, self.beta)

    def extra_repr(self) -> str:
        return (f'beta={self.beta_init}, learnable={self.learnable}, '
                f'per_channel={self.per_channel}, num_channels={self.num_channels}')


@MODELS.register_module()
class AconB(BaseAcon):
    r"""ACON-B: the smooth maximum of :math:`x` and :math:`p x` (a smooth PReLU).

    .. math::
        f(x) = (1 - p) x \cdot \sigma(\beta (1 - p) x) + p x

    with learnable per-channel ``p`` (initialised to ``p_init``, PReLU's 0.25)
    and ``beta`` (initialised to 1).

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        p_init (float): initial p. Default: 0.25.
        beta_init (float): initial beta. Default: 1.0.
        inplace (bool): ignored (ConvModule compatibility).
    """

    def __init__(self, num_channels: Optional[int] = None, p_init: float = 0.25,
                 beta_init: float = 1.0, inplace: bool = False):
        self.p_init = p_init
        self.beta_init = beta_init
        super().__init__(num_channels, inplace)

    def _param_inits(self):
        return {'p': _const(self.p_init), 'beta': _const(self.beta_init)}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return acon(x, None, self.p, self.beta)


@MODELS.register_module()
class AconC(BaseAcon):
    r"""ACON-C: the smooth maximum of :math:`p_1 x` and :math:`p_2 x`.

    .. math::
        f(x) = (p_1 - p_2) x \cdot \sigma(\beta (p_1 - p_2) x) + p_2 x

    with learnable per-channel ``p1``, ``p2`` (each ``(1, C, 1, 1)``, initialised from
    N(0, 1) as the official code) and ``beta`` (initialised to 1). With p1 = 1,
    p2 = 0 it is ACON-A.

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        inplace (bool): ignored (ConvModule compatibility).
    """

    def _param_inits(self):
        return {'p1': _randn, 'p2': _randn, 'beta': _const(1.0)}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return acon(x, self.p1, self.p2, self.beta)


_SWITCHES = ('layer', 'channel', 'pixel')
#: switch norms the fused meta-ACON kernel runs itself (exact types: not SyncBN)
_FUSED_BN_TYPES = (AconSwitchBN, nn.BatchNorm2d)


@MODELS.register_module()
class MetaAconC(BaseAcon):
    r"""meta-ACON-C: ACON-C whose switching factor is generated from the input.

    .. math::
        f(x) = (p_1 - p_2) x \cdot \sigma(\beta(x) (p_1 - p_2) x) + p_2 x,
        \qquad \beta(x) = G(x)

    Switch generators ``G`` (the paper's design space):

    * ``'channel'`` (official default), one beta per sample and channel:
      :math:`\beta = \sigma(\mathrm{bn2}(\mathrm{fc2}(\mathrm{bn1}(\mathrm{fc1}(
      \mathrm{GAP}(x))))))` with 1x1 convs ``fc1``: C -> max(r, C // r) and
      ``fc2``: back to C (both biased), no nonlinearity in between.
    * ``'layer'``, one beta per sample: :math:`\beta = \sigma(\mathrm{mean}_{c,h,w} x)`
      (parameter free).
    * ``'pixel'``, one beta per sample and position: :math:`\beta =
      \sigma(\mathrm{bn1}(\mathrm{fc1}(x)))` with a 1x1 conv ``fc1``: C -> 1.

    :math:`\beta \to 0` makes the unit linear ("not activate"), a large beta makes it
    the maximum ("activate").

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        switch (str): ``'layer'``, ``'channel'`` or ``'pixel'``. Default: 'channel'.
        r (int): reduction ratio of the channel switch. Default: 16.
        norm_cfg (dict, optional): norm layer of the switch generator (mmcv
            ``build_norm_layer`` config). The default ``AconSwitchBN`` is the
            official BatchNorm and also trains with one image per GPU. With
            few images per GPU (PSPNet: 2) the switch statistics should be
            synchronised like the backbone's: ``AconSwitchSyncBN`` (see its
            docstring; :func:`switch_norm_cfg` maps a backbone ``norm_cfg``
            to the matching switch norm). ``BN``/``SyncBN`` are used as given
            (plain BatchNorm raises at batch 1). ``None`` removes the norms
            (the convs keep their biases).
        inplace (bool): ignored (ConvModule compatibility).
    """

    def __init__(self, num_channels: Optional[int] = None, switch: str = 'channel',
                 r: int = 16, norm_cfg: Optional[dict] = dict(type='AconSwitchBN'),
                 inplace: bool = False):
        if switch not in _SWITCHES:
            raise ValueError(f'MetaAconC: unknown switch {switch!r}; valid '
                             f'switches are {list(_SWITCHES)}')
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f'MetaAconC: r must be a positive int, got {r!r}')
        self.switch = switch
        self.r = r
        self.norm_cfg = norm_cfg
        super().__init__(num_channels, inplace)

    def _param_inits(self):
        return {'p1': _randn, 'p2': _randn}

    def _norm(self, channels: int) -> nn.Module:
        if self.norm_cfg is None:
            return nn.Identity()
        from mmcv.cnn import build_norm_layer
        return build_norm_layer(self.norm_cfg, channels)[1]

    def _build_channel_modules(self, num_channels: int) -> None:
        if self.switch == 'channel':
            hidden = max(self.r, num_channels // self.r)
            self.fc1 = nn.Conv2d(num_channels, hidden, 1, bias=True)
            self.bn1 = self._norm(hidden)
            self.fc2 = nn.Conv2d(hidden, num_channels, 1, bias=True)
            self.bn2 = self._norm(num_channels)
        elif self.switch == 'pixel':
            self.fc1 = nn.Conv2d(num_channels, 1, 1, bias=True)
            self.bn1 = self._norm(1)
        # Lazily created sub-modules must follow the parameters' device/dtype.
        ref = self.p1
        self.to(device=ref.device)

    def switch_beta(self, x: Tensor) -> Tensor:
        """The generated beta, broadcastable to ``x``.

        Shapes: ``(N, 1, 1, 1)`` (layer), ``(N, C, 1, 1)`` (channel),
        ``(N, 1, H, W)`` (pixel).
        """
        half = (torch.float16, torch.bfloat16)
        if self.switch == 'layer':
            y = x.float() if x.dtype in half else x
            return torch.sigmoid(spatial_mean(y, (1, 2, 3)))
        # Outside autocast a half-precision input meets float32 switch weights:
        # run the (small) switch network in the weights' dtype.
        wdtype = self.fc1.weight.dtype
        if self.switch == 'channel':
            # spatial_mean == x.mean(keepdim=True); its backward is a broadcast view
            y = spatial_mean(x, (2, 3), dtype=wdtype if x.dtype in half else None)
            y = self.bn2(self.fc2(self.bn1(self.fc1(y))))
        else:
            y = self.bn1(self.fc1(x.to(wdtype) if x.dtype != wdtype and
                                  not torch.is_autocast_enabled() else x))
        return torch.sigmoid(y.float() if y.dtype in half else y)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.switch == 'channel' and 'switch_beta' not in self.__dict__:
            # CPU: the whole layer as one fused kernel call (None where it does not apply).
            # An instance-level switch_beta (AconStatsHook's logging wrapper) must see
            # the call: then the modules run.
            # (sub-modules read from the dicts: nn.Module.__getattr__ costs ~1 us each)
            mods, params = self._modules, self._parameters
            fc1, bn1, fc2, bn2 = mods.get('fc1'), mods.get('bn1'), mods.get('fc2'), \
                mods.get('bn2')
            if fc1 is not None and bn1 is not None and fc2 is not None and bn2 is not None:
                y = meta_acon_channel(self, x, params['p1'], params['p2'], fc1, bn1, fc2, bn2,
                                      _FUSED_BN_TYPES)
                if y is not None:
                    return y
        return acon(x, self.p1, self.p2, self.switch_beta(x))

    def extra_repr(self) -> str:
        return f'num_channels={self.num_channels}, switch={self.switch!r}, r={self.r}'
