#!/usr/bin/env python
"""Generate the small demo datasets in the real COCO and Cityscapes layouts.

    python tools/misc/make_demo_data.py                 # -> data/demo/{coco,cityscapes}
    python tools/misc/make_demo_data.py --out-dir DIR --seed 1 --only coco
    python tools/misc/make_demo_data.py --only imagenet  # -> data/demo/imagenet
    python tools/misc/make_demo_data.py --imagenet       # all three

The output is deterministic in ``--seed``; the project's configs read it
through ``data_root`` exactly as they read the real data (see README, Data).
A dataset already written with the same options is left as it is (its
``.acon_mm_demo.json`` stamp; ``--force`` writes it again):
:func:`acon_mm.testing.make_demo_data`.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from acon_mm.testing import make_demo_data  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out-dir', default='data/demo',
                   help='writes OUT_DIR/coco and OUT_DIR/cityscapes')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the generated images (default: %(default)s)')
    p.add_argument('--only', choices=['coco', 'cityscapes', 'imagenet', 'cifar'],
                   default=None, help='write this set alone (default: COCO and Cityscapes)')
    p.add_argument('--imagenet', action='store_true',
                   help='also write OUT_DIR/imagenet, a small classification '
                   'set in ImageNet\'s folder layout (train/<class>/*.JPEG, '
                   'val/..., meta/{train,val}.txt) for the pretraining demo')
    p.add_argument('--imagenet-train', type=int, default=60,
                   help='training images per class')
    p.add_argument('--imagenet-val', type=int, default=20,
                   help='validation images per class')
    p.add_argument('--imagenet-size', type=int, nargs=2, default=[64, 64],
                   metavar=('H', 'W'), help='ImageNet image size (default: %(default)s)')
    p.add_argument('--coco-train', type=int, default=400,
                   help='COCO training images (default: %(default)s)')
    p.add_argument('--coco-val', type=int, default=50,
                   help='COCO validation images (default: %(default)s)')
    p.add_argument('--coco-size', type=int, nargs=2, default=[128, 128],
                   metavar=('H', 'W'), help='COCO image size (default: %(default)s)')
    p.add_argument('--cityscapes-train', type=int, default=40,
                   help='Cityscapes training images (default: %(default)s)')
    p.add_argument('--cityscapes-val', type=int, default=10,
                   help='Cityscapes validation images (default: %(default)s)')
    p.add_argument('--cityscapes-size', type=int, nargs=2, default=[128, 256],
                   metavar=('H', 'W'), help='Cityscapes image size (default: %(default)s)')
    p.add_argument('--cifar', action='store_true',
                   help='also write OUT_DIR/cifar, a generated 10-class 32x32 set in '
                   "CIFAR-10's python-version layout (the activation search's child data)")
    p.add_argument('--cifar-train', type=int, default=5000,
                   help='CIFAR training images (default: %(default)s)')
    p.add_argument('--cifar-test', type=int, default=1000,
                   help='CIFAR test images (default: %(default)s)')
    p.add_argument('--force', action='store_true',
                   help='regenerate even if OUT_DIR already holds this data')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    which = [args.only] if args.only else (
        ['coco', 'cityscapes'] + (['imagenet'] if args.imagenet else [])
        + (['cifar'] if args.cifar else []))
    make_demo_data(
        args.out_dir, seed=args.seed, which=which, force=args.force,
        coco_kwargs=dict(num_train=args.coco_train, num_val=args.coco_val,
                         img_size=list(args.coco_size)),
        cityscapes_kwargs=dict(num_train=args.cityscapes_train,
                               num_val=args.cityscapes_val,
                               img_size=list(args.cityscapes_size)),
        imagenet_kwargs=dict(num_train=args.imagenet_train,
                             num_val=args.imagenet_val,
                             img_size=list(args.imagenet_size)),
        cifar_kwargs=dict(num_train=args.cifar_train, num_test=args.cifar_test))


if __name__ == '__main__':
    main()
