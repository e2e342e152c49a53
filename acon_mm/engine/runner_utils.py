"""How acon-mm's tools check and start a run: the logic behind ``tools/train.py``,
``tools/test.py``, ``tools/demo.py`` and ``tools/misc/gpu_train_probe.py``.

The tools are thin (``parse_args()`` + ``main()``, as in mmdet/mmseg/mmpretrain);
everything between the parsed arguments and the Runner is here and in
:mod:`acon_mm.engine.run_config` (the config from the tools' options:
:func:`~acon_mm.engine.run_config.build_train_cfg`,
:func:`~acon_mm.engine.run_config.build_test_cfg`), so that every tool (and a
user's script) runs a config exactly as ``tools/train.py`` does. Here:

* :func:`config_task` tells a detection, segmentation or classification config
  apart by its ``default_scope`` (``'mmdet'`` / ``'mmseg'`` / ``'mmpretrain'``)
  and :func:`register_task_modules` registers that library's modules.
* :func:`set_data_root` points every dataset and evaluator of a config to
  another data root (e.g. the generated demo data).

Starting a run:

* :func:`run_train` / :func:`run_test`: register the modules, run
  :func:`prepare_run`, build the Runner, print the warnings, train / test;
  :func:`exit_on_setup_error` turns what must stop a run before it starts
  (:data:`RUN_SETUP_ERRORS`) into ``ERROR: ...`` on stderr and exit status 2.
* :func:`prepare_run`, the checks and adaptations before a Runner is built:
  :func:`check_pretrained_files` finds ``init_cfg=dict(type='Pretrained', ...)``
  pointing to a local file that does not exist and raises
  :class:`MissingPretrainedError` naming the file, the config key and the
  converter command, before any data is loaded; the input convention of the
  weights is checked against the config's ``data_preprocessor``
  (:mod:`acon_mm.engine.input_convention`); :func:`adapt_cfg_to_device` stops
  a run that finds no CUDA (:class:`NoCUDAError`) unless the CPU was asked for
  explicitly (``--cpu`` or ``ACON_MM_ALLOW_CPU=1``): a GPU job that lost its
  GPUs must not train on the CPU for days. On an explicit CPU run the
  distributed backend becomes ``gloo``, ``SyncBN`` becomes ``BN`` and
  DistributedDataParallel is built without ``device_ids``; every change is
  returned as a message the tool prints as a warning.
  :func:`init_cpu_distributed` starts the gloo process group for the
  ``pytorch`` (torchrun), ``slurm`` and ``mpi`` launchers on CPU, where
  mmengine's own ``init_dist`` would call ``torch.cuda.set_device``.
"""
import contextlib
import logging
import os
import os.path as osp
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict

from ..datasets.validation import DataValidationError
from ..models.utils.checkpoint_fit import CheckpointMismatchError
from ..utils.config import walk_dicts
from .input_convention import InputConventionError, check_input_convention
from .run_checks import (
    MissingCheckpointError,
    MissingPretrainedError,
    check_dataset_classes,
    check_pretrained_files,
    check_remote_weights,
    check_trained_checkpoint,
    find_missing_pretrained,
    resolve_checkpoint,
)

__all__ = [
    'TASKS', 'ALLOW_CPU_ENV', 'MissingPretrainedError', 'MissingCheckpointError',
    'NoCUDAError', 'cpu_allowed', 'config_task', 'register_task_modules',
    'adapt_cfg_to_device', 'init_cpu_distributed', 'check_pretrained_files',
    'find_missing_pretrained', 'set_data_root', 'replace_sync_bn', 'warn_all',
    'RUN_SETUP_ERRORS', 'prepare_run', 'exit_on_setup_error', 'run_train',
    'run_test', 'check_trained_checkpoint', 'resolve_checkpoint'
]

#: default_scope -> what the config trains
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation',
         'mmpretrain': 'classification'}

#: environment variable that allows a run without CUDA (the demo and tests set it)
ALLOW_CPU_ENV = 'ACON_MM_ALLOW_CPU'


class NoCUDAError(RuntimeError):
    """CUDA is not available and running on the CPU was not asked for."""


def cpu_allowed(flag: bool = False) -> bool:
    """Whether a run may use the CPU: ``flag`` (``--cpu``) or ``ACON_MM_ALLOW_CPU=1``."""
    return flag or os.environ.get(ALLOW_CPU_ENV, '0').strip().lower() in (
        '1', 'true', 'yes', 'on')


def config_task(cfg: Config) -> str:
    """The library a config belongs to, from its ``default_scope``.

    Args:
        cfg (Config): the config.

    Returns:
        str: ``'mmdet'`` (detection), ``'mmseg'`` (segmentation) or
        ``'mmpretrain'`` (ImageNet classification), a key of :data:`TASKS`.

    Raises:
        ValueError: the scope is missing or another library's; the message
            names the config file.
    """
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(
            f'config {cfg.filename or "<in memory>"}: default_scope={scope!r}; '
            f'acon-mm tools run detection (default_scope=\'mmdet\'), '
            "segmentation (default_scope='mmseg') and ImageNet classification "
            "(default_scope='mmpretrain') configs. Inherit a stock config "
            "(e.g. _base_ = 'mmdet::retinanet/...') or set default_scope.")
    return scope


def register_task_modules(task: str, init_default_scope: bool = False) -> None:
    """Register all modules of ``task`` (``'mmdet'``, ``'mmseg'``...) and acon-mm's.

    Args:
        task (str): a key of :data:`TASKS` (a config's ``default_scope``).
        init_default_scope (bool): also make ``task`` the current default scope
            (what the analysis tools need; the Runner does it itself).
    """
    import importlib
    if task not in TASKS:
        raise ValueError(f'unknown task {task!r}; expected one of {list(TASKS)}')
    importlib.import_module(f'{task}.utils').register_all_modules(
        init_default_scope=False)
    if init_default_scope:
        from mmengine.registry import init_default_scope as _init
        _init(task)


def replace_sync_bn(cfg: Config) -> List[str]:
    """Turn every ``dict(type='SyncBN')`` of ``cfg.model`` into ``BN``.

    Returns:
        list[str]: the config keys changed.
    """
    changed = []
    for path, d in walk_dicts(cfg.get('model', {}), 'model'):
        if d.get('type') in ('SyncBN', 'MMSyncBN'):
            d['type'] = 'BN'
            changed.append(path)
    return changed


def adapt_cfg_to_device(cfg: Config, launcher: str = 'none',
                        allow_cpu: bool = False) -> List[str]:
    """Check for CUDA; on an explicit CPU run adapt the config; return what changed.

    With CUDA nothing changes. Without CUDA the run stops with
    :class:`NoCUDAError` unless ``allow_cpu`` (``--cpu``) or
    ``ACON_MM_ALLOW_CPU=1``; then ``SyncBN`` -> ``BN`` (SyncBatchNorm needs
    CUDA in a distributed run), ``env_cfg.dist_cfg.backend`` -> ``'gloo'`` and
    DistributedDataParallel without ``device_ids``.

    Raises:
        NoCUDAError: no CUDA and the CPU was not asked for; the message names
            the config, what torch reports and the two ways to run on CPU.
    """
    if torch.cuda.is_available():
        return []
    if not cpu_allowed(allow_cpu):
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        raise NoCUDAError(
            f'config {cfg.filename or "<in memory>"}: CUDA is not available '
            f'(torch {torch.__version__}, built for CUDA '
            f'{torch.version.cuda or "none: a CPU-only build"}'
            + (f', CUDA_VISIBLE_DEVICES={visible!r}' if visible is not None
               else '') + '), so this run would train on the CPU. Refusing: '
            'check the GPUs / the CUDA build of torch, or, to run on the CPU '
            f'on purpose, pass --cpu or set {ALLOW_CPU_ENV}=1.')
    msgs = ['no CUDA: running on the CPU as asked' +
            ('' if launcher == 'none' else f' (launcher {launcher!r})')]
    changed = replace_sync_bn(cfg)
    if changed:
        msgs.append('no CUDA: SyncBN replaced by BN at ' + ', '.join(changed) +
                    ' (batch statistics are per process, not synchronised)')
    if cfg.get('sync_bn') is not None:
        cfg.pop('sync_bn')
        msgs.append('no CUDA: cfg.sync_bn dropped')
    if launcher != 'none':
        env_cfg = cfg.setdefault('env_cfg', ConfigDict())
        dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
        backend = dist_cfg.get('backend', 'nccl')
        if backend != 'gloo':
            dist_cfg['backend'] = 'gloo'
            msgs.append(f'no CUDA: distributed backend {backend!r} replaced by '
                        "'gloo'; running on CPU")
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
    return msgs


def init_cpu_distributed(launcher: str, port: Optional[int] = None) -> None:
    """Start the gloo process group on CPU for the pytorch/slurm launchers.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which fails
    without CUDA; once the group exists, mmengine's Runner uses it as it is.
    """
    import torch.distributed as dist
    if torch.cuda.is_available() or launcher == 'none' or dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {os.environ["SLURM_NODELIST"]} '
                '| head -n1')
        os.environ.setdefault('MASTER_PORT', str(port or 29500))
    elif launcher == 'mpi':
        os.environ.setdefault('RANK', os.environ['OMPI_COMM_WORLD_RANK'])
        os.environ.setdefault('WORLD_SIZE', os.environ['OMPI_COMM_WORLD_SIZE'])
        os.environ.setdefault('LOCAL_RANK',
                              os.environ['OMPI_COMM_WORLD_LOCAL_RANK'])
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        os.environ.setdefault('MASTER_PORT', str(port or 29500))
    elif launcher != 'pytorch':
        raise ValueError(f'unknown launcher {launcher!r}; expected one of '
                         "'none', 'pytorch', 'slurm', 'mpi'")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(
                f'--launcher {launcher}: environment variable {key} is not '
                'set; start the script with tools/dist_train.sh (torchrun) '
                'or tools/slurm_train.sh')
    dist.init_process_group(backend='gloo')


def set_data_root(cfg: Config, data_root: str) -> List[str]:
    """Point every dataset and evaluator of ``cfg`` to ``data_root``.

    Each ``data_root`` key under the ``*_dataloader`` entries is replaced, and
    every string in the ``*_evaluator`` entries that starts with the config's
    old top-level ``data_root`` (e.g. a COCO ``ann_file``) gets the new prefix.

    Returns:
        list[str]: the config keys changed.
    """
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'--data-root {data_root!r} is not a directory')
    new = data_root.rstrip('/') + '/'
    old = cfg.get('data_root')
    changed = []
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader:
            for path, d in walk_dicts(loader, f'{split}_dataloader'):
                if 'data_root' in d:
                    old = old or d['data_root']
                    d['data_root'] = new
                    changed.append(f'{path}.data_root')
    for split in ('val', 'test'):
        ev = cfg.get(f'{split}_evaluator')
        if not ev or not old:
            continue
        for path, d in walk_dicts(ev, f'{split}_evaluator'):
            for k, v in list(d.items()):
                if isinstance(v, str) and v.startswith(old):
                    d[k] = new + v[len(old):].lstrip('/')
                    changed.append(f'{path}.{k}')
    cfg.data_root = new
    return changed


def warn_all(msgs: List[str]) -> None:
    """Print each message as a warning through mmengine's logger.

    Args:
        msgs (list[str]): e.g. what :func:`prepare_run` returned.
    """
    from mmengine.logging import print_log
    for m in msgs:
        print_log(m, logger='current', level=logging.WARNING)


#: what :func:`prepare_run` (and :func:`run_test`, for a missing checkpoint)
#: raises for a run that must not start; :func:`exit_on_setup_error` turns them
#: into ``ERROR: <message>`` and exit status 2
RUN_SETUP_ERRORS = (MissingPretrainedError, InputConventionError, NoCUDAError,
                    MissingCheckpointError, CheckpointMismatchError, DataValidationError)


def prepare_run(cfg: Config, launcher: str = 'none', allow_cpu: bool = False,
                checkpoints: Tuple[str, ...] = (),
                check_pretrained: bool = True,
                allow_download: bool = False) -> List[str]:
    """The checks and adaptations ``tools/train.py`` and ``tools/test.py`` run
    before building a Runner, in this order:

    1. ``check_pretrained`` (training): :func:`check_pretrained_files` and
       :func:`check_remote_weights`;
    2. the input convention of every local ``Pretrained`` checkpoint and of
       ``checkpoints`` against the config's ``data_preprocessor``
       (:func:`acon_mm.engine.input_convention.check_input_convention`);
    3. :func:`adapt_cfg_to_device` (stops without CUDA unless ``allow_cpu``);
    4. :func:`init_cpu_distributed` for ``launcher``.

    Args:
        cfg (Config): the config as the tool will run it; changed in place on
            an explicit CPU run (see :func:`adapt_cfg_to_device`).
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        allow_cpu (bool): ``--cpu``: run on the CPU when CUDA is absent.
        checkpoints (tuple[str]): more checkpoints whose input convention must
            match the config (``tools/test.py``'s CHECKPOINT).
        check_pretrained (bool): check that the ``Pretrained`` files exist
            and that nothing would be downloaded.
        allow_download (bool): ``--allow-download``: let remote weights download.

    Returns:
        list[str]: warnings for the tool to print once the Runner's logger exists.

    Raises:
        MissingPretrainedError, InputConventionError, NoCUDAError
            (in :data:`RUN_SETUP_ERRORS`): the run must not start; each message
            names the culprit and the fix.
    """
    remote = []
    if check_pretrained:
        check_pretrained_files(cfg)
        remote = check_remote_weights(cfg, allow_download=allow_download)
    check_dataset_classes(cfg)
    msgs = check_input_convention(cfg, checkpoints=list(checkpoints), logger=None)
    msgs = adapt_cfg_to_device(cfg, launcher, allow_cpu=allow_cpu) + msgs + remote
    init_cpu_distributed(launcher)
    return msgs


@contextlib.contextmanager
def exit_on_setup_error() -> Iterator[None]:
    """Turn :data:`RUN_SETUP_ERRORS` into ``ERROR: <message>`` on stderr and exit 2.

    What ``tools/train.py``, ``tools/test.py`` and ``tools/demo.py`` wrap
    :func:`run_train` / :func:`run_test` in: a run that must not start ends
    with the message naming the culprit and the fix, not with a traceback.

    Raises:
        SystemExit: with status 2, for one of :data:`RUN_SETUP_ERRORS`.
    """
    try:
        yield
    except RUN_SETUP_ERRORS as err:
        print(f'ERROR: {err}', file=sys.stderr)
        sys.exit(2)


# --------------------------------------------------------------------------
# starting the run
# --------------------------------------------------------------------------
def run_train(cfg: Config, config: Optional[str] = None, launcher: str = 'none',
              allow_cpu: bool = False, allow_download: bool = False):
    """Train as ``tools/train.py`` does, from
    :func:`~acon_mm.engine.run_config.build_train_cfg`'s config.

    Registers the task's modules, runs :func:`prepare_run` (pretrained files,
    input convention, CUDA or ``allow_cpu``, CPU process group), builds the
    Runner, prints :func:`prepare_run`'s warnings and a line naming the task,
    the config and the work dir, then trains.

    Args:
        cfg (Config): the config (changed in place by :func:`prepare_run`).
        config (str, optional): the config file, for the log line (default:
            ``cfg.filename``).
        launcher (str): ``--launcher``.
        allow_cpu (bool): ``--cpu``.
        allow_download (bool): ``--allow-download`` (see :func:`check_remote_weights`).

    Returns:
        mmengine.runner.Runner: the runner, after training.

    Raises:
        MissingPretrainedError, InputConventionError, NoCUDAError: the run
            must not start (see :func:`exit_on_setup_error`).
    """
    from mmengine.logging import print_log
    from mmengine.runner import Runner
    task = config_task(cfg)
    register_task_modules(task)
    msgs = prepare_run(cfg, launcher, allow_cpu=allow_cpu, allow_download=allow_download)
    runner = Runner.from_cfg(cfg)
    warn_all(msgs)
    print_log(f'acon-mm: {TASKS[task]} config {config or cfg.filename}, work dir '
              f'{osp.abspath(cfg.work_dir)}', logger='current')
    runner.train()
    return runner


def _num(v: Any):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def run_test(cfg: Config, task: str, checkpoint: str, launcher: str = 'none',
             allow_cpu: bool = False, out: Optional[str] = None,
             drawn: str = '') -> Dict[str, Any]:
    """Test as ``tools/test.py`` does, from
    :func:`~acon_mm.engine.run_config.build_test_cfg`'s config.

    Registers the task's modules, checks that ``checkpoint`` exists, runs
    :func:`prepare_run` (the checkpoint's input convention against the
    config, CUDA or ``allow_cpu``; no pretrained-file check), builds the
    Runner, tests, and on rank 0 logs the metrics as one JSON line
    (``acon-mm: <task> metrics of <checkpoint>: {...}``) and where the raw and
    drawn predictions are.

    Args:
        cfg (Config): the config (``cfg.load_from`` is the checkpoint).
        task (str): its :func:`config_task`.
        checkpoint (str): the checkpoint under test.
        launcher (str): ``--launcher``.
        allow_cpu (bool): ``--cpu``.
        out (str, optional): ``--out``, for the log line.
        drawn (str): where the drawn predictions go, for the log line.

    Returns:
        dict: the metrics ``runner.test()`` returned.

    Raises:
        MissingCheckpointError, InputConventionError, NoCUDAError: the run
            must not start (see :func:`exit_on_setup_error`).
    """
    import json

    from mmengine.logging import print_log
    from mmengine.runner import Runner
    register_task_modules(task)
    if not osp.isfile(checkpoint):
        raise MissingCheckpointError(f'checkpoint {checkpoint!r} does not exist')
    check_trained_checkpoint(cfg, checkpoint)  # before its input convention: it may not fit
    # the checkpoints against the config's data_preprocessor, CUDA
    msgs = prepare_run(cfg, launcher, allow_cpu=allow_cpu,
                       checkpoints=(checkpoint, ), check_pretrained=False)
    runner = Runner.from_cfg(cfg)
    warn_all(msgs)
    metrics = runner.test()
    if runner.rank == 0:
        print_log(f'acon-mm: {TASKS[task]} metrics of {checkpoint}: '
                  + json.dumps({k: _num(v) for k, v in metrics.items()}),
                  logger='current')
        if out:
            print_log(f'raw predictions: {osp.abspath(out)}', logger='current')
        if drawn:
            print_log(f'drawn predictions: {drawn}', logger='current')
    return metrics
