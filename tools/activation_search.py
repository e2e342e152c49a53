#!/usr/bin/env python
"""Search for an activation ("Searching for Activation Functions", Ramachandran et al.).

    # controller vs random at equal budget on the CIFAR-style ResNet-20 child, 2 CPU jobs
    python tools/activation_search.py configs/search/resnet20-relu_1xb128-1k_cifar-demo.py \\
        --strategies controller random --budget 12 --batch-size 4 --iters 300 \\
        --data-root data/demo/cifar --cpu --jobs 2
    # killed? the same command with --resume re-trains no finished child
    # the top 3 trained on the demo RetinaNet beside ReLU / SwishBeta / AconC
    ... --transfer 3 --transfer-config configs/demo/retinanet_r18-aconc_fpn_demo.py \\
        --transfer-data-root data/demo/coco --transfer-iters 300

Every candidate the strategies propose is screened (non-finite, constant or
x-independent functions rejected; functions equal on a fixed probe trained once),
then trained as a member of CONFIG with model.backbone.acon_cfg a
SearchedActivation of it, by the study machinery (tools/train.py + tools/test.py,
WORK_DIR/children/). The references ReLU, x*sigmoid(beta*x), max(x, sigmoid(x))
are trained first as controls. The state (WORK_DIR/search_state.pth) is written
after each batch. Report: WORK_DIR/search.md, .csv, .json, search_shapes.png,
search_curves.png. See docs/search.md.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('config', help='the child config')
    p.add_argument('--strategies', nargs='+', default=['controller', 'random'],
                   help='exhaustive, random, controller (default: %(default)s)')
    p.add_argument('--budget', type=int, default=8,
                   help='functions evaluated per strategy (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=4,
                   help='proposals per step, one PPO update each (default: %(default)s)')
    p.add_argument('--units', type=int,
                   help='core units (default: 1 for exhaustive, 2 otherwise)')
    p.add_argument('--unary', nargs='+', help="exhaustive's unary subset, e.g. 'sigmoid(x)'")
    p.add_argument('--binary', nargs='+', help="exhaustive's binary subset, e.g. 'x1*x2'")
    p.add_argument('--seeds', nargs='+', type=int, default=[0],
                   help="the children's training seeds (default: 0)")
    p.add_argument('--search-seed', type=int, default=0, help='seeds the strategies')
    p.add_argument('--references', nargs='*',
                   help='controls trained first (default: ReLU x*sigmoid(beta*x) '
                   "'max(x, sigmoid(x))')")
    p.add_argument('--metric', help='the test metric rewarded (default: bbox mAP, mIoU '
                   'or top-1, whichever the child reports)')
    p.add_argument('--iters', type=int, help="shorten the child's schedule to N iterations")
    p.add_argument('--val-interval', type=int,
                   help="validate the children every N iterations")
    p.add_argument('--work-dir', help='default: work_dirs/search/<config name>')
    p.add_argument('--data-root', help="the child's data (e.g. the real CIFAR-10)")
    p.add_argument('--cpu', action='store_true', help='train the children without CUDA')
    p.add_argument('--jobs', type=int, default=1, help='with --cpu: children at a time')
    p.add_argument('--gpus', type=int, default=1, help='GPUs per child (dist_train.sh)')
    p.add_argument('--resume', action='store_true', help='continue the search in WORK_DIR')
    p.add_argument('--report-only', action='store_true',
                   help='train nothing: write the report from the state')
    p.add_argument('--activation-key', default='model.backbone.acon_cfg',
                   help="the child config's key set per candidate (default: %(default)s)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help="override the child config's settings")
    p.add_argument('--transfer', type=int, default=0, metavar='K',
                   help='train the top K with --transfer-config through the study')
    p.add_argument('--transfer-config', help='the config the top K are transferred to')
    p.add_argument('--transfer-iters', type=int,
                   help="shorten the transfer config's schedule to N iterations")
    p.add_argument('--transfer-data-root', help="the transfer config's data")
    p.add_argument('--transfer-cfg-options', nargs='+', action=DictAction,
                   help="override the transfer config's settings")
    return p.parse_args(argv)


def _transfer(args, state, work_dir):
    from acon_mm.analysis.study import run_study
    from acon_mm.search.report import leaderboard, top_functions
    top = top_functions(leaderboard(state), args.transfer)
    acts = ['ReLU', 'SwishBeta', 'AconC'] + top
    report = run_study([args.transfer_config], activations=acts,
                       work_dir=osp.join(work_dir, 'transfer'), iters=args.transfer_iters,
                       cpu=args.cpu, jobs=args.jobs, data_root=args.transfer_data_root,
                       cfg_options=args.transfer_cfg_options, resume=True, flops=False)
    # the study's first section: its metric table (or why it has none)
    md = report['markdown'].split('\n## ')[0]
    blocks = [b for b in md.split('\n\n') if b.startswith('| activation')
              or b.startswith('**')]
    table = '\n\n'.join(blocks) or 'The study reported nothing: see its study.md.'
    return dict(config=args.transfer_config, top=top, table=table,
                study_md=report['files']['md'])


def main(argv=None):
    args = parse_args(argv)
    import torch

    from acon_mm.analysis.study import StudyError
    from acon_mm.search.report import write_search_report
    from acon_mm.search.runner import REFERENCES, STATE_FILE, run_activation_search
    work_dir = args.work_dir or osp.join(
        'work_dirs', 'search', osp.splitext(osp.basename(args.config))[0])
    if args.transfer and not args.transfer_config:
        sys.exit('error: --transfer K needs --transfer-config')
    try:
        if args.report_only:
            path = osp.join(work_dir, STATE_FILE)
            if not osp.isfile(path):
                raise StudyError(f'--report-only: no search state {path}')
            state = torch.load(path, weights_only=False)
        else:
            state = run_activation_search(
                args.config, work_dir, strategies=args.strategies, budget=args.budget,
                batch_size=args.batch_size, seeds=args.seeds,
                search_seed=args.search_seed, num_units=args.units, unary=args.unary,
                binary=args.binary,
                references=REFERENCES if args.references is None else args.references,
                resume=args.resume,
                trainer_kwargs=dict(metric=args.metric, iters=args.iters,
                                    val_interval=args.val_interval, gpus=args.gpus,
                                    cpu=args.cpu, data_root=args.data_root,
                                    jobs=args.jobs, cfg_options=args.cfg_options,
                                    activation_key=args.activation_key))
        transfer = _transfer(args, state, work_dir) if args.transfer else None
        paths = write_search_report(state, work_dir, transfer)
    except StudyError as err:
        sys.exit(f'error: {err}')
    with open(paths['md']) as f:
        print(f.read())
    print('written: ' + ', '.join(paths.values()))


if __name__ == '__main__':
    main()
