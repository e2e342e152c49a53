"""Shared fixtures of the acon-mm test suite.

Session-scoped, so each is built once per ``pytest`` run (in pytest's tmp dirs):

``repo_root``
    ``pathlib.Path`` of the repository (tools and configs are found from it).
``run_tool``
    ``run_tool('tools/train.py', *args, timeout=300, env=None, check=True)``
    runs a script of the repository (or ``'-m', 'torch.distributed.run', ...``)
    with this interpreter in a subprocess whose working directory is the
    repository, and returns the ``subprocess.CompletedProcess`` (text
    ``stdout``/``stderr``). With ``check=True`` a non-zero exit fails the test
    showing the output's tail.
``demo_coco``
    ``dict(data_root, train_ann, val_ann)``: a generated COCO-format set in
    the real layout (``annotations/instances_{train,val}2017.json``,
    ``train2017/``, ``val2017/``): 16 train and 8 val 128x128 images of the
    classes ('circle', 'square', 'triangle'), seed 0 (``make_coco_demo``).
``demo_cityscapes``
    ``dict(data_root, train_img_dir, val_img_dir)``: a generated Cityscapes
    layout set (``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png``,
    ``gtFine/.../*_gtFine_labelTrainIds.png`` with train ids 0-18 and 255):
    8 train and 4 val 128x256 images, seed 0 (``make_cityscapes_demo``).
``det_demo_config`` / ``seg_demo_config``
    ``str`` paths of ``configs/demo/retinanet_r18-aconc_fpn_demo.py`` (RetinaNet,
    ResNetACON-18 ACON-C, 64-channel FPN) and
    ``configs/demo/pspnet_r18-d8-aconc_demo.py`` (PSPNet, dilated ResNetACON-18).
``demo_cfg_options``
    ``demo_cfg_options(task, data_root, iters=4, batch_size=2)`` -> ``list[str]``
    of ``KEY=VALUE`` strings for ``--cfg-options``: points a demo config (or
    any config inheriting the stock COCO/Cityscapes ones) at ``data_root``
    and shortens its schedule to ``iters`` iterations (constant lr), validating
    and saving a checkpoint at the end; for ``'det'`` it also sets
    ``model.test_cfg.score_thr=0.0`` so that a barely trained detector still
    gets a COCO score. ``task`` is ``'det'`` or ``'seg'``. Works with
    mmdet's/mmseg's own train scripts too (they have no ``--data-root``).
``tiny_det_checkpoint``
    A detector trained for 6 iterations on ``demo_coco`` through
    ``tools/train.py`` (ACON-C backbone, so it holds ``p1``/``p2``/``beta``):
    ``SimpleNamespace(config, checkpoint, work_dir, data_root, metrics)``.
    ``config`` is the config as run (dumped by mmengine into the work dir,
    data root included), ``checkpoint`` the ``iter_6.pth`` file, ``metrics``
    the validation metrics training reported (``coco/bbox_mAP``, ...).
    Its ``model.test_cfg.score_thr`` is 0 (every box kept) and the validation
    detections are in ``<work_dir>/val_preds.bbox.json``.
``tiny_seg_checkpoint``
    The same for the PSPNet demo config on ``demo_cityscapes`` (``mIoU``, ...).
``cpu_ext``
    The compiled C++ extension of the ops (:func:`acon_mm.ops.load_cpu_ext`,
    sources in ``acon_mm/ops/csrc``); the test is skipped where it cannot be
    built (no compiler).

Do not modify what these fixtures return (other tests share it): copy the
checkpoint/data into your own ``tmp_path`` first if a test writes there.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# This machine has no CUDA: the tools run on the CPU on purpose, in process and
# in subprocesses (tests of the refusal itself unset it).
os.environ.setdefault('ACON_MM_ALLOW_CPU', '1')

REPO_ROOT = Path(__file__).resolve().parents[1]
DET_DEMO_CONFIG = REPO_ROOT / 'configs/demo/retinanet_r18-aconc_fpn_demo.py'
SEG_DEMO_CONFIG = REPO_ROOT / 'configs/demo/pspnet_r18-d8-aconc_demo.py'


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


def _tool_env(extra=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = str(REPO_ROOT) + (
        os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env.setdefault('OMP_NUM_THREADS', '2')
    # busy-waiting OpenMP threads are many times slower on a shared machine
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    env['PYTHONWARNINGS'] = 'ignore'
    if extra:
        env.update(extra)
    return env


def _run_tool(script, *args, timeout=300, env=None, check=True, cwd=None):
    cmd = [sys.executable]
    cmd += [script] if script.startswith('-') else [str(REPO_ROOT / script)
                                                    if not osp.isabs(script)
                                                    else script]
    cmd += [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=str(cwd or REPO_ROOT), env=_tool_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited with {proc.returncode}\n'
                    f'--- stdout (tail) ---\n{proc.stdout[-4000:]}\n'
                    f'--- stderr (tail) ---\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def run_tool():
    return _run_tool


@pytest.fixture(scope='session')
def demo_coco(tmp_path_factory):
    from acon_mm.testing import make_coco_demo
    root = tmp_path_factory.mktemp('demo_data') / 'coco'
    return make_coco_demo(str(root), num_train=16, num_val=8,
                          img_size=(128, 128), seed=0)


@pytest.fixture(scope='session')
def demo_cityscapes(tmp_path_factory):
    from acon_mm.testing import make_cityscapes_demo
    root = tmp_path_factory.mktemp('demo_data') / 'cityscapes'
    return make_cityscapes_demo(str(root), num_train=8, num_val=4,
                                img_size=(128, 256), seed=0)


@pytest.fixture(scope='session')
def det_demo_config() -> str:
    return str(DET_DEMO_CONFIG)


@pytest.fixture(scope='session')
def seg_demo_config() -> str:
    return str(SEG_DEMO_CONFIG)


def demo_cfg_options(task, data_root, iters=4, batch_size=2):
    """``--cfg-options`` items: data root, a short schedule, save at the end."""
    root = str(data_root).rstrip('/') + '/'
    opts = [f'{s}_dataloader.dataset.data_root={root}'
            for s in ('train', 'val', 'test')]
    if task == 'det':
        ann = root + 'annotations/instances_val2017.json'
        opts += [f'val_evaluator.ann_file={ann}',
                 f'test_evaluator.ann_file={ann}',
                 # keep every box: a detector trained for a few iterations
                 # scores below the default 0.05, leaving COCO nothing to rate
                 'model.test_cfg.score_thr=0.0']
    elif task != 'seg':
        raise ValueError(f"task must be 'det' or 'seg', got {task!r}")
    opts += [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'train_dataloader.batch_size={batch_size}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1',
        # a constant learning rate: the demo schedules span hundreds of iters
        "param_scheduler=[]",
    ]
    return opts


@pytest.fixture(scope='session', name='demo_cfg_options')
def _demo_cfg_options_fixture():
    return demo_cfg_options


def read_val_metrics(work_dir):
    """The last validation metrics mmengine logged in ``work_dir``."""
    found = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if any(k.startswith(('coco/', 'mIoU', 'aAcc')) for k in rec):
                    found = rec
    return found


def _train_tiny(tmp_path_factory, config, task, data_root, name):
    work_dir = tmp_path_factory.mktemp(name)
    iters = 6
    extra = []
    if task == 'det':
        # write the validation detections to val_preds.bbox.json
        extra = [f'val_evaluator.outfile_prefix={work_dir}/val_preds']
    _run_tool('tools/train.py', config, '--work-dir', work_dir,
              '--cfg-options', *demo_cfg_options(task, data_root, iters=iters),
              *extra, timeout=400)
    ckpt = work_dir / f'iter_{iters}.pth'
    assert ckpt.is_file(), f'training wrote no {ckpt}'
    dumped = work_dir / osp.basename(config)
    assert dumped.is_file(), f'training wrote no config dump {dumped}'
    return SimpleNamespace(config=str(dumped), checkpoint=str(ckpt),
                           work_dir=str(work_dir), data_root=str(data_root),
                           metrics=read_val_metrics(str(work_dir)))


@pytest.fixture(scope='session')
def tiny_det_checkpoint(tmp_path_factory, demo_coco):
    return _train_tiny(tmp_path_factory, str(DET_DEMO_CONFIG), 'det',
                       demo_coco['data_root'], 'tiny_det')


@pytest.fixture(scope='session')
def tiny_seg_checkpoint(tmp_path_factory, demo_cityscapes):
    return _train_tiny(tmp_path_factory, str(SEG_DEMO_CONFIG), 'seg',
                       demo_cityscapes['data_root'], 'tiny_seg')


@pytest.fixture
def cpu_ext():
    from acon_mm.ops import cpu_ext_error, load_cpu_ext
    ext = load_cpu_ext()
    if ext is None:
        pytest.skip(f'the C++ extension could not be built here: {cpu_ext_error()}')
    return ext
