#!/usr/bin/env python
"""Train a detector (mmdet) or a segmentor (mmseg) from an acon-mm config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--data-root DIR] [--cfg-options KEY=VALUE ...]
    bash tools/dist_train.sh CONFIG GPUS [...]     # torchrun, several GPUs/nodes

The config's ``default_scope`` ('mmdet' or 'mmseg') tells which library's
modules to register. Without CUDA the run stops, unless ``--cpu`` (or
``ACON_MM_ALLOW_CPU=1``) asks for the CPU: then the distributed backend becomes
gloo and SyncBN becomes BN, each with a warning. Pretrained
backbone weights named by an ``init_cfg`` are checked before anything is
built; a missing file is reported with the converter command that writes it,
and weights whose recorded input convention (e.g. BGR 0-255, no mean/std)
contradicts the config's data_preprocessor stop the run.
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from acon_mm.engine.runner_utils import (  # noqa: E402
    RUN_SETUP_ERRORS, TASKS, config_task, prepare_run, register_task_modules,
    set_data_root, warn_all)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector or segmentor (acon-mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without CKPT, from the latest checkpoint in '
        'the work dir')
    parser.add_argument('--data-root', help='use this data root for every '
                        'dataset and evaluator of the config (e.g. data/demo/'
                        'coco)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, xxx=yyy format')
    parser.add_argument(
        '--cpu', action='store_true',
        help='run on the CPU when CUDA is absent (otherwise such a run stops; '
        'the environment variable ACON_MM_ALLOW_CPU=1 does the same)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm',
                                               'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    """The config as the tool will run it (all command-line changes applied)."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    task = config_task(cfg)
    cfg.launcher = args.launcher
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
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
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    task = config_task(cfg)
    register_task_modules(task)
    try:
        msgs = prepare_run(cfg, args.launcher, allow_cpu=args.cpu)
    except RUN_SETUP_ERRORS as err:
        print(f'ERROR: {err}', file=sys.stderr)
        sys.exit(2)
    runner = Runner.from_cfg(cfg)
    warn_all(msgs)
    print_log(f'acon-mm: {TASKS[task]} config {args.config}, work dir '
              f'{osp.abspath(cfg.work_dir)}', logger='current')
    runner.train()


if __name__ == '__main__':
    main()
