#!/usr/bin/env python
"""Convert an official ACON / meta-ACON ImageNet checkpoint for acon-mm backbones.

    python tools/model_converters/acon_official_to_mm.py SRC DST [--arch NAME]
    python tools/model_converters/acon_official_to_mm.py SRC DST --keep-head

SRC: an official checkpoint, downloaded from the "Trained Models" section of the
official repository's README (https://github.com/nmaac/acon: OneDrive or BaiduYun;
nothing here downloads it), as ``{'state_dict': {'module.' + key: tensor}}``, or a
bare state dict, of ResNet-50/101/152 or ShuffleNetV2 0.5x/1.0x/1.5x/2.0x with
ACON-C or meta-ACON-C. The architecture is detected from the keys unless
``--arch`` (e.g. ``resnet50_acon``, ``shufflenetv2_1.0x_metaacon``) is given.
DST is then loaded by ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` in the
matching ``ResNetACON`` / ``ShuffleNetV2ACON``. Every key except the classifier is
mapped; missing, unexpected or mis-shaped tensors are refused (named) and nothing
is written. DST records the weights' input convention (raw BGR 0-255, no
mean/std) in ``meta['input_convention']``; tools/train.py and tools/test.py
refuse a config whose data_preprocessor contradicts it. ``--keep-head`` keeps
the ImageNet classifier and writes an mmpretrain ``ImageClassifier`` checkpoint
(``backbone.*``, ``head.fc.*``) for ``tools/test.py configs/imagenet/... DST``
(ImageNet top-1/top-5). The logic lives in :mod:`acon_mm.models.official_ckpt`.
"""
import argparse
import os
import sys
from typing import List, Optional

try:
    import acon_mm  # noqa: F401
except ImportError:  # running from a checkout without installing acon-mm
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
    import acon_mm  # noqa: F401

from acon_mm.models.official_ckpt import (  # noqa: E402
    OFFICIAL_ARCHS,
    ConversionError,
    convert_checkpoint,
)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Convert an official ACON / meta-ACON ImageNet checkpoint '
        '(ResNet-50/101/152, ShuffleNetV2 0.5x-2.0x) into an acon-mm backbone '
        'checkpoint for init_cfg=dict(type="Pretrained", checkpoint=DST).')
    parser.add_argument('src', help='official checkpoint ({"state_dict": ...} '
                        'with "module." prefixes, or a bare state dict)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--arch', choices=list(OFFICIAL_ARCHS), default=None,
                        metavar='NAME',
                        help='official network, one of ' + ', '.join(OFFICIAL_ARCHS)
                        + ' (default: detected from the keys)')
    parser.add_argument('--keep-head', action='store_true',
                        help='keep the ImageNet classifier: write an '
                        'mmpretrain ImageClassifier checkpoint (backbone.*, '
                        'head.fc.*) for tools/test.py configs/imagenet/...')
    args = parser.parse_args(argv)
    try:
        convert_checkpoint(args.src, args.dst, args.arch,
                           keep_head=args.keep_head)
    except (ConversionError, FileNotFoundError) as err:
        parser.exit(1, f'error: {err}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
