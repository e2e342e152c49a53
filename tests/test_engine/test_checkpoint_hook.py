"""Checkpoint writing and resume, in process.

* a full disk while saving names the file and keeps the previous checkpoint;
* ``--resume`` never picks a missing or truncated file;
* an epoch-based run resumed from its checkpoint ends with the same weights
  as an uninterrupted one (RNG states restored: the model uses dropout);
* loading with ``load_from`` (not resuming) leaves the RNG as seeded.
"""
import errno
import os
import random

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import acon_mm  # noqa: F401
import acon_mm.utils.io as ackpt
from acon_mm.engine.checkpoint import find_latest_checkpoint, is_complete_checkpoint
from acon_mm.engine.hooks.checkpoint_hook import get_rng_state, set_rng_state
from acon_mm.utils import atomic_write, safe_torch_load


@MODELS.register_module(force=True)
class _CkptTestNet(BaseModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = MODELS.build(dict(type='AconC', num_channels=8))
        self.drop = nn.Dropout(0.5)  # draws from torch's RNG every step
        self.head = nn.Linear(8, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        feat = self.drop(self.act(self.conv(inputs)).mean(dim=(2, 3)))
        out = self.head(feat)[:, 0]
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return out


@DATASETS.register_module(force=True)
class _CkptTestData(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        x = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(i))
        return dict(inputs=x, targets=x.mean())


def _runner(work_dir, by_epoch=False, length=4, interval=2, **kwargs):
    loop = dict(by_epoch=True, max_epochs=length) if by_epoch else \
        dict(by_epoch=False, max_iters=length)
    return Runner(
        model=dict(type='_CkptTestNet'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='_CkptTestData'), batch_size=4, num_workers=0,
            sampler=dict(type='DefaultSampler' if by_epoch else
                         'InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=loop,
        default_hooks=dict(checkpoint=dict(type='AconCheckpointHook',
                                           interval=interval,
                                           by_epoch=by_epoch)),
        randomness=dict(seed=0, deterministic=True),
        experiment_name=f'ckpt_{os.path.basename(str(work_dir))}_{length}',
        **kwargs)


def test_full_disk_during_save_names_file_and_keeps_previous(tmp_path,
                                                             monkeypatch):
    real_fsync = os.fsync
    state = dict(saves=0)

    def fsync(fd):
        name = os.readlink(f'/proc/self/fd/{fd}') if os.path.exists(
            f'/proc/self/fd/{fd}') else ''
        if 'iter_4.pth' in name:
            raise OSError(errno.ENOSPC, 'No space left on device')
        state['saves'] += 1
        return real_fsync(fd)

    monkeypatch.setattr(ackpt.os, 'fsync', fsync)
    runner = _runner(tmp_path)
    with pytest.raises(OSError) as info:
        runner.train()
    msg = str(info.value)
    assert 'iter_4.pth' in msg and 'No space left on device' in msg
    assert 'iter_2.pth' in msg and 'intact' in msg
    assert info.value.errno == errno.ENOSPC
    # the previous checkpoint and the pointer are untouched, no litter
    assert is_complete_checkpoint(str(tmp_path / 'iter_2.pth'))
    assert find_latest_checkpoint(str(tmp_path)).endswith('iter_2.pth')
    assert not (tmp_path / 'iter_4.pth').exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.acon_tmp')]


def _make_ckpts(work_dir, steps):
    for s in steps:
        torch.save({'meta': {'iter': s}}, str(work_dir / f'iter_{s}.pth'))


@pytest.mark.parametrize('pointer', ['', 'iter_6.pth', 'gone.pth', None],
                         ids=['empty', 'truncated', 'missing', 'absent'])
def test_resume_never_picks_a_broken_file(tmp_path, pointer):
    _make_ckpts(tmp_path, [2, 4])
    with open(tmp_path / 'iter_6.pth', 'wb') as f:  # a write cut short
        f.write(open(tmp_path / 'iter_4.pth', 'rb').read()[:100])
    assert not is_complete_checkpoint(str(tmp_path / 'iter_6.pth'))
    if pointer is not None:
        (tmp_path / 'last_checkpoint').write_text(
            str(tmp_path / pointer) if pointer else '')
    assert find_latest_checkpoint(str(tmp_path)) == str(tmp_path /
                                                        'iter_4.pth')


def test_resume_follows_a_valid_pointer(tmp_path):
    _make_ckpts(tmp_path, [2, 4])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find_latest_checkpoint(str(tmp_path)).endswith('iter_2.pth')
    assert find_latest_checkpoint(str(tmp_path / 'empty')) is None


def test_atomic_write_leaves_old_content_when_interrupted(tmp_path,
                                                          monkeypatch):
    path = tmp_path / 'last_checkpoint'
    atomic_write(str(path), 'old', 'w')

    def boom(src, dst):
        raise KeyboardInterrupt  # interrupted between write and rename

    monkeypatch.setattr(ackpt.os, 'replace', boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), 'new', 'w')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['last_checkpoint']


def test_epoch_based_resume_gives_identical_weights(tmp_path):
    full = _runner(tmp_path / 'full', by_epoch=True, length=2, interval=1)
    full.train()
    first = _runner(tmp_path / 'resumed', by_epoch=True, length=1,
                    interval=1)
    first.train()
    # a fresh process would start from the seed: scramble the RNGs
    torch.manual_seed(123)
    random.seed(123)
    second = _runner(tmp_path / 'resumed', by_epoch=True, length=2,
                     interval=1, resume=True)
    second.train()
    a = full.model.state_dict()
    b = second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_holds_rng_states_loadable_weights_only(tmp_path):
    _runner(tmp_path, length=2).train()
    ckpt = safe_torch_load(str(tmp_path / 'iter_2.pth'))
    rng = ckpt['rng_state']
    assert rng['world_size'] == 1
    before = get_rng_state()
    set_rng_state(rng['per_rank'][0])
    x = torch.rand(3)
    set_rng_state(rng['per_rank'][0])
    assert torch.equal(torch.rand(3), x)
    set_rng_state(before)


def _first_iter_rng(runner):
    """torch's RNG state when the runner fetches its first training batch."""
    from mmengine.hooks import Hook
    seen = []

    class _Probe(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if not seen:
                seen.append(torch.get_rng_state())

    runner.register_hook(_Probe())
    runner.train()
    return seen[0]


def test_load_from_does_not_restore_rng(tmp_path):
    """Fine-tuning from a checkpoint starts from the seed, not its RNG."""
    _runner(tmp_path / 'a', length=2).train()
    fresh = _first_iter_rng(_runner(tmp_path / 'b', length=2))
    tuned = _first_iter_rng(_runner(
        tmp_path / 'c', length=2, load_from=str(tmp_path / 'a' / 'iter_2.pth')))
    assert torch.equal(fresh, tuned)
