#!/usr/bin/env python
"""Generate the small demo datasets in the real COCO and Cityscapes layouts.

    python tools/misc/make_demo_data.py                 # -> data/demo/{coco,cityscapes}
    python tools/misc/make_demo_data.py --out-dir DIR --seed 1 --only coco
    python tools/misc/make_demo_data.py --only imagenet  # -> data/demo/imagenet
    python tools/misc/make_demo_data.py --imagenet       # all three

The output is deterministic in ``--seed``; the project's configs read it
through ``data_root`` exactly as they read the real data (see README, Data).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from acon_mm.testing import (make_cityscapes_demo, make_coco_demo,  # noqa: E402
                             make_imagenet_demo)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out-dir', default='data/demo',
                   help='writes OUT_DIR/coco and OUT_DIR/cityscapes')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--only', choices=['coco', 'cityscapes', 'imagenet'],
                   default=None)
    p.add_argument('--imagenet', action='store_true',
                   help='also write OUT_DIR/imagenet, a small classification '
                   'set in ImageNet\'s folder layout (train/<class>/*.JPEG, '
                   'val/..., meta/{train,val}.txt) for the pretraining demo')
    p.add_argument('--imagenet-train', type=int, default=60,
                   help='training images per class')
    p.add_argument('--imagenet-val', type=int, default=20,
                   help='validation images per class')
    p.add_argument('--imagenet-size', type=int, nargs=2, default=[64, 64],
                   metavar=('H', 'W'))
    p.add_argument('--coco-train', type=int, default=400)
    p.add_argument('--coco-val', type=int, default=50)
    p.add_argument('--coco-size', type=int, nargs=2, default=[128, 128],
                   metavar=('H', 'W'))
    p.add_argument('--cityscapes-train', type=int, default=40)
    p.add_argument('--cityscapes-val', type=int, default=10)
    p.add_argument('--cityscapes-size', type=int, nargs=2, default=[128, 256],
                   metavar=('H', 'W'))
    p.add_argument('--force', action='store_true',
                   help='regenerate even if OUT_DIR already holds this data')
    return p.parse_args(argv)


def _generate(name, root, params, force, fn):
    stamp = osp.join(root, '.acon_mm_demo.json')
    if not force and osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                print(f'{name}: {root} is up to date (seed {params["seed"]})')
                return
    fn(root, **params)
    with open(stamp, 'w') as f:
        json.dump(params, f)
    print(f'{name}: wrote {root} (seed {params["seed"]})')


def main(argv=None):
    args = parse_args(argv)
    if args.only in (None, 'coco'):
        _generate('COCO demo', osp.join(args.out_dir, 'coco'),
                  dict(num_train=args.coco_train, num_val=args.coco_val,
                       img_size=list(args.coco_size), seed=args.seed),
                  args.force, make_coco_demo)
    if args.only in (None, 'cityscapes'):
        _generate('Cityscapes demo', osp.join(args.out_dir, 'cityscapes'),
                  dict(num_train=args.cityscapes_train,
                       num_val=args.cityscapes_val,
                       img_size=list(args.cityscapes_size), seed=args.seed),
                  args.force, make_cityscapes_demo)
    if args.only == 'imagenet' or (args.only is None and args.imagenet):
        _generate('ImageNet-layout demo', osp.join(args.out_dir, 'imagenet'),
                  dict(num_train=args.imagenet_train,
                       num_val=args.imagenet_val,
                       img_size=list(args.imagenet_size), seed=args.seed),
                  args.force, make_imagenet_demo)


if __name__ == '__main__':
    main()
