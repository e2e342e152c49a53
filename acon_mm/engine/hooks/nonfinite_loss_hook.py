"""Stop, or skip the step, when a training loss is NaN or Inf.

A non-finite loss that reaches ``optimizer.step()`` turns every weight into
NaN; the next checkpoint then overwrites good work with garbage, and the log
says ``loss: nan`` many iterations later with no hint of where it started.

:class:`NonFiniteLossHook` checks every loss term *before* the update:

* ``action='stop'`` (default): raise :class:`NonFiniteLossError` naming the
  iteration (and epoch), each non-finite term and its value. No update is
  applied and no checkpoint is written after the last good one, so
  ``--resume`` restarts from good weights (e.g. with a lower learning rate).
* ``action='skip'``: drop this step (gradients zeroed, no optimizer step),
  log a warning naming the iteration and the terms, and go on; after
  ``max_skips`` consecutive skipped steps it stops as above.

Usage in a config::

    custom_hooks = [dict(type='NonFiniteLossHook', action='stop')]

It wraps the model's ``parse_losses`` (every mmdet/mmseg/mmpretrain model and
``MMDistributedDataParallel`` call it between the forward pass and
``optim_wrapper.update_params``) and the optimizer wrapper's
``update_params``. In distributed training the decision is all-reduced, so
every rank skips or stops together (no rank waits in a collective).
"""
import math
from typing import Any, Dict, List, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

__all__ = ['NonFiniteLossHook', 'NonFiniteLossError']


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or Inf; training was stopped before the update."""


def _value(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().sum()) if v.numel() else 0.0
    return float(v)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Check the loss terms of every training step for NaN/Inf.

    Args:
        action (str): ``'stop'`` (raise :class:`NonFiniteLossError`) or
            ``'skip'`` (no update for this step). Defaults to ``'stop'``.
        max_skips (int): in ``'skip'`` mode, stop at a non-finite step that
            follows this many consecutive skipped ones. Defaults to 10.
    """

    priority = 'VERY_HIGH'
    ACTIONS = ('stop', 'skip')

    def __init__(self, action: str = 'stop', max_skips: int = 10) -> None:
        if action not in self.ACTIONS:
            raise ValueError(f'NonFiniteLossHook: action={action!r}; expected '
                             f'one of {self.ACTIONS}')
        if max_skips < 1:
            raise ValueError(f'NonFiniteLossHook: max_skips={max_skips} must '
                             'be >= 1')
        self.action = action
        self.max_skips = max_skips
        self.skipped: List[int] = []  # iterations (1-based) skipped so far
        self._consecutive = 0
        self._skip_next_update = False
        self._runner = None

    # -- wiring -------------------------------------------------------------
    def before_train(self, runner) -> None:
        self._runner = runner
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        if not getattr(model.parse_losses, '_acon_nonfinite', False):
            original = model.parse_losses

            def parse_losses(losses: Dict[str, Any]) -> Tuple[Any, Any]:
                loss, log_vars = original(losses)
                self._check(loss, log_vars)
                return loss, log_vars

            parse_losses._acon_nonfinite = True  # type: ignore
            model.parse_losses = parse_losses
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers', None)
        for ow in (wrappers.values() if isinstance(wrappers, dict) else
                   [runner.optim_wrapper]):
            self._wrap_update(ow)

    def _wrap_update(self, optim_wrapper) -> None:
        if getattr(optim_wrapper.update_params, '_acon_nonfinite', False):
            return
        original = optim_wrapper.update_params

        def update_params(loss, *args, **kwargs):
            if self._skip_next_update:
                self._skip_next_update = False
                optim_wrapper.zero_grad()
                return None
            return original(loss, *args, **kwargs)

        update_params._acon_nonfinite = True  # type: ignore
        optim_wrapper.update_params = update_params

    # -- the check ------------------------------------------------------------
    def _where(self) -> str:
        r = self._runner
        if r is None:
            return 'a training step'
        where = f'iteration {r.iter + 1}'
        from mmengine.runner import EpochBasedTrainLoop
        if isinstance(r.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {r.epoch + 1})'
        return where

    def _check(self, loss: Any, log_vars: Dict[str, Any]) -> None:
        bad: List[Tuple[str, float]] = []
        for name, v in log_vars.items():
            if 'loss' not in name:
                continue  # e.g. accuracies, which may be NaN harmlessly
            val = _value(v)
            if not math.isfinite(val):
                bad.append((name, val))
        total = _value(loss)
        if not math.isfinite(total) and not any(n == 'loss' for n, _ in bad):
            bad.insert(0, ('loss', total))
        flag = 1.0 if bad else 0.0
        if get_world_size() > 1 and torch_dist.is_available() and \
                torch_dist.is_initialized():
            t = torch.tensor([flag], device=loss.device
                             if isinstance(loss, torch.Tensor) else 'cpu')
            torch_dist.all_reduce(t)
            flag = float(t.item())
        if flag == 0:
            self._consecutive = 0
            return
        terms = ', '.join(f'{n}={v}' for n, v in bad if n != 'loss') or \
            ', '.join(f'{n}={v}' for n, v in bad) or \
            'a term on another rank'
        where = self._where()
        if self.action == 'skip' and self._consecutive < self.max_skips:
            self._consecutive += 1
            self._skip_next_update = True
            if self._runner is not None:
                self.skipped.append(self._runner.iter + 1)
            print_log(
                f'non-finite loss at {where}: {terms}; this step is skipped '
                f'(no update; {self._consecutive} consecutive, '
                f'max_skips={self.max_skips})',
                logger='current', level=30)
            return
        last = None
        if self._runner is not None:
            last = self._runner.message_hub.get_info('last_ckpt')
        reason = (f'after {self.max_skips} consecutive skipped steps; '
                  if self.action == 'skip' else '')
        msg = (f'non-finite loss at {where}: {terms}. Training stopped '
               f'({reason}before this update, so the weights are still '
               'finite). Last good checkpoint: '
               f'{last or "none saved yet"}. Resume with --resume (e.g. with a '
               'lower learning rate or gradient clipping), or set '
               "custom_hooks=[dict(type='NonFiniteLossHook', action='skip')] "
               'to skip such steps.')
        print_log(msg, logger='current', level=40)
        raise NonFiniteLossError(msg)
