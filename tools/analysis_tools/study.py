#!/usr/bin/env python
"""Compare activations: train and test a config family, report the numbers.

    # the config family found by name: retinanet_r50-{relu,swish,aconc,metaacon}_fpn_1x_coco.py
    python tools/analysis_tools/study.py configs/retinanet/retinanet_r50-aconc_fpn_1x_coco.py \\
        --seeds 0 1 2 --gpus 8
    # one base config, the activation replaced (model.backbone.acon_cfg)
    python tools/analysis_tools/study.py configs/demo/retinanet_r18-aconc_fpn_demo.py \\
        --activations ReLU SwishBeta AconC MetaAconC --seeds 0 1 2 \\
        --data-root data/demo/coco --cpu

Members: one CONFIG and its siblings that differ only in the activation name
(relu, swish, acona, aconb, aconc, metaacon), or the CONFIGs given, or one
CONFIG with --activations. Members that differ in more than the activation
(acon_cfg, act_cfg of ACON types, the backbone's init_cfg.checkpoint) are
refused with the differing keys, unless --allow-differences.

Each member and seed is trained with tools/train.py (tools/dist_train.sh with
--gpus N) and its final checkpoint tested with tools/test.py, one after
another (--cpu --jobs N: N at a time), in WORK_DIR/<member>_seed<k>/ (default WORK_DIR:
work_dirs/study/<config name without the activation>); the configs as run are
in WORK_DIR/configs/. --resume skips tested runs and resumes the others;
--collect-only reports existing runs (made elsewhere, same layout).

Report in WORK_DIR: study.md, study.csv, study.json (test metrics mean ± std
over seeds with each seed's value, Δ against ReLU, parameters and FLOPs,
seconds per iteration, peak memory, the checkpoints), study_curves.png
(training loss and validation metric per iteration) and study_metrics.png.
See docs/study.md.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
# idle OpenMP threads sleep instead of spinning (CPU studies on busy machines)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('configs', nargs='+', metavar='CONFIG',
                   help='one config of a family, or the configs to compare')
    p.add_argument('--activations', nargs='+', metavar='TYPE',
                   help='compare these activation types on one base CONFIG '
                   "(e.g. ReLU SwishBeta AconC MetaAconC); an expression such as "
                   "'max(x, sigmoid(x))' is a SearchedActivation of it")
    p.add_argument('--activation-key', default='model.backbone.acon_cfg',
                   help='the key --activations replaces (default: %(default)s)')
    p.add_argument('--seeds', nargs='+', type=int, default=[0],
                   help='randomness.seed of the runs of each member '
                   '(default: 0)')
    p.add_argument('--work-dir', help='the study folder (default: '
                   'work_dirs/study/<family name>)')
    p.add_argument('--iters', type=int,
                   help='train each run for this many iterations (schedule '
                   'rescaled, validation and checkpoint at the end)')
    p.add_argument('--val-interval', type=int,
                   help='validate every N iterations (default with --iters: '
                   'once at the end; otherwise the config\'s)')
    p.add_argument('--gpus', type=int, default=1,
                   help='N > 1: tools/dist_train.sh / dist_test.sh on N GPUs')
    p.add_argument('--cpu', action='store_true',
                   help='pass --cpu to the tools (run without CUDA)')
    p.add_argument('--jobs', type=int, default=1,
                   help='with --cpu: train and test N runs at a time, each '
                   'with cpu_count/N threads (default 1)')
    p.add_argument('--data-root', help='passed to train.py and test.py')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of every member, key=value')
    p.add_argument('--resume', action='store_true',
                   help='skip finished runs, resume the unfinished one')
    p.add_argument('--collect-only', action='store_true',
                   help='run nothing; report the runs in the study folder')
    p.add_argument('--dry-run', action='store_true',
                   help='print the runs and their commands, run nothing')
    p.add_argument('--allow-differences', action='store_true',
                   help='accept members that differ in more than the '
                   'activation (the report lists the differences)')
    p.add_argument('--baseline', help='member the Δ columns compare with '
                   '(default: the ReLU one)')
    p.add_argument('--flops-shape', type=int, nargs=2, metavar=('H', 'W'),
                   help="FLOPs input size (default: the test pipeline's Resize)")
    p.add_argument('--no-flops', action='store_true',
                   help='do not count parameters and FLOPs')
    p.add_argument('--allow-missing', action='store_true',
                   help='exit 0 although some numbers are missing (the report lists '
                   'them with their runs\' folders; without this flag: exit 1)')
    args = p.parse_args(argv)
    if args.gpus < 1:
        p.error(f'--gpus must be >= 1, got {args.gpus}')
    if args.iters is not None and args.iters < 1:
        p.error(f'--iters must be >= 1, got {args.iters}')
    if args.collect_only and args.resume:
        p.error('--collect-only runs nothing; --resume does not apply')
    return args


def main(argv=None):
    args = parse_args(argv)
    import acon_mm  # noqa: F401
    from acon_mm.analysis.study import StudyError, run_study
    try:
        report = run_study(
            args.configs, activations=args.activations, seeds=args.seeds,
            work_dir=args.work_dir, iters=args.iters,
            val_interval=args.val_interval, gpus=args.gpus, cpu=args.cpu,
            data_root=args.data_root, cfg_options=args.cfg_options,
            activation_key=args.activation_key, resume=args.resume,
            collect_only=args.collect_only, dry_run=args.dry_run,
            allow_differences=args.allow_differences, baseline=args.baseline,
            flops_shape=args.flops_shape, flops=not args.no_flops,
            jobs=args.jobs)
    except StudyError as err:
        print(f'ERROR: {err}', file=sys.stderr)
        sys.exit(2)
    # COCO's -1 (no ground truth of that size) is listed, but it is no missing run
    missing = [m for m in report.get('missing') or [] if not m.get('not_applicable')]
    if missing and not args.allow_missing:
        runs = sorted({m['work_dir'] for m in missing})
        print(f'ERROR: {len(missing)} numbers of the study are missing, from '
              f'{len(runs)} runs ({", ".join(runs)}); the report lists them under '
              '"Missing": ' + report['files'].get('md', 'study.md')
              + '. --allow-missing accepts a study with missing numbers.',
              file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == '__main__':
    main()
