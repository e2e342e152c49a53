"""Generated data for the demo and the tests (no download)."""
from .demo_data import (
    CITYSCAPES_CLASSES,
    COCO_DEMO_CLASSES,
    DEMO_DATASETS,
    make_cityscapes_demo,
    make_coco_demo,
    make_demo_data,
    make_imagenet_demo,
)

__all__ = [
    'CITYSCAPES_CLASSES', 'COCO_DEMO_CLASSES', 'DEMO_DATASETS', 'make_cityscapes_demo',
    'make_coco_demo', 'make_demo_data', 'make_imagenet_demo'
]
