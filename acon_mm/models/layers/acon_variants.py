r"""Variants of the ACON layers that users of meta-ACON ask for.

* :class:`MetaAconCNoBN`: meta-ACON-C whose switch generator has **no norm
  layers** (the 1x1 convs keep their biases). YOLOv5 removed the switch BNs of
  its ``MetaAconC`` after unstable runs; without them the switch of an image
  depends on that image only, so batch-1 training and inference give the same
  function and there are no running statistics to go stale.
* :class:`HardAconC` and :class:`HardMetaAconC`: the smooth maximum with the
  sigmoid gate replaced by the hard sigmoid (the ACON authors' suggestion where
  speed matters; ACON-A with it is h-swish):

  .. math::
      f(x) = (p_1 - p_2) x \cdot \mathrm{h}\sigma(\beta (p_1 - p_2) x) + p_2 x,
      \qquad \mathrm{h}\sigma(z) = \min(\max(z / 6 + 1/2, 0), 1)

  The hard gate is piecewise linear: no exponential forward or backward.
  :class:`HardMetaAconC` keeps meta-ACON's switch :math:`\beta = G(x)` as
  :class:`~acon_mm.models.layers.MetaAconC` computes it (its sigmoid runs on an
  ``N x C`` map, negligible); only the gate of the activation is hard.

All three are registered and take the arguments of the layer they derive from,
so ``acon_cfg=dict(type='HardMetaAconC')`` and the study's
``--activations MetaAconC MetaAconCNoBN HardMetaAconC`` compare them.
"""
from typing import Optional

import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .acon import AconC, MetaAconC

__all__ = ['HardAconC', 'HardMetaAconC', 'MetaAconCNoBN', 'hard_acon']


def hard_acon(x: Tensor, p1: Tensor, p2: Tensor, beta) -> Tensor:
    r"""ACON-C with the hard-sigmoid gate:
    :math:`(p_1 - p_2) x \cdot \mathrm{h}\sigma(\beta (p_1 - p_2) x) + p_2 x`.

    Args:
        x (Tensor): input ``(N, C, ...)``.
        p1, p2 (Tensor): broadcastable to ``x`` (``(1, C, 1, 1)``).
        beta (Tensor | float): broadcastable to ``x``.

    Returns:
        Tensor: same shape and dtype as ``x``.
    """
    dpx = (p1 - p2) * x
    return (dpx * F.hardsigmoid(beta * dpx) + p2 * x).to(x.dtype)


@MODELS.register_module()
class MetaAconCNoBN(MetaAconC):
    r"""meta-ACON-C whose switch generator has no norm layers:
    :math:`\beta = \sigma(\mathrm{fc2}(\mathrm{fc1}(\mathrm{GAP}(x))))` for the
    ``'channel'`` switch (``'pixel'``: :math:`\sigma(\mathrm{fc1}(x))`).

    ``MetaAconC(norm_cfg=None)`` registered under its own name, so configs and
    the study can name it. ``bn1``/``bn2`` are identities: the state dict has
    no norm entries (an official meta-ACON checkpoint, which has them, does not
    load into it) and the fused CPU kernel runs it as it runs ``MetaAconC``.

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        switch (str): ``'layer'``, ``'channel'`` or ``'pixel'``. Default: 'channel'.
        r (int): reduction ratio of the channel switch. Default: 16.
        inplace (bool): ignored (ConvModule compatibility).
    """

    def __init__(self, num_channels: Optional[int] = None, switch: str = 'channel',
                 r: int = 16, inplace: bool = False):
        super().__init__(num_channels, switch=switch, r=r, norm_cfg=None, inplace=inplace)


@MODELS.register_module()
class HardAconC(AconC):
    r"""ACON-C with the hard-sigmoid gate (see :func:`hard_acon`):

    .. math::
        f(x) = (p_1 - p_2) x \cdot \mathrm{h}\sigma(\beta (p_1 - p_2) x) + p_2 x

    Parameters as :class:`~acon_mm.models.layers.AconC` (so its checkpoints load).

    Args:
        num_channels (int, optional): channels C; ``None`` infers them.
        inplace (bool): ignored (ConvModule compatibility).
    """

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return hard_acon(x, self.p1, self.p2, self.beta)


@MODELS.register_module()
class HardMetaAconC(MetaAconC):
    r"""meta-ACON-C with the hard-sigmoid gate:

    .. math::
        f(x) = (p_1 - p_2) x \cdot \mathrm{h}\sigma(\beta(x) (p_1 - p_2) x) + p_2 x,
        \qquad \beta(x) = G(x)

    with the switch generator ``G`` of :class:`~acon_mm.models.layers.MetaAconC`
    (same arguments, same parameters: a meta-ACON checkpoint loads).
    """

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return hard_acon(x, self.p1, self.p2, self.switch_beta(x))
