"""Log what the ACON layers are learning while a model trains."""
import math
from collections import OrderedDict
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.layers import MetaAconC, acon_params, iter_acon_layers

__all__ = ['AconStatsHook']


def _learned_beta_and_d(layer):
    """(beta, p1 - p2) of a non-meta ACON layer, broadcastable per channel."""
    p1, p2, beta = acon_params(layer)
    return beta.float(), (p1 - p2).float()


@HOOKS.register_module()
class AconStatsHook(Hook):
    r"""Log per-layer statistics of ACON's switching factor every N iterations.

    For every ACON layer of the model (in module order, i.e. by depth):

    * ``beta_mean``, ``beta_std``: the learned per-channel :math:`\beta` (ACON-A/B/C,
      Swish-beta), or the :math:`\beta = G(x)` that a meta-ACON layer generated
      in this iteration's forward pass (mean/std over samples, channels, pixels);
    * ``eta_mean``: the mean effective switching factor
      :math:`\eta = |\beta (p_1 - p_2)|` (0: the unit is linear).

    They go to the training log (``runner.logger``, one line per layer) and to
    the visualizer backends (``runner.visualizer.add_scalars``, e.g.
    TensorBoard or ``vis_data/scalars.json``) as ``acon/<layer>/<stat>`` at
    step ``iter + 1``. The generated beta is captured from the real forward pass
    (``switch_beta`` is wrapped only during the logged iterations), so nothing
    is recomputed and the switch's BatchNorm statistics are untouched.

    Example::

        custom_hooks = [dict(type='AconStatsHook', interval=50)]

    Args:
        interval (int): log every ``interval`` training iterations. Default: 50.
        log_text (bool): also write the per-layer lines to the text log.
            Default: True.
        prefix (str): tag prefix of the scalars. Default: 'acon'.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 50, log_text: bool = True,
                 prefix: str = 'acon'):
        if not isinstance(interval, int) or isinstance(interval, bool) \
                or interval <= 0:
            raise ValueError(f'AconStatsHook: interval must be a positive int, '
                             f'got {interval!r}')
        self.interval = interval
        self.log_text = log_text
        self.prefix = prefix
        self._captured: Dict[str, list] = {}
        self._wrapped = []
        self._warned = False

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _should_log(self, runner) -> bool:
        return self.every_n_train_iters(runner, self.interval)

    def _wrap_switches(self, runner) -> None:
        for name, layer in iter_acon_layers(self._model(runner)):
            if not isinstance(layer, MetaAconC):
                continue
            store = self._captured.setdefault(name, [])
            original = type(layer).switch_beta

            def switch_beta(x, _layer=layer, _store=store, _orig=original):
                beta = _orig(_layer, x)
                with torch.no_grad():
                    b = beta.detach().double()
                    d = (_layer.p1 - _layer.p2).detach().double()
                    # beta > 0: |beta (p1 - p2)| = beta |d|; a switch with one
                    # beta for all channels averages to mean(beta) mean(|d|)
                    eta = (b * d.abs()).sum() if b.shape[1] == d.shape[1] else \
                        b.sum() * d.abs().mean()
                    _store.append((b.sum().item(), (b * b).sum().item(), b.numel(),
                                   eta.item(), b.numel()))
                return beta

            layer.switch_beta = switch_beta  # instance attribute shadows the method
            self._wrapped.append(layer)

    def _unwrap(self) -> None:
        for layer in self._wrapped:
            if 'switch_beta' in layer.__dict__:
                del layer.__dict__['switch_beta']
        self._wrapped = []

    def layer_stats(self, runner) -> 'OrderedDict[str, dict]':
        """The statistics of every ACON layer now (see the class docstring)."""
        stats = OrderedDict()
        for name, layer in iter_acon_layers(self._model(runner)):
            if isinstance(layer, MetaAconC):
                rec = self._captured.get(name)
                if not rec:
                    continue  # the layer was not called in this iteration
                s = sum(r[0] for r in rec)
                sq = sum(r[1] for r in rec)
                n = sum(r[2] for r in rec)
                mean = s / n
                stats[name] = dict(
                    type=type(layer).__name__, beta_mean=mean,
                    beta_std=math.sqrt(max(sq / n - mean * mean, 0.0)),
                    eta_mean=sum(r[3] for r in rec) / sum(r[4] for r in rec))
            else:
                beta, d = _learned_beta_and_d(layer)
                stats[name] = dict(
                    type=type(layer).__name__,
                    beta_mean=beta.mean().item(),
                    beta_std=beta.std(unbiased=False).item(),
                    eta_mean=(beta * d).abs().mean().item())
        return stats

    # -- hook points -------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        self._captured = {}
        if self._should_log(runner):
            self._wrap_switches(runner)

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self._should_log(runner):
            return
        self._unwrap()
        stats = self.layer_stats(runner)
        self._captured = {}
        if not stats:
            if not self._warned:
                runner.logger.warning('AconStatsHook: the model has no ACON '
                                      'layer; nothing to log')
                self._warned = True
            return
        step = runner.iter + 1
        scalars = OrderedDict()
        for name, s in stats.items():
            for key in ('beta_mean', 'beta_std', 'eta_mean'):
                scalars[f'{self.prefix}/{name}/{key}'] = s[key]
        runner.visualizer.add_scalars(scalars, step=step)
        if self.log_text:
            width = max(len(n) for n in stats)
            lines = [f'ACON stats at iter {step} (beta: learned, or generated '
                     f'this iteration for MetaAconC; eta = |beta (p1 - p2)|):']
            for name, s in stats.items():
                lines.append(f'  {name:<{width}} {s["type"]:<10} beta '
                             f'{s["beta_mean"]:.4f} ± {s["beta_std"]:.4f}  '
                             f'eta {s["eta_mean"]:.4f}')
            runner.logger.info('\n'.join(lines))

    def after_train(self, runner) -> None:
        self._unwrap()
