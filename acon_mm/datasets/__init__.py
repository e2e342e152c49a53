"""Data sets that name bad data: file, annotation id, value.

``ValidatedCocoDataset`` (mmdet) and ``ValidatedCityscapesDataset`` (mmseg)
are drop-in replacements for ``CocoDataset`` / ``CityscapesDataset``,
``ValidatedImageNet`` reads ImageNet's folder / ``meta/*.txt`` layouts,
``ValidatedCIFAR10`` either CIFAR-10 version without unpickling code
(``dataset=dict(type='ValidatedCocoDataset', ...)``); the checks themselves
are plain functions usable on their own (:func:`check_coco`,
:func:`check_seg_map`).
"""
import importlib.util

from .cifar import ValidatedCIFAR10, load_cifar_pickle, read_cifar, write_cifar
from .imagenet import ValidatedImageNet
from .transforms import OfficialResizeShortSide
from .validation import (
    DataSampleError,
    DataValidationError,
    check_coco,
    check_seg_map,
    format_problems,
)

__all__ = [
    'DataSampleError', 'DataValidationError', 'check_coco', 'check_seg_map',
    'format_problems', 'ValidatedImageNet', 'OfficialResizeShortSide', 'ValidatedCIFAR10',
    'load_cifar_pickle', 'read_cifar', 'write_cifar'
]

# mmdet and mmseg are part of the pinned stack; stay importable without them
if importlib.util.find_spec('mmdet') is not None:
    from .coco import ValidatedCocoDataset  # noqa: F401
    __all__.append('ValidatedCocoDataset')
if importlib.util.find_spec('mmseg') is not None:
    from .cityscapes import ValidatedCityscapesDataset  # noqa: F401
    __all__.append('ValidatedCityscapesDataset')
