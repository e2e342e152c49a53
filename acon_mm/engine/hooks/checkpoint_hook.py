"""``AconCheckpointHook``: checkpoints that survive a kill and resume exactly.

mmengine 0.10.7's :class:`mmengine.hooks.CheckpointHook` has three gaps that
lose work when a run is killed (pre-empted node, OOM killer, Ctrl-C twice):

1. With ``max_keep_ckpts`` it deletes the oldest kept checkpoint *before*
   writing the new one; with ``max_keep_ckpts=1`` a kill during that write
   leaves no usable checkpoint at all.
2. The checkpoint and the ``last_checkpoint`` pointer are written in place, so
   a kill during a write leaves a truncated file under its final name.
3. The random number generators are not part of the checkpoint. A resumed
   run re-seeds them, so any randomness drawn in the main process after the
   resume point (dropout, augmentations with ``num_workers=0``) differs from
   the run that was never interrupted.

:class:`AconCheckpointHook` here fixes all three. It is registered under its own
name (mmengine's ``CheckpointHook`` stays what it is for every other config in
the process); acon-mm's configs select it with
``default_hooks = dict(checkpoint=dict(type='AconCheckpointHook'))``, and any
config can do the same:

* order: write the new checkpoint, then point ``last_checkpoint`` at it, then
  delete what ``max_keep_ckpts`` drops;
* atomic files: on a local file system the checkpoint is written under a
  temporary name beside its final one (``.acon_tmp.iter_N.pth.<pid>``) and renamed when
  complete, and the pointer is written with :func:`acon_mm.utils.atomic_write`;
  a kill leaves the previous checkpoint and pointer intact and at most a
  temporary file, which :func:`acon_mm.engine.find_latest_checkpoint` (what
  ``tools/train.py --resume`` resumes from) never picks;
* ``checkpoint['rng_state']`` holds the Python, NumPy, torch (and CUDA) RNG
  states of every rank at the moment of the save. On ``--resume`` they are
  put back exactly where the interrupted run stood: for an
  ``IterBasedTrainLoop`` after the loop has skipped the batches already
  trained (the skip replays the data pipeline, which itself draws random
  numbers), just before the first new batch is fetched; for an
  ``EpochBasedTrainLoop`` before the next epoch's data loader starts.
  Validation runs between the save and the next batch, so the hook also
  keeps validation from consuming the training RNG streams (it saves them
  before and restores them after each validation); training randomness is
  then independent of ``val_interval``.

All are plain tensors/ints in the checkpoint, so it still loads with
``weights_only=True``.
"""
import os
import random
from collections import deque
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook as _MMCheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ...utils.io import atomic_commit, atomic_tmp_path, atomic_write

__all__ = ['AconCheckpointHook', 'get_rng_state', 'set_rng_state']


def get_rng_state() -> Dict[str, Any]:
    """The Python, NumPy, torch and (current device's) CUDA RNG states of this process.

    Returned as builtins and tensors only (loadable with ``weights_only``).
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=(np_name, torch.from_numpy(np_keys.astype(np.int64)),
               int(np_pos), int(np_has_gauss), float(np_gauss)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this rank's own device only: get_rng_state_all() would initialise a
        # context on every visible GPU of every rank
        state['cuda'] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(
        np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        device = torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):  # older checkpoints: every device
            if len(cuda) != torch.cuda.device_count():
                return
            cuda = cuda[device]
        torch.cuda.set_rng_state(cuda, device)


class _RestoreRngBeforeBatch:
    """Wrap a train loop's data iterator; restore RNG before batch ``n + 1``.

    ``IterBasedTrainLoop.run`` advances its iterator ``n`` times (the batches
    the checkpoint already trained on) and then fetches batch ``n + 1``; the
    RNG states of the interrupted run belong right before that fetch.
    """

    def __init__(self, loop: Any, skip: int, state: Dict[str, Any]):
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._skip = skip
        self._state = state
        self._count = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._count == self._skip:
            set_rng_state(self._state)
            self._loop.dataloader_iterator = self._inner  # unwrap
        self._count += 1
        return next(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@HOOKS.register_module()
class AconCheckpointHook(_MMCheckpointHook):
    """mmengine's ``CheckpointHook``, kill-safe and with exact resume.

    Select it in a config with
    ``default_hooks = dict(checkpoint=dict(type='AconCheckpointHook', ...))``.

    Takes every argument of :class:`mmengine.hooks.CheckpointHook`, plus:

    Args:
        save_rng_state (bool): store the RNG states of all ranks in each
            checkpoint and restore them on resume. Defaults to True.
        isolate_val_rng (bool): keep validation from consuming the training
            RNG streams (see the module docstring). Defaults to True.
    """

    def __init__(self, *args, save_rng_state: bool = True,
                 isolate_val_rng: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_rng_state = save_rng_state
        self.isolate_val_rng = isolate_val_rng
        self._pending_rng: Optional[Dict[str, Any]] = None
        self._val_rng: Optional[Dict[str, Any]] = None
        self._gathered_rng: Optional[List[Dict[str, Any]]] = None

    # -- saving ----------------------------------------------------------
    def _save_checkpoint_with_step(self, runner, step: int, meta: dict):
        """Save, then point ``last_checkpoint`` at it, then prune (atomic)."""
        drop: List[int] = []
        if self.max_keep_ckpts > 0 and not (
                len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            drop = ids[:-self.max_keep_ckpts]
            self.keep_ckpt_ids = deque(ids[-self.max_keep_ckpts:],
                                       self.max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        previous = getattr(self, 'last_ckpt', None)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        # local file system: write aside, rename when complete (a kill leaves
        # the previous checkpoint and a temporary file, never a truncated
        # file under the final name); other backends write in place
        local = '://' not in str(self.out_dir)
        write_name = os.path.basename(atomic_tmp_path(self.last_ckpt)) \
            if local else ckpt_filename
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        # ``runner.save_checkpoint`` (and so ``before_save_checkpoint``) runs
        # on rank 0 only: gather every rank's RNG states here, on all ranks
        self._gathered_rng = self._gather_rng_states() \
            if self.save_rng_state else None
        tmp = os.path.join(self.out_dir, write_name)
        try:
            runner.save_checkpoint(  # on the main process only (master_only)
                self.out_dir,
                write_name,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
            if local and is_main_process():
                atomic_commit(tmp, self.last_ckpt)  # removes tmp if it fails
        except OSError as err:
            if local and os.path.exists(tmp):  # the partial temporary file
                os.remove(tmp)
            raise OSError(
                err.errno, f'could not save checkpoint {self.last_ckpt}: '
                f'{err.strerror or err}. Nothing was overwritten: the previous '
                f'checkpoint ({previous or "none yet"}) and last_checkpoint '
                'are intact; free space or change out_dir and resume with '
                '--resume.') from err

        if not is_main_process():
            return
        atomic_write(
            self.file_backend.join_path(runner.work_dir, 'last_checkpoint')
            if '://' not in str(runner.work_dir) else
            f'{runner.work_dir}/last_checkpoint', str(self.last_ckpt), 'w')

        for _step in drop:
            ckpt_path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(_step))
            if self.file_backend.isfile(ckpt_path):
                self.file_backend.remove(ckpt_path)
            elif self.file_backend.isdir(ckpt_path):
                self.file_backend.rmtree(ckpt_path)

    @staticmethod
    def _gather_rng_states() -> List[Dict[str, Any]]:
        state = get_rng_state()
        return all_gather_object(state) if get_world_size() > 1 else [state]

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.save_rng_state:
            return
        # gathered by _save_checkpoint_with_step; a save from elsewhere (e.g.
        # a best checkpoint) holds this rank's states only, which a resume
        # with several ranks then does not restore
        states, self._gathered_rng = getattr(self, '_gathered_rng', None), None
        if states is None:
            states = [get_rng_state()]
        checkpoint['rng_state'] = dict(
            world_size=len(states), per_rank=states)

    # -- resuming --------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        super().after_load_checkpoint(runner, checkpoint)
        saved = checkpoint.get('rng_state')
        if not self.save_rng_state or saved is None:
            self._pending_rng = None
            return
        if saved['world_size'] != get_world_size():
            print_log(
                f'the checkpoint holds RNG states of {saved["world_size"]} '
                f'ranks but this run has {get_world_size()}; they are not '
                'restored (training continues with freshly seeded RNGs)',
                logger='current', level=30)
            self._pending_rng = None
            return
        self._pending_rng = saved['per_rank'][get_rank()]

    def before_train(self, runner) -> None:
        super().before_train(runner)
        state, self._pending_rng = self._pending_rng, None
        # only a resume sets the loop's position; load_from leaves it at 0
        if state is None or (runner.iter == 0 and runner.epoch == 0):
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop
            loop.dataloader_iterator = _RestoreRngBeforeBatch(
                loop, runner.iter, state)
        else:  # EpochBasedTrainLoop: the next epoch's loader starts afresh
            set_rng_state(state)

    # -- validation does not draw from the training streams --------------
    def before_val(self, runner) -> None:
        if self.isolate_val_rng:
            self._val_rng = get_rng_state()

    def after_val(self, runner) -> None:
        if self.isolate_val_rng and self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None
