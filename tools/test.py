#!/usr/bin/env python
"""Evaluate a checkpoint of an acon-mm detection, segmentation or ImageNet
classification (mmpretrain) config.

    python tools/test.py CONFIG CHECKPOINT|WORK_DIR [--out results.pkl] [--show-dir DIR]
                         [--data-root DIR] [--cfg-options KEY=VALUE ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]

Prints the config's test metrics (COCO bbox mAP for detection through
pycocotools, mIoU for segmentation, top-1/top-5 for classification), ``--out``
dumps the raw predictions of every test image to a pickle file, ``--show-dir``
draws them. Without CUDA the run stops unless ``--cpu`` (or
``ACON_MM_ALLOW_CPU=1``) asks for the CPU (then: gloo backend, SyncBN -> BN,
each with a warning). A missing checkpoint, or one whose recorded input
convention contradicts the config's data_preprocessor, stops the run (exit
status 2).

This script only parses the arguments: the config is built by
:func:`acon_mm.engine.run_config.build_test_cfg` and tested by
:func:`acon_mm.engine.runner_utils.run_test`.
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from acon_mm.engine.run_config import build_test_cfg  # noqa: E402
from acon_mm.engine.runner_utils import (  # noqa: E402
    exit_on_setup_error,
    resolve_checkpoint,
    run_test,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector, segmentor or classifier '
        '(acon-mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (.pth), or the work dir of '
                        'a training run: its latest complete checkpoint is used')
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch (dist_test.sh); not to give by hand')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out!r}: the output file must be a .pkl file')
    return args


def main(argv=None):
    args = parse_args(argv)
    with exit_on_setup_error():
        args.checkpoint = resolve_checkpoint(args.checkpoint)
    cfg, task, drawn = build_test_cfg(
        args.config, args.checkpoint, cfg_options=args.cfg_options,
        launcher=args.launcher, data_root=args.data_root,
        work_dir=args.work_dir, out=args.out, show_dir=args.show_dir,
        show=args.show, wait_time=args.wait_time)
    with exit_on_setup_error():
        return run_test(cfg, task, args.checkpoint, launcher=args.launcher,
                        allow_cpu=args.cpu, out=args.out, drawn=drawn)


if __name__ == '__main__':
    logging.captureWarnings(False)
    main()
