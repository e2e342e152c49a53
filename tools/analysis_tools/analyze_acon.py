#!/usr/bin/env python
"""What did ACON learn? Per-layer switching factors of a trained model.

    python tools/analysis_tools/analyze_acon.py CONFIG CHECKPOINT \\
        [--images DIR] [--num-images N] [--out-dir DIR]

For every ACON layer, ordered by depth: the learned p1, p2 and beta per channel,
and the effective switching factor eta = |beta (p1 - p2)| (eta -> 0: the unit is
linear, "not activate"; large eta: max(p1 x, p2 x), "activate"). For meta-ACON
the beta is generated from the input, so it is measured over a set of images:
the first N images of the config's test dataset, or the images in ``--images
DIR`` passed through the config's own test pipeline (annotation loading
removed) and the model's data preprocessor, i.e. exactly what the model sees
at test time. A pixel-wise switch also gets its beta map drawn over an image.

Writes to ``--out-dir`` (default ``work_dirs/analysis/<config name>``):
acon_layers.csv/.json, acon_channels.csv, acon_switch_by_depth.png,
meta_acon_beta.png (meta-ACON), pixel_beta_overlay.png (pixel switch) and
summary.txt, which is also printed. Works for detection (mmdet) and
segmentation (mmseg) configs: the scope comes from the config's default_scope.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import acon_mm  # noqa: E402,F401
from acon_mm.analysis import (  # noqa: E402
    DEFAULT_OUT_ROOT,
    analyze_model,
    image_batches,
    load_model,
    write_analysis,
)
from acon_mm.engine.runner_utils import resolve_checkpoint  # noqa: E402
from acon_mm.models.layers import MetaAconC  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 2)[2])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint',
                        help='checkpoint file (.pth), or a work dir: its '
                        'last_checkpoint (else its newest *.pth) is used')
    parser.add_argument('--images', default=None,
                        help='folder of images for the generated (meta-ACON) '
                        'beta; default: the config\'s test dataset')
    parser.add_argument('--num-images', type=int, default=8,
                        help='how many images to run (default: %(default)s)')
    parser.add_argument('--linear-thresh', type=float, default=0.1,
                        help='a layer is nearly linear when the median over '
                        'its channels of |beta (p1 - p2)| is below this '
                        '(default: %(default)s)')
    parser.add_argument('--out-dir', default=None,
                        help='output directory (default: '
                        f'{DEFAULT_OUT_ROOT}/<config name>)')
    parser.add_argument('--dpi', type=int, default=110,
                        help='resolution of the PNG plots (default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    if args.out_dir is None:
        name = osp.splitext(osp.basename(args.config))[0]
        args.out_dir = osp.join(DEFAULT_OUT_ROOT, name)
    return args


def main(argv=None):
    args = parse_args(argv)
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    model, cfg = load_model(args.config, args.checkpoint, args.cfg_options)
    has_meta = any(isinstance(m, MetaAconC) for m in model.modules())
    batches = None
    if has_meta:
        batches = image_batches(cfg, args.images, args.num_images)
    result = analyze_model(model, batches, linear_thresh=args.linear_thresh)
    meta = dict(config=args.config, checkpoint=args.checkpoint,
                images=args.images or 'test dataset')
    files = write_analysis(result, args.out_dir, meta=meta, dpi=args.dpi)
    with open(files['summary']) as f:
        print(f.read().rstrip())
    print('\nwritten:')
    for path in files.values():
        print(f'  {path}')
    return result, files


if __name__ == '__main__':
    main()
