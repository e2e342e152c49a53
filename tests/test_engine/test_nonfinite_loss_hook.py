"""Non-finite training: a NaN/Inf loss stops training, named.

A real mmengine Runner trains a small ACON regression model; the data set has
one sample whose input is NaN (or target Inf), so with ``shuffle=False`` and batch 4 the
third iteration's loss term ``loss_reg`` is NaN (``loss_aux`` stays finite).
"""
import os

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import acon_mm  # noqa: F401
from acon_mm.engine.hooks import NonFiniteLossError, NonFiniteLossHook
from acon_mm.utils import safe_torch_load

BAD_SAMPLE = 9  # in the third batch of 4 (iteration 3)


@MODELS.register_module(force=True)
class _NanTestNet(BaseModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = MODELS.build(dict(type='AconC', num_channels=4))
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.head(self.act(self.conv(inputs)).mean(dim=(2, 3)))[:, 0]
        if mode == 'loss':
            return dict(loss_reg=((out - targets) ** 2).mean(),
                        loss_aux=0.01 * self.head.weight.abs().sum(),
                        acc=torch.tensor(float('nan')))  # not a loss: ignored
        return out


@DATASETS.register_module(force=True)
class _NanTestData(Dataset):
    def __init__(self, n=16, bad=BAD_SAMPLE, value='nan'):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 6, 6, generator=g)
        self.y = self.x.mean(dim=(1, 2, 3))
        for i in ([] if bad is None else
                  [bad] if isinstance(bad, int) else bad):
            if value == 'nan':  # a NaN input: the forward pass is NaN
                self.x[i, 0, 0, 0] = float('nan')
            else:  # an infinite target: the squared error is inf
                self.y[i] = float(value)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


def _runner(work_dir, hooks, max_iters=6, bad=BAD_SAMPLE, value='nan'):
    return Runner(
        model=dict(type='_NanTestNet'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='_NanTestData', bad=bad, value=value),
            batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='AconCheckpointHook', interval=2,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks,
        randomness=dict(seed=0),
        experiment_name=f'nan_{os.path.basename(str(work_dir))}')


def _finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_without_the_hook_nan_reaches_the_weights(tmp_path):
    """The control: this data really poisons an unprotected run."""
    runner = _runner(tmp_path, hooks=[])
    runner.train()
    assert not _finite(runner.model)
    assert not all(torch.isfinite(v).all() for v in safe_torch_load(
        str(tmp_path / 'iter_6.pth'))['state_dict'].values())


@pytest.mark.parametrize('value', ['nan', 'inf'])
def test_stop_names_iteration_and_term_and_keeps_last_good_checkpoint(
        tmp_path, value):
    runner = _runner(tmp_path, hooks=[dict(type='NonFiniteLossHook')],
                     value=value)
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert 'iteration 3' in msg
    assert f'loss_reg={value}' in msg
    assert 'loss_aux' not in msg and 'acc' not in msg  # finite / not a loss
    assert 'iter_2.pth' in msg  # the last good checkpoint, named
    # no update was applied: the weights are exactly those of iter_2.pth
    good = safe_torch_load(str(tmp_path / 'iter_2.pth'))['state_dict']
    now = runner.model.state_dict()
    assert all(torch.equal(now[k], good[k]) for k in good)
    assert _finite(runner.model)
    # and no checkpoint was written after it
    assert not (tmp_path / 'iter_4.pth').exists()
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read().strip().endswith('iter_2.pth')


def test_skip_mode_skips_the_step_and_finishes(tmp_path):
    hook = dict(type='NonFiniteLossHook', action='skip')
    runner = _runner(tmp_path, hooks=[hook], max_iters=8)
    runner.train()
    (nan_hook,) = [h for h in runner.hooks if isinstance(h, NonFiniteLossHook)]
    # the bad sample is in batch 3 of each 4-batch pass over the data
    assert nan_hook.skipped == [3, 7]
    assert _finite(runner.model)
    final = safe_torch_load(str(tmp_path / 'iter_8.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in final.values())


def test_skip_mode_skips_exactly_the_bad_update(tmp_path):
    """A skipped step leaves the weights as they were before it."""
    runner = _runner(tmp_path, hooks=[dict(type='NonFiniteLossHook',
                                           action='skip')], max_iters=3)
    before = {}

    from mmengine.hooks import Hook

    class _Snap(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 2:  # 0-based: iteration 3
                before.update({k: v.clone() for k, v in
                               runner.model.state_dict().items()})

    runner.register_hook(_Snap())
    runner.train()
    after = runner.model.state_dict()
    assert before and all(torch.equal(after[k], before[k]) for k in before)


def test_skip_mode_stops_after_max_skips_consecutive(tmp_path):
    hook = dict(type='NonFiniteLossHook', action='skip', max_skips=1)
    # bad samples in batches 3 and 4: iteration 3 is skipped, 4 stops
    runner = _runner(tmp_path, hooks=[hook], max_iters=8, bad=[9, 13])
    with pytest.raises(NonFiniteLossError,
                       match=r'iteration 4: loss_reg=nan.*after 1 consecutive'):
        runner.train()


def test_max_skips_counts_only_consecutive_steps(tmp_path):
    hook = dict(type='NonFiniteLossHook', action='skip', max_skips=1)
    # iterations 3 and 7 are bad but not consecutive: both are skipped
    runner = _runner(tmp_path, hooks=[hook], max_iters=8)
    runner.train()
    (nan_hook,) = [h for h in runner.hooks if isinstance(h, NonFiniteLossHook)]
    assert nan_hook.skipped == [3, 7]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="action='ignore'"):
        NonFiniteLossHook(action='ignore')
    with pytest.raises(ValueError, match='max_skips=0'):
        NonFiniteLossHook(max_skips=0)
