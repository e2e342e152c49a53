#!/usr/bin/env python
"""Evaluate a checkpoint of an acon-mm detection or segmentation config.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] [--show-dir DIR]
                         [--data-root DIR] [--cfg-options KEY=VALUE ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]

Prints the config's test metrics (COCO bbox mAP for detection through
pycocotools, mIoU for segmentation), ``--out`` dumps the raw predictions of
every test image to a pickle file, ``--show-dir`` draws them. Without CUDA
the run stops unless ``--cpu`` (or ``ACON_MM_ALLOW_CPU=1``) asks for the CPU
(then: gloo backend, SyncBN -> BN, each with a warning).
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from acon_mm.engine.runner_utils import (  # noqa: E402
    RUN_SETUP_ERRORS, TASKS, config_task, prepare_run, register_task_modules,
    set_data_root, warn_all)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector or segmentor (acon-mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file '
                        'containing evaluation metrics')
    parser.add_argument('--out', help='dump the raw predictions to this '
                        'pickle file (.pkl)')
    parser.add_argument('--show-dir', help='draw the predictions on the test '
                        'images and save them in this directory')
    parser.add_argument('--show', action='store_true',
                        help='show the drawn predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of --show (s)')
    parser.add_argument('--data-root', help='use this data root for every '
                        'dataset and evaluator of the config')
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
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out!r}: the output file must be a .pkl file')
    return args


def _visualization(cfg: Config, task: str, args) -> str:
    """Turn drawing on; return where the drawn images will be."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError(f'config {args.config}: default_hooks.visualization is '
                       'missing; --show-dir/--show need the '
                       f'{"DetVisualizationHook" if task == "mmdet" else "SegVisualizationHook"}')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if not args.show_dir:
        return ''
    show_dir = osp.abspath(args.show_dir)
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


def build_cfg(args):
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
    cfg.load_from = args.checkpoint
    drawn = ''
    if args.show or args.show_dir:
        drawn = _visualization(cfg, task, args)
    if args.out is not None:
        # mmdet's DumpDetResults stores plain dicts; for segmentation
        # mmengine's DumpResults stores the SegDataSamples
        dump = ConfigDict(
            type='DumpDetResults'
            if task == 'mmdet' else 'mmengine.DumpResults',
            out_file_path=args.out)
        ev = cfg.test_evaluator
        cfg.test_evaluator = (list(ev) if isinstance(ev, (list, tuple)) else
                              [ev]) + [dump]
    return cfg, task, drawn


def main(argv=None):
    args = parse_args(argv)
    cfg, task, drawn = build_cfg(args)
    register_task_modules(task)
    if not osp.isfile(args.checkpoint):
        print(f'ERROR: checkpoint {args.checkpoint!r} does not exist',
              file=sys.stderr)
        sys.exit(2)
    try:  # the checkpoints against the config's data_preprocessor, CUDA
        msgs = prepare_run(cfg, args.launcher, allow_cpu=args.cpu,
                           checkpoints=(args.checkpoint, ), check_pretrained=False)
    except RUN_SETUP_ERRORS as err:
        print(f'ERROR: {err}', file=sys.stderr)
        sys.exit(2)
    runner = Runner.from_cfg(cfg)
    warn_all(msgs)
    metrics = runner.test()
    if runner.rank == 0:
        print_log(f'acon-mm: {TASKS[task]} metrics of {args.checkpoint}: '
                  + json.dumps({k: _num(v) for k, v in metrics.items()}),
                  logger='current')
        if args.out:
            print_log(f'raw predictions: {osp.abspath(args.out)}',
                      logger='current')
        if drawn:
            print_log(f'drawn predictions: {drawn}', logger='current')
    return metrics


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


if __name__ == '__main__':
    logging.captureWarnings(False)
    main()
