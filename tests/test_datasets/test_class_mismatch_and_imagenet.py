"""Bad input named with the file: COCO classes that are not in the file, an
ImageNet-layout folder with missing classes, bad labels or unreadable images."""
import json
import os
import os.path as osp

import pytest

import acon_mm  # noqa: F401
from acon_mm.datasets import DataSampleError, DataValidationError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RELU = 'configs/retinanet/retinanet_r50-relu_fpn_1x_coco.py'


def _coco_dataset(demo_coco, **kw):
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    from acon_mm.datasets import ValidatedCocoDataset
    return ValidatedCocoDataset(
        data_root=demo_coco['data_root'],
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=[], **kw)


def test_coco_classes_not_in_the_file_are_named(demo_coco):
    with pytest.raises(DataValidationError) as err:
        _coco_dataset(demo_coco)  # COCO's 80 classes
    msg = str(err.value)
    assert 'instances_train2017.json' in msg
    assert "'circle', 'square', 'triangle'" in msg and 'person' in msg
    assert 'metainfo=dict(classes=' in msg and 'num_classes=3' in msg
    ds = _coco_dataset(demo_coco,
                       metainfo=dict(classes=('circle', 'square', 'triangle')))
    assert len(ds) > 0


def test_coco_all_images_filtered_is_named(demo_coco, tmp_path):
    data = json.load(open(demo_coco['train_ann']))
    data['annotations'] = []  # every image is then empty
    ann = tmp_path / 'empty.json'
    ann.write_text(json.dumps(data))
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    from acon_mm.datasets import ValidatedCocoDataset
    with pytest.raises(DataValidationError, match='all 16 images were dropped'):
        ValidatedCocoDataset(
            ann_file=str(ann),
            data_prefix=dict(img=osp.join(demo_coco['data_root'], 'train2017/')),
            metainfo=dict(classes=('circle', 'square', 'triangle')),
            filter_cfg=dict(filter_empty_gt=True), pipeline=[])


@pytest.mark.slow
def test_train_tool_names_the_class_mismatch(run_tool, demo_coco, tmp_path):
    proc = run_tool('tools/train.py', RELU, '--data-root',
                    demo_coco['data_root'], '--work-dir', str(tmp_path / 'w'),
                    '--cpu', '--cfg-options', 'model.backbone.init_cfg=None',
                    check=False, timeout=300)
    assert proc.returncode != 0
    assert 'need at least one array' not in proc.stderr
    assert 'instances_train2017.json' in proc.stderr
    assert "'circle', 'square', 'triangle'" in proc.stderr
    assert 'metainfo=dict(classes=' in proc.stderr


def _folder(root, classes, n=2, skip=()):
    import cv2
    import numpy as np
    for c in classes:
        os.makedirs(osp.join(root, c), exist_ok=True)
        if c in skip:
            continue
        for i in range(n):
            cv2.imwrite(osp.join(root, c, f'{c}_{i}.JPEG'),
                        np.full((8, 8, 3), 40 * i, np.uint8))


def test_imagenet_folder_missing_class_is_named(tmp_path):
    from acon_mm.datasets import ValidatedImageNet
    _folder(str(tmp_path / 'val'), ['a', 'c'])
    with pytest.raises(DataValidationError) as err:
        ValidatedImageNet(data_root=str(tmp_path), data_prefix='val',
                          metainfo=dict(classes=('a', 'b', 'c')))
    assert "class folders missing: ['b']" in str(err.value)
    assert str(tmp_path / 'val') in str(err.value)
    with pytest.raises(DataValidationError, match='num_classes=3'):
        ValidatedImageNet(data_root=str(tmp_path), data_prefix='val',
                          num_classes=3)
    _folder(str(tmp_path / 'val'), ['b'], skip=('b', ))
    with pytest.raises(DataValidationError, match='holds no image'):
        ValidatedImageNet(data_root=str(tmp_path), data_prefix='val',
                          metainfo=dict(classes=('a', 'b', 'c')))
    _folder(str(tmp_path / 'val'), ['b'])
    ds = ValidatedImageNet(data_root=str(tmp_path), data_prefix='val',
                           metainfo=dict(classes=('a', 'b', 'c')))
    assert [d['gt_label'] for d in ds] == [0, 0, 1, 1, 2, 2] or \
        sorted(ds.get_data_info(i)['gt_label'] for i in range(len(ds))) == \
        [0, 0, 1, 1, 2, 2]


def test_imagenet_ann_file_problems_are_named(tmp_path):
    from acon_mm.datasets import ValidatedImageNet
    _folder(str(tmp_path / 'train'), ['a', 'b'])
    meta = tmp_path / 'meta'
    meta.mkdir()
    (meta / 'train.txt').write_text('a/a_0.JPEG 0\nb/b_0.JPEG 7\n')
    with pytest.raises(DataValidationError) as err:
        ValidatedImageNet(data_root=str(tmp_path), ann_file='meta/train.txt',
                          data_prefix='train', num_classes=2)
    assert 'train.txt' in str(err.value) and 'line 2' in str(err.value)
    (meta / 'train.txt').write_text('a/a_0.JPEG 0\nb/missing.JPEG 1\n')
    with pytest.raises(DataValidationError, match='missing.JPEG'):
        ValidatedImageNet(data_root=str(tmp_path), ann_file='meta/train.txt',
                          data_prefix='train', num_classes=2)


def test_unreadable_image_is_named(tmp_path):
    from acon_mm.datasets import ValidatedImageNet
    _folder(str(tmp_path / 'train'), ['a', 'b'])
    bad = tmp_path / 'train' / 'b' / 'b_1.JPEG'
    bad.write_bytes(b'not a jpeg')
    ds = ValidatedImageNet(
        data_root=str(tmp_path), data_prefix='train',
        pipeline=[dict(type='LoadImageFromFile')])
    idx = next(i for i in range(len(ds))
               if ds.get_data_info(i)['img_path'].endswith('b_1.JPEG'))
    with pytest.raises(DataSampleError, match='b_1.JPEG'):
        ds[idx]
