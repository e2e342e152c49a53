"""Two-process distributed training through tools/dist_train.sh (torchrun).

On this CUDA-less machine the processes talk over gloo (tools/train.py falls
back and says so, and turns the SyncBN we ask for into BN). The ranks must
end with identical parameters (DDP averaged every gradient), the checkpoint
must hold those parameters, and the evaluation at the end must gather the
predictions of both ranks (each rank saw half of the validation images).
"""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # two-rank gloo training

HOOK = '''
import json
import os

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):
    """Test helper: dump each rank's parameters and the images it evaluated."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.img_ids = []

    def after_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save({k: v.detach().clone() for k, v in
                    model.named_parameters()},
                   os.path.join(self.out_dir, f'params_rank{get_rank()}.pth'))

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        self.img_ids += [int(o.img_id) for o in outputs]

    def after_val_epoch(self, runner, metrics=None):
        with open(os.path.join(self.out_dir,
                               f'val_rank{get_rank()}.json'), 'w') as f:
            json.dump(dict(img_ids=self.img_ids, world=get_world_size(),
                           metrics={k: float(v) for k, v in
                                    (metrics or {}).items()}), f)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='checks the CPU/gloo fall-back')
def test_dist_train_two_ranks_gloo(repo_root, demo_coco, det_demo_config,
                                   tmp_path):
    (tmp_path / 'rank_dump_hook.py').write_text(HOOK)
    root = demo_coco['data_root'] + '/'
    ann = root + 'annotations/instances_val2017.json'
    cfg = tmp_path / 'dist_cfg.py'
    cfg.write_text(f'''
_base_ = {det_demo_config!r}
custom_imports = dict(imports=['acon_mm', 'rank_dump_hook'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='RankDumpHook', out_dir={str(tmp_path)!r})]
model = dict(backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
             test_cfg=dict(score_thr=0.0))
train_dataloader = dict(batch_size=2, dataset=dict(data_root={root!r}))
val_dataloader = dict(batch_size=2, dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann!r},
                     outfile_prefix={str(tmp_path / "preds")!r})
test_evaluator = val_evaluator
train_cfg = dict(max_iters=3, val_interval=3)
param_scheduler = []
default_hooks = dict(checkpoint=dict(interval=3), logger=dict(interval=1))
''')
    work_dir = tmp_path / 'work'
    env = dict(os.environ)
    env.update(PYTHONPATH=f'{repo_root}:{tmp_path}', PORT=str(_free_port()),
               PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PYTHONWARNINGS='ignore')
    # own process group, so that a hang kills torchrun and both ranks
    proc = subprocess.Popen(
        ['bash', str(repo_root / 'tools' / 'dist_train.sh'), str(cfg), '2',
         '--work-dir', str(work_dir)],
        cwd=str(repo_root), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail('2-rank training hung (killed after 400 s):\n' +
                    log[-6000:])
    assert proc.returncode == 0, log[-6000:]
    assert "'gloo'" in log and 'SyncBN replaced by BN' in log, log[-3000:]

    p0 = torch.load(tmp_path / 'params_rank0.pth', weights_only=True)
    p1 = torch.load(tmp_path / 'params_rank1.pth', weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) > 50
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f'ranks differ in {k}'
    # training changed the weights, and rank 0's checkpoint holds them
    from acon_mm.utils import safe_torch_load
    ckpt = safe_torch_load(str(work_dir / 'iter_3.pth'))
    assert ckpt['meta']['iter'] == 3
    for k in p0:
        assert torch.equal(ckpt['state_dict'][k], p0[k]), k

    # evaluation: each rank evaluated its half; rank 0's metric saw both
    v0 = json.load(open(tmp_path / 'val_rank0.json'))
    v1 = json.load(open(tmp_path / 'val_rank1.json'))
    assert v0['world'] == v1['world'] == 2
    ids0, ids1 = set(v0['img_ids']), set(v1['img_ids'])
    all_ids = set(range(100001, 100009))
    assert ids0 and ids1 and not ids0 & ids1 and ids0 | ids1 == all_ids
    preds = json.load(open(tmp_path / 'preds.bbox.json'))
    assert {p['image_id'] for p in preds} == all_ids
    assert 'coco/bbox_mAP' in v0['metrics']
    assert v0['metrics'] == v1['metrics']  # broadcast to every rank
