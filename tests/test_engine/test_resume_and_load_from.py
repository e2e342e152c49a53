"""Resume and load_from through mmengine's Runner on torch >= 2.6."""
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import acon_mm  # noqa: F401
from acon_mm.utils import UnsafeCheckpointError, safe_torch_load


@MODELS.register_module(force=True)
class _TinyAconNet(BaseModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = MODELS.build(dict(type='MetaAconC', num_channels=8))
        self.head = nn.Linear(8, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        feat = self.act(self.conv(inputs)).mean(dim=(2, 3))
        out = self.head(feat).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return out


@DATASETS.register_module(force=True)
class _TinyData(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 6, 6, generator=g)
        self.y = self.x.mean(dim=(1, 2, 3))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


TRAINED_ITERS = []


@HOOKS.register_module(force=True)
class _RecordIters(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        TRAINED_ITERS.append(runner.iter)


def _runner(work_dir, max_iters, **kwargs):
    return Runner(
        model=dict(type='_TinyAconNet'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='_TinyData'), batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False, milestones=[3]),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='AconCheckpointHook', interval=2,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='_RecordIters')],
        randomness=dict(seed=0),
        experiment_name=f'exp{max_iters}',
        **kwargs)


def test_resume_round_trip(tmp_path):
    first = _runner(tmp_path, 4)
    first.train()
    ckpt = tmp_path / 'iter_4.pth'
    assert ckpt.is_file()
    # the checkpoint really holds a message hub with HistoryBuffers (the type
    # a bare torch.load refuses since torch 2.6)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(ckpt, weights_only=True)
    state = safe_torch_load(str(ckpt))
    assert state['meta']['iter'] == 4
    assert 'log_scalars' in state['message_hub']

    TRAINED_ITERS.clear()
    second = _runner(tmp_path, 6, resume=True)
    second.train()
    assert second.iter == 6
    assert TRAINED_ITERS == [4, 5]  # continued, re-trained nothing
    # resumed from iteration 4, not from scratch: the scalars logged before
    # the kill are still in the message hub (history of the loss has 6 entries)
    hist = second.message_hub.get_scalar('train/loss')
    assert len(hist.data[0]) == 6
    assert second.param_schedulers[0]._global_step == 6


def test_load_from(tmp_path):
    first = _runner(tmp_path / 'a', 2)
    first.train()
    ckpt = tmp_path / 'a' / 'iter_2.pth'
    second = _runner(tmp_path / 'b', 2, load_from=str(ckpt))
    second.train()  # loads the weights, starts a fresh schedule
    assert second.iter == 2
    w = safe_torch_load(str(ckpt))['state_dict']['act.p1']
    assert w.shape == (1, 8, 1, 1)


class _Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_checkpoint_with_other_globals_is_refused(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {}, 'meta': {'x': _Payload()}}, bad)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_torch_load(str(bad))
    assert 'bad.pth' in str(err.value) and 'system' in str(err.value)
    # the same refusal through mmengine's loader (what resume/load_from call)
    from mmengine.runner import load_checkpoint
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(nn.Linear(1, 1), str(bad))
