#!/usr/bin/env python
"""Train a detector (mmdet), a segmentor (mmseg) or an ImageNet classifier
(mmpretrain) from an acon-mm config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--data-root DIR] [--cfg-options KEY=VALUE ...]
    bash tools/dist_train.sh CONFIG GPUS [...]     # torchrun, several GPUs/nodes

The config's ``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain') tells which
library's modules to register. Without CUDA the run stops, unless ``--cpu`` (or
``ACON_MM_ALLOW_CPU=1``) asks for the CPU: then the distributed backend becomes
gloo and SyncBN becomes BN, each with a warning. Pretrained
backbone weights named by an ``init_cfg`` are checked before anything is
built; a missing file is reported with the converter command that writes it,
and weights whose recorded input convention (e.g. BGR 0-255, no mean/std)
contradicts the config's data_preprocessor stop the run (exit status 2).

This script only parses the arguments: the config is built by
:func:`acon_mm.engine.run_config.build_train_cfg` and trained by
:func:`acon_mm.engine.runner_utils.run_train`.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from acon_mm.engine.run_config import build_train_cfg  # noqa: E402
from acon_mm.engine.runner_utils import exit_on_setup_error, run_train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector, segmentor or classifier (acon-mm)')
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
    parser.add_argument(
        '--allow-download', action='store_true',
        help='let the model download initial weights it names by URL '
        '(open-mmlab://, torchvision://, http(s)://) that are not in the local '
        'cache; without it such a run stops before it starts')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm',
                                               'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch (dist_train.sh); not to give by hand')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = build_train_cfg(
        args.config, cfg_options=args.cfg_options, launcher=args.launcher,
        data_root=args.data_root, work_dir=args.work_dir, amp=args.amp,
        auto_scale_lr=args.auto_scale_lr, resume=args.resume)
    with exit_on_setup_error():
        run_train(cfg, config=args.config, launcher=args.launcher,
                  allow_cpu=args.cpu, allow_download=args.allow_download)


if __name__ == '__main__':
    main()
