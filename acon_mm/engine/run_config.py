"""The config a run of acon-mm's tools runs with, built from the tools' options.

:func:`build_train_cfg` / :func:`build_test_cfg` are the configs as
``tools/train.py`` / ``tools/test.py`` run them, from their options (config
file, ``--cfg-options``, ``--launcher``, ``--data-root``, ``--work-dir``, and
``--amp``, ``--auto-scale-lr``, ``--resume`` or ``CHECKPOINT``, ``--out``,
``--show-dir``, ``--show``); they are made of :func:`load_cfg`,
:func:`apply_run_options` (:func:`default_work_dir`), :func:`enable_amp`,
:func:`enable_auto_scale_lr`, :func:`apply_resume`,
:func:`enable_test_visualization` and :func:`add_result_dump`, so that a
user's script can apply one option as the tools do. Starting the run is
:mod:`acon_mm.engine.runner_utils`'s (:func:`~acon_mm.engine.runner_utils.run_train`,
:func:`~acon_mm.engine.runner_utils.run_test`).
"""
import logging
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from .checkpoint import find_latest_checkpoint
from .runner_utils import config_task, set_data_root

__all__ = [
    'parse_cfg_options', 'load_cfg', 'default_work_dir', 'apply_run_options',
    'enable_amp', 'enable_auto_scale_lr', 'apply_resume', 'build_train_cfg',
    'enable_test_visualization', 'add_result_dump', 'build_test_cfg'
]


def parse_cfg_options(items: Sequence[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` strings as ``--cfg-options`` parses them (mmengine's ``DictAction``).

    Args:
        items (Sequence[str]): e.g. ``['train_cfg.max_iters=2', 'a.b=[1,2]']``.

    Returns:
        dict: ``{'train_cfg.max_iters': 2, 'a.b': [1, 2]}``, for
        ``cfg_options`` of :func:`build_train_cfg` / :func:`build_test_cfg`.
    """
    import argparse

    from mmengine.config import DictAction
    if not items:
        return {}
    parser = argparse.ArgumentParser(prog='--cfg-options')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *items]).cfg_options or {}


def load_cfg(config: str, cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read ``config`` and merge ``--cfg-options`` into it.

    Args:
        config (str): the config file.
        cfg_options (dict, optional): ``--cfg-options`` as ``DictAction``
            parsed them (``{'a.b': value}``; see :func:`parse_cfg_options`).

    Returns:
        Config: the config.
    """
    cfg = Config.fromfile(config)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    return cfg


def default_work_dir(config: str) -> str:
    """``./work_dirs/<config name>``: the work dir when neither ``--work-dir``
    nor the config names one (mmdet's convention).

    Args:
        config (str): the config file.

    Returns:
        str: the work dir, relative to the current directory.
    """
    return osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])


def apply_run_options(cfg: Config, config: str, launcher: str = 'none',
                      data_root: Optional[str] = None,
                      work_dir: Optional[str] = None) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share, in place.

    Args:
        cfg (Config): the config (after ``--cfg-options``).
        config (str): its file (names the default work dir).
        launcher (str): ``--launcher``: becomes ``cfg.launcher``.
        data_root (str, optional): ``--data-root``: see :func:`set_data_root`.
        work_dir (str, optional): ``--work-dir``; without it the config's own
            ``work_dir``, else :func:`default_work_dir`.

    Raises:
        FileNotFoundError: ``data_root`` is not a directory.
    """
    cfg.launcher = launcher
    if data_root:
        set_data_root(cfg, data_root)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(config)


def enable_amp(cfg: Config) -> None:
    """``--amp``: mixed precision through mmengine's ``AmpOptimWrapper``, in place.

    A config that already uses ``AmpOptimWrapper`` stays as it is (with a
    warning).

    Args:
        cfg (Config): the config.

    Raises:
        AssertionError: the optimizer wrapper is neither ``OptimWrapper`` nor
            ``AmpOptimWrapper``.
    """
    from mmengine.logging import print_log
    opt = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if opt == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
    else:
        assert opt == 'OptimWrapper', (
            f'`--amp` is only supported when the optimizer wrapper type is '
            f'`OptimWrapper` but got {opt}.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: ``cfg.auto_scale_lr.enable = True``, in place.

    Args:
        cfg (Config): the config; it must hold ``auto_scale_lr`` with
            ``enable`` and ``base_batch_size``.

    Raises:
        RuntimeError: the config has no such ``auto_scale_lr``.
    """
    if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and \
            'base_batch_size' in cfg.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    else:
        raise RuntimeError('Can not find "auto_scale_lr" or '
                           '"auto_scale_lr.enable" or '
                           '"auto_scale_lr.base_batch_size" in your'
                           ' configuration file.')


def apply_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume [CKPT]`` of ``tools/train.py``, in place.

    ``--resume`` without CKPT resumes from the newest *complete* checkpoint
    of the work dir, as :func:`~acon_mm.engine.checkpoint.find_latest_checkpoint`
    finds it (a ``last_checkpoint`` pointer naming a file a kill left half
    written is passed over), not from mmengine's own lookup, which trusts the
    pointer; a work dir without one trains from scratch, and says so.

    Args:
        cfg (Config): the config; ``cfg.work_dir`` must be set (see
            :func:`apply_run_options`) for ``'auto'``.
        resume (str, optional): ``None`` (no ``--resume``: the config's own
            ``resume``/``load_from`` stay), ``'auto'`` (``--resume`` without
            CKPT: ``cfg.resume = True`` and ``cfg.load_from`` the latest
            complete checkpoint of the work dir; with none, ``cfg.resume =
            False`` and ``cfg.load_from = None``) or a checkpoint path
            (``cfg.resume = True``, ``cfg.load_from = resume``).
    """
    if resume == 'auto':
        from mmengine.logging import print_log
        latest = find_latest_checkpoint(cfg.work_dir)
        cfg.resume = latest is not None
        cfg.load_from = latest
        print_log(f'--resume: resuming from {latest}' if latest else
                  f'--resume: no complete checkpoint in {cfg.work_dir}, '
                  'training from scratch', logger='current')
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume


def build_train_cfg(config: str, cfg_options: Optional[Dict[str, Any]] = None,
                    launcher: str = 'none', data_root: Optional[str] = None,
                    work_dir: Optional[str] = None, amp: bool = False,
                    auto_scale_lr: bool = False,
                    resume: Optional[str] = None) -> Config:
    """The config as ``tools/train.py`` runs it, every option applied.

    In this order: ``--cfg-options`` (:func:`load_cfg`), the task check
    (:func:`config_task`), :func:`apply_run_options` (``--launcher``,
    ``--data-root``, ``--work-dir``), ``--amp`` (:func:`enable_amp`),
    ``--auto-scale-lr`` (:func:`enable_auto_scale_lr`), ``--resume``
    (:func:`apply_resume`). The device checks come later, in
    :func:`run_train` (:func:`prepare_run`).

    Args:
        config (str): the config file.
        cfg_options (dict, optional): ``--cfg-options`` (parsed by
            ``DictAction``; see :func:`parse_cfg_options`).
        launcher (str): ``--launcher``: ``'none'``, ``'pytorch'``, ``'slurm'``
            or ``'mpi'``.
        data_root (str, optional): ``--data-root``.
        work_dir (str, optional): ``--work-dir``.
        amp (bool): ``--amp``.
        auto_scale_lr (bool): ``--auto-scale-lr``.
        resume (str, optional): ``--resume``: ``None``, ``'auto'`` or a path.

    Returns:
        Config: the config.

    Raises:
        ValueError: the config's ``default_scope`` is not one of :data:`TASKS`.
    """
    cfg = load_cfg(config, cfg_options)
    config_task(cfg)
    apply_run_options(cfg, config, launcher, data_root, work_dir)
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        enable_auto_scale_lr(cfg)
    apply_resume(cfg, resume)
    return cfg


def enable_test_visualization(cfg: Config, task: str,
                              show_dir: Optional[str] = None, show: bool = False,
                              wait_time: float = 2) -> str:
    """``--show-dir`` / ``--show`` of ``tools/test.py``: turn drawing on, in place.

    Args:
        cfg (Config): the config; it needs ``default_hooks.visualization``.
        task (str): its :func:`config_task`.
        show_dir (str, optional): draw the predictions into this directory.
        show (bool): show them in a window.
        wait_time (float): seconds each shown image stays (``--wait-time``).

    Returns:
        str: where the drawn images will be (``''`` without ``show_dir``):
        ``show_dir`` itself for detection (``DetVisualizationHook`` writes
        ``<show_dir>/<image>``), ``show_dir/vis_data/vis_image`` for the
        visualizer's ``LocalVisBackend`` otherwise (segmentation, every batch).

    Raises:
        KeyError: the config has no ``default_hooks.visualization``.
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        hook_type = {'mmdet': 'DetVisualizationHook',
                     'mmseg': 'SegVisualizationHook'}.get(task, 'VisualizationHook')
        raise KeyError(f'config {cfg.filename or "<in memory>"}: '
                       'default_hooks.visualization is missing; --show-dir/--show '
                       f'need the {hook_type}')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if not show_dir:
        return ''
    show_dir = osp.abspath(show_dir)
    if task == 'mmdet':
        # DetVisualizationHook writes <test_out_dir>/<image file name>
        hook['test_out_dir'] = show_dir
        return show_dir
    # SegVisualizationHook draws every `interval`-th batch (default 50)
    # through the visualizer's LocalVisBackend:
    # <save_dir>/vis_data/vis_image/test_<image>_<step>.png
    hook['interval'] = 1
    cfg.visualizer['save_dir'] = show_dir
    return osp.join(show_dir, 'vis_data', 'vis_image')


def add_result_dump(cfg: Config, task: str, out: str) -> None:
    """``--out FILE.pkl`` of ``tools/test.py``: dump the raw predictions, in place.

    Appends a dump metric to ``cfg.test_evaluator``: mmdet's
    ``DumpDetResults`` (plain dicts) for detection, mmengine's ``DumpResults``
    (the data samples) otherwise.

    Args:
        cfg (Config): the config.
        task (str): its :func:`config_task`.
        out (str): the pickle file.
    """
    dump = ConfigDict(
        type='DumpDetResults' if task == 'mmdet' else 'mmengine.DumpResults',
        out_file_path=out)
    ev = cfg.test_evaluator
    cfg.test_evaluator = (list(ev) if isinstance(ev, (list, tuple)) else
                          [ev]) + [dump]


def build_test_cfg(config: str, checkpoint: str,
                   cfg_options: Optional[Dict[str, Any]] = None,
                   launcher: str = 'none', data_root: Optional[str] = None,
                   work_dir: Optional[str] = None, out: Optional[str] = None,
                   show_dir: Optional[str] = None, show: bool = False,
                   wait_time: float = 2) -> Tuple[Config, str, str]:
    """The config as ``tools/test.py`` runs it, every option applied.

    In this order: ``--cfg-options`` (:func:`load_cfg`), :func:`config_task`,
    :func:`apply_run_options`, ``cfg.load_from = checkpoint``, drawing
    (:func:`enable_test_visualization`, with ``show`` or ``show_dir``), the
    dump of the raw predictions (:func:`add_result_dump`, with ``out``).

    Args:
        config (str): the config file.
        checkpoint (str): the checkpoint to test.
        cfg_options (dict, optional): ``--cfg-options`` (parsed by ``DictAction``).
        launcher (str): ``--launcher``.
        data_root (str, optional): ``--data-root``.
        work_dir (str, optional): ``--work-dir``.
        out (str, optional): ``--out``: a ``.pkl`` file.
        show_dir (str, optional): ``--show-dir``.
        show (bool): ``--show``.
        wait_time (float): ``--wait-time``.

    Returns:
        tuple[Config, str, str]: the config, its task (:func:`config_task`)
        and where the drawn predictions will be (``''`` if not drawn).

    Raises:
        ValueError: the config's ``default_scope`` is not one of :data:`TASKS`.
    """
    cfg = load_cfg(config, cfg_options)
    task = config_task(cfg)
    apply_run_options(cfg, config, launcher, data_root, work_dir)
    cfg.load_from = checkpoint
    drawn = ''
    if show or show_dir:
        drawn = enable_test_visualization(cfg, task, show_dir, show, wait_time)
    if out is not None:
        add_result_dump(cfg, task, out)
    return cfg, task, drawn
