"""Kill and resume: SIGKILL at any moment, resume, nothing lost.

Both tests run ``tools/train.py`` in a subprocess on the generated Cityscapes
demo data with the PSPNet demo config (dilated ResNetACON-18, ACON-C), shrunk
to a few iterations. That config draws random numbers in the main process
after every checkpoint (RandomResize/RandomCrop/RandomFlip with
``num_workers=0``, dropout in both heads), so an exact resume needs the RNG
states in the checkpoint, not only the weights and the sampler position.
"""
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.engine.checkpoint import is_complete_checkpoint
from acon_mm.utils import safe_torch_load

from conftest import REPO_ROOT, _tool_env, demo_cfg_options

pytestmark = pytest.mark.slow  # real training runs killed and resumed

ITERS = 6


SMALL_CFG = """
_base_ = {base!r}
# the demo PSPNet on 64x128 crops: a few seconds per run on 2 CPU cores
crop_size = (64, 128)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.5, 1.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# output stride 32 and thin heads: the run tests resuming, not accuracy
model.update(
    backbone=dict(strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1)),
    decode_head=dict(channels=16, pool_scales=(1, 2)),
    auxiliary_head=dict(channels=16))
"""


@pytest.fixture(scope='module')
def small_config(tmp_path_factory, seg_demo_config):
    path = tmp_path_factory.mktemp('cfg') / 'pspnet_small.py'
    path.write_text(SMALL_CFG.format(base=seg_demo_config))
    return str(path)


def _options(data_root, extra=()):
    opts = demo_cfg_options('seg', data_root, iters=ITERS, batch_size=2)
    opts = [o for o in opts if not o.startswith(
        ('default_hooks.checkpoint.interval=', 'train_cfg.val_interval='))]
    return opts + [
        'default_hooks.checkpoint.interval=2',
        'train_cfg.val_interval=3',  # validation between two checkpoints
        'randomness.seed=0', 'randomness.deterministic=True',
    ] + list(extra)


def _train_cmd(config, work_dir, opts, resume=False):
    cmd = [sys.executable, str(REPO_ROOT / 'tools/train.py'), config,
           '--work-dir', str(work_dir)]
    if resume:
        cmd.append('--resume')
    return cmd + ['--cfg-options'] + opts


def _run(cmd, env=None, timeout=300):
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=_tool_env(env),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f'{" ".join(cmd)} exited with {proc.returncode}\n'
        f'--- stderr (tail) ---\n{proc.stderr[-5000:]}')
    return proc


def _weights(path):
    return safe_torch_load(str(path))['state_dict']


def _pointer(work_dir):
    p = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(p):
        return None
    with open(p) as f:
        return f.read().strip()


def _logged_iter(work_dir, it):
    """Whether the run in ``work_dir`` has logged training iteration ``it``."""
    pattern = re.compile(rf'Iter\(train\) \[\s*{it}/')
    for stamp in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        log = osp.join(work_dir, stamp, f'{stamp}.log')
        if osp.isfile(log):
            with open(log) as f:
                if pattern.search(f.read()):
                    return True
    return False


def _trained_iters(work_dir):
    """Iterations logged by the newest run in ``work_dir``."""
    import json
    stamps = sorted(n for n in os.listdir(work_dir)
                    if osp.isdir(osp.join(work_dir, n, 'vis_data')))
    with open(osp.join(work_dir, stamps[-1], 'vis_data',
                       'scalars.json')) as f:
        return [json.loads(line)['iter'] for line in f if '"loss"' in line]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, small_config, demo_cityscapes):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    _run(_train_cmd(small_config, work_dir,
                    _options(demo_cityscapes['data_root'])))
    final = work_dir / f'iter_{ITERS}.pth'
    assert final.is_file()
    return _weights(final)


def test_sigkill_at_any_moment_then_resume_gives_identical_weights(
        tmp_path, small_config, demo_cityscapes, uninterrupted):
    opts = _options(demo_cityscapes['data_root'])
    work_dir = tmp_path / 'killed'
    rng = random.Random()
    # an arbitrary moment: right after iteration 3 or 4 is logged plus a
    # random delay, i.e. mid-validation (after 3), mid-save (after 4) or
    # mid-step; iteration 2's checkpoint is complete by then, and the run
    # still has two or more iterations, a validation and a save ahead
    after_iter, delay = rng.choice([3, 4]), rng.uniform(0.0, 0.25)
    with open(tmp_path / 'killed.stderr', 'w') as err:
        proc = subprocess.Popen(
            _train_cmd(small_config, work_dir, opts), cwd=str(REPO_ROOT),
            env=_tool_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline and \
                    not _logged_iter(work_dir, after_iter):
                time.sleep(0.01)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f'training ended (rc {proc.returncode}) before the kill after '
        f'iteration {after_iter} + {delay:.2f} s:\n' +
        (tmp_path / 'killed.stderr').read_text()[-3000:])
    killed_at = _pointer(work_dir)
    assert killed_at and is_complete_checkpoint(killed_at)
    resumed_from = safe_torch_load(killed_at)['meta']['iter']
    assert resumed_from < ITERS

    out = _run(_train_cmd(small_config, work_dir, opts, resume=True))
    log = out.stdout + out.stderr
    assert f'resumed epoch: 0, iter: {resumed_from}' in log, log[-3000:]
    # the resumed run trains exactly the iterations not yet checkpointed
    assert _trained_iters(str(work_dir)) == list(
        range(resumed_from + 1, ITERS + 1))

    resumed = _weights(work_dir / f'iter_{ITERS}.pth')
    assert resumed.keys() == uninterrupted.keys()
    differ = [k for k in resumed if not torch.equal(resumed[k],
                                                    uninterrupted[k])]
    assert not differ, (f'resumed from iter {resumed_from}: {len(differ)} '
                        f'tensors differ from the uninterrupted run, e.g. '
                        f'{differ[:5]}')


SAVE_SCRIPT = textwrap.dedent('''
    """Train a small ACON model with mmengine's Runner; optionally SIGKILL
    this process while it writes the checkpoint of iteration ``kill_at``."""
    import os, signal, sys, threading, time
    import torch, torch.nn as nn
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.registry import MODELS
    from mmengine.runner import Runner
    from torch.utils.data import Dataset
    import acon_mm  # noqa: F401

    work_dir, max_iters, kill_at = sys.argv[1], int(sys.argv[2]), \\
        int(sys.argv[3])

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = MODELS.build(dict(type='MetaAconC', num_channels=8))
            self.head = nn.Linear(8, 1)

        def forward(self, inputs, targets=None, mode='tensor'):
            out = self.head(self.act(self.conv(inputs)).mean((2, 3)))[:, 0]
            return dict(loss=((out - targets) ** 2).mean())

    class Data(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(i))
            return dict(inputs=x, targets=x.mean())

    class KillDuringSave(Hook):
        priority = 'VERY_LOW'

        def before_save_checkpoint(self, runner, checkpoint):
            if runner.iter + 1 != kill_at:
                return
            # a large checkpoint: its write takes long enough to be caught
            checkpoint['padding'] = torch.ones(128 * 2 ** 18)  # 128 MB
            before = set(os.listdir(work_dir))

            def watch():  # kill as soon as the new file appears
                while True:
                    if any('.pth' in n for n in set(os.listdir(work_dir)) -
                           before):
                        os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(0.0002)

            threading.Thread(target=watch, daemon=True).start()

    Runner(
        model=Net(), work_dir=work_dir,
        train_dataloader=dict(
            dataset=Data(), batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        # max_keep_ckpts=1: stock mmengine deletes iter_2.pth *before* it
        # writes iter_4.pth, so a kill during that write leaves nothing
        default_hooks=dict(checkpoint=dict(
            type='AconCheckpointHook', interval=2, by_epoch=False,
            max_keep_ckpts=1)),
        custom_hooks=[KillDuringSave()] if kill_at else [],
        resume=kill_at == 0, randomness=dict(seed=0)).train()
''')


def test_kill_during_checkpoint_save_leaves_no_truncated_file(tmp_path):
    script = tmp_path / 'train_small.py'
    script.write_text(SAVE_SCRIPT)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()

    def run(kill_at):
        return subprocess.run(
            [sys.executable, str(script), str(work_dir), '6', str(kill_at)],
            cwd=str(REPO_ROOT), env=_tool_env(), capture_output=True,
            text=True, timeout=300)

    proc = run(kill_at=4)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # every file that looks like a checkpoint is complete and loads
    ckpts = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    assert ckpts, os.listdir(work_dir)
    for name in ckpts:
        path = str(work_dir / name)
        assert is_complete_checkpoint(path), f'{name} is truncated'
        safe_torch_load(path)
    pointer = _pointer(work_dir)
    assert pointer and osp.basename(pointer) == 'iter_2.pth'
    assert is_complete_checkpoint(pointer)

    # and resuming continues from it to the end
    proc = run(kill_at=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr
    final = work_dir / 'iter_6.pth'
    assert safe_torch_load(str(final))['meta']['iter'] == 6
    assert sorted(n for n in os.listdir(work_dir) if n.endswith('.pth')) == \
        ['iter_6.pth']  # max_keep_ckpts=1 still holds
    # the temporary file of the killed save does not survive the next saves
    assert not [n for n in os.listdir(work_dir) if n.startswith('.acon_tmp.')]
