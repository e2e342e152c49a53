r"""What the ACON layers learned: their parameters and meta-ACON's generated beta.

The *effective switching factor*

.. math::
    \eta = |\beta\,(p_1 - p_2)|

decides whether a unit activates: :math:`\eta \to 0` makes :math:`f` linear
(:math:`f \to (p_1 + p_2)x/2`), a large :math:`\eta` makes it
:math:`\max(p_1 x, p_2 x)`. For meta-ACON :math:`\beta = G(x)` is generated per
sample (and channel or pixel), so :math:`\eta` is measured over a set of
images (:class:`BetaRecorder`).
"""
import math
from collections import OrderedDict, defaultdict
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..models.layers import BaseAcon, MetaAconC, acon_params, iter_acon_layers

__all__ = [
    'layer_parameters', 'BetaRecorder'
]

# ---------------------------------------------------------------------------
# learned parameters of one layer
# ---------------------------------------------------------------------------
def _vec(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().reshape(-1).numpy().astype(np.float64)


def layer_parameters(layer: BaseAcon) -> Dict[str, Optional[np.ndarray]]:
    """Per-channel ``p1``, ``p2`` and ``beta`` of an ACON layer as float64 arrays.

    ACON-A / Swish-beta have ``p1 = 1, p2 = 0``; ACON-B ``p1 = 1, p2 = p``
    (:func:`acon_mm.models.layers.acon_params`). ``beta`` is ``None`` for
    :class:`MetaAconC` (it is generated, see :class:`BetaRecorder`). A scalar
    Swish-beta gives arrays of length 1.
    """
    p1, p2, beta = acon_params(layer)
    if beta is not None and beta.numel() != p1.numel():
        p1, p2 = p1.expand_as(beta), p2.expand_as(beta)
    return dict(p1=_vec(p1), p2=_vec(p2),
                beta=None if beta is None else _vec(beta))


# ---------------------------------------------------------------------------
# the generated beta of meta-ACON over a set of images
# ---------------------------------------------------------------------------
class BetaRecorder:
    """Records the beta that every :class:`MetaAconC` of a model generates.

    A forward hook per layer recomputes ``layer.switch_beta(input)`` (in eval
    mode this is exactly the value the forward pass used) and accumulates, per
    layer: the per-channel mean over samples (and pixels), the per-channel
    mean of :math:`\\eta = |\\beta (p_1 - p_2)|` (:math:`= |p_1 - p_2|\\,
    \\bar\\beta` since :math:`\\beta > 0`), global mean/std over every
    generated value, and the first ``keep_maps`` pixel-switch maps.

    Use as a context manager around forward passes::

        with BetaRecorder(model) as rec:
            model(inputs)
        rec.summary()['backbone.layer1.0.act']['mean']
    """

    def __init__(self, model: nn.Module, keep_maps: int = 1):
        self.layers = OrderedDict(
            (n, m) for n, m in iter_acon_layers(model) if isinstance(m, MetaAconC))
        self.keep_maps = keep_maps
        self._handles = []
        self.reset()

    def reset(self) -> None:
        self.sum = {}
        self.sq = {}
        self.count = defaultdict(int)
        self.chan_sum = {}
        self.d_abs = {}
        self.chan_count = defaultdict(int)
        self.samples = defaultdict(int)
        self.per_sample_means = defaultdict(list)
        self.maps = defaultdict(list)

    def _hook(self, name):
        def hook(module: MetaAconC, inputs, output):
            with torch.no_grad():
                x = inputs[0]
                beta = module.switch_beta(x).double()
                n = beta.shape[0]
                self.sum[name] = self.sum.get(name, 0.0) + beta.sum().item()
                self.sq[name] = self.sq.get(name, 0.0) + (beta ** 2).sum().item()
                self.count[name] += beta.numel()
                self.samples[name] += n
                self.per_sample_means[name] += beta.reshape(n, -1).mean(1).tolist()
                # per channel (one entry for the layer / pixel switches)
                cs = beta.sum(dim=[0] + list(range(2, beta.dim()))).reshape(-1)
                self.chan_sum[name] = cs if name not in self.chan_sum else \
                    self.chan_sum[name] + cs
                self.chan_count[name] += beta.numel() // beta.shape[1]
                self.d_abs[name] = (module.p1 - module.p2).detach().double().abs() \
                    .reshape(-1)
                if module.switch == 'pixel' and len(self.maps[name]) < self.keep_maps:
                    for m in beta[:self.keep_maps - len(self.maps[name]), 0]:
                        self.maps[name].append(m.float().cpu().numpy())
        return hook

    def __enter__(self):
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def summary(self) -> Dict[str, dict]:
        """Per layer: ``mean``, ``std`` (over every generated value),
        ``sample_std`` (spread of the per-image means), ``per_channel``
        (mean beta per channel), ``eta_per_channel``, ``num_images``."""
        out = OrderedDict()
        for name in self.layers:
            if not self.count.get(name):
                continue
            c = self.count[name]
            mean = self.sum[name] / c
            var = max(self.sq[name] / c - mean ** 2, 0.0)
            n = self.samples[name]
            per_channel = self.chan_sum[name] / self.chan_count[name]
            out[name] = dict(
                mean=mean, std=math.sqrt(var),
                sample_std=float(np.std(self.per_sample_means[name])),
                per_channel=per_channel.cpu().numpy(),
                # beta = sigmoid(.) > 0, so mean |beta (p1 - p2)| = |p1 - p2| mean beta
                eta_per_channel=(self.d_abs[name] * per_channel).cpu().numpy(),
                num_images=n, maps=self.maps.get(name, []))
        return out
