"""Bad data, named.

Each test corrupts a freshly generated COCO / Cityscapes-layout set in one
way and checks that ``ValidatedCocoDataset`` / ``ValidatedCityscapesDataset``
report it naming the file (and annotation id), at construction or when the
sample is reached, instead of a stack trace from deep inside a transform.
"""
import json
import os
import os.path as osp

import pytest
from mmengine.registry import DATASETS, DefaultScope

import acon_mm  # noqa: F401
from acon_mm.datasets import (
    DataSampleError,
    DataValidationError,
    ValidatedCityscapesDataset,
    ValidatedCocoDataset,
)
from acon_mm.testing import COCO_DEMO_CLASSES, make_cityscapes_demo, make_coco_demo

from conftest import REPO_ROOT

DET_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs')
]
SEG_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


@pytest.fixture(scope='module', autouse=True)
def _register():
    import mmdet.utils
    import mmseg.utils
    mmdet.utils.register_all_modules(init_default_scope=False)
    mmseg.utils.register_all_modules(init_default_scope=False)


@pytest.fixture
def coco(tmp_path):
    out = make_coco_demo(str(tmp_path / 'coco'), num_train=4, num_val=1,
                         img_size=(64, 64), max_size=30, min_size=10)
    with open(out['train_ann']) as f:
        out['json'] = json.load(f)
    return out


def _write(coco, data=None, text=None):
    with open(coco['train_ann'], 'w') as f:
        f.write(text if text is not None else json.dumps(data))


def _coco_dataset(coco, **kwargs):
    cfg = dict(type='ValidatedCocoDataset', data_root=coco['data_root'],
               ann_file='annotations/instances_train2017.json',
               data_prefix=dict(img='train2017/'),
               metainfo=dict(classes=COCO_DEMO_CLASSES),
               filter_cfg=dict(filter_empty_gt=False),
               pipeline=DET_PIPELINE, **kwargs)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(cfg)


def test_clean_coco_builds_and_loads(coco):
    ds = _coco_dataset(coco, bad_box='error')
    assert isinstance(ds, ValidatedCocoDataset) and len(ds) == 4
    sample = ds[0]
    assert sample['data_samples'].gt_instances.bboxes.shape[0] > 0
    assert ds.get_data_info(0)['ann_ids']


def test_missing_image_file_named_before_training(coco):
    name = coco['json']['images'][2]['file_name']
    os.remove(osp.join(coco['data_root'], 'train2017', name))
    with pytest.raises(DataValidationError) as info:
        _coco_dataset(coco)
    msg = str(info.value)
    assert name in msg and 'missing' in msg
    assert f'image id {coco["json"]["images"][2]["id"]}' in msg


def test_image_removed_during_training_named_when_reached(coco):
    ds = _coco_dataset(coco)
    path = ds.get_data_info(1)['img_path']
    os.remove(path)
    with pytest.raises(DataSampleError) as info:
        ds[1]
    msg = str(info.value)
    assert path in msg and 'LoadImageFromFile' in msg
    assert 'ann_ids=' in msg and coco['train_ann'] in msg


def test_malformed_json_named_with_line_and_column(coco):
    text = json.dumps(coco['json'], indent=1)
    cut = text.index('"annotations"')
    _write(coco, text=text[:cut] + text[cut:].replace(',', '', 1))
    with pytest.raises(DataValidationError) as info:
        _coco_dataset(coco)
    msg = str(info.value)
    assert 'malformed COCO JSON' in msg and coco['train_ann'] in msg
    assert 'line' in msg and 'column' in msg


def test_json_without_annotations_named(coco):
    data = dict(coco['json'])
    del data['annotations']
    _write(coco, data)
    with pytest.raises(DataValidationError, match="missing or not a list: "
                       "'annotations'"):
        _coco_dataset(coco)


def test_unknown_category_named_with_annotation_id(coco):
    data = coco['json']
    ann = data['annotations'][1]
    ann['category_id'] = 77
    _write(coco, data)
    with pytest.raises(DataValidationError) as info:
        _coco_dataset(coco)
    msg = str(info.value)
    assert coco['train_ann'] in msg
    assert f'annotation id {ann["id"]}' in msg
    assert 'category_id 77 is not in "categories"' in msg
    img = [i for i in data['images'] if i['id'] == ann['image_id']][0]
    assert img['file_name'] in msg


@pytest.mark.parametrize('box,what', [
    ([10, 10, 0, 5], 'non-positive size'),
    ([10, 10, 5, -3], 'non-positive size'),
    ([50, 40, 30, 10], 'outside the 64x64 image'),
    ([-20, 5, 10, 10], 'outside the 64x64 image'),
])
def test_bad_box_named_with_annotation_id(coco, box, what):
    data = coco['json']
    ann = data['annotations'][0]
    ann['bbox'] = box
    _write(coco, data)
    with pytest.raises(DataValidationError) as info:
        _coco_dataset(coco, bad_box='error')
    msg = str(info.value)
    assert f'annotation id {ann["id"]}' in msg and what in msg
    assert coco['train_ann'] in msg
    # the default policy reports the box (logged) and builds the dataset
    ds = _coco_dataset(coco)
    assert len(ds.box_problems) == 1 and f'annotation id {ann["id"]}' in \
        ds.box_problems[0]


def test_image_size_differs_from_json_named_when_reached(coco):
    data = coco['json']
    data['images'][0]['width'] = 80
    _write(coco, data)
    ds = _coco_dataset(coco)
    idx = [i for i in range(len(ds))
           if ds.get_data_info(i)['img_id'] == data['images'][0]['id']][0]
    with pytest.raises(DataSampleError, match=r'is 64x64 \(WxH\) but .*says '
                       r'80x64'):
        ds[idx]


def test_user_sees_the_named_error_from_train_py(coco, tmp_path,
                                                 det_demo_config, capsys):
    """What ``tools/train.py`` reports for an unknown category: the named error
    (``ERROR: ...``, no traceback) and exit status 2."""
    import importlib.util
    data = coco['json']
    ann = data['annotations'][0]
    ann['category_id'] = 99
    _write(coco, data)
    root = coco['data_root'].rstrip('/') + '/'
    spec = importlib.util.spec_from_file_location(
        'acon_tool_train', str(REPO_ROOT / 'tools/train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    with pytest.raises(SystemExit) as info:
        train.main([det_demo_config, '--work-dir', str(tmp_path / 'work'),
                    '--data-root', root, '--cfg-options',
                    'train_dataloader.dataset.type=ValidatedCocoDataset',
                    'train_cfg.max_iters=2',
                    # runners in one process share loggers/visualizers of one name
                    f'experiment_name=bad_category_{tmp_path.name}',
                    f'visualizer.name=vis_bad_category_{tmp_path.name}'])
    assert info.value.code == 2
    msg = capsys.readouterr().err
    assert msg.startswith('ERROR: bad COCO annotation file'), msg[-2000:]
    assert 'Traceback' not in msg
    assert coco['train_ann'] in msg
    assert f'annotation id {ann["id"]}' in msg and 'category_id 99' in msg


# -- Cityscapes ------------------------------------------------------------


@pytest.fixture
def cityscapes(tmp_path):
    return make_cityscapes_demo(str(tmp_path / 'cityscapes'), num_train=2,
                                num_val=1, img_size=(32, 64))


def _seg_dataset(cs, **kwargs):
    cfg = dict(type='ValidatedCityscapesDataset', data_root=cs['data_root'],
               data_prefix=dict(img_path='leftImg8bit/train',
                                seg_map_path='gtFine/train'),
               pipeline=SEG_PIPELINE, **kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


def _label(ds, i):
    import cv2
    path = ds.get_data_info(i)['seg_map_path']
    return path, cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_clean_cityscapes_loads(cityscapes):
    ds = _seg_dataset(cityscapes, scan_labels=True)
    assert isinstance(ds, ValidatedCityscapesDataset) and len(ds) == 2
    assert ds[0]['data_samples'].gt_sem_seg.data.shape[-2:] == (32, 64)


@pytest.mark.parametrize('bad', [19, 40, 254])
def test_label_values_outside_train_ids_named(cityscapes, bad):
    import cv2
    ds = _seg_dataset(cityscapes)
    path, lab = _label(ds, 1)
    lab[:3, :5] = bad
    cv2.imwrite(path, lab)
    with pytest.raises(DataSampleError) as info:
        ds[1]
    msg = str(info.value)
    assert path in msg and f'{bad} (15 px)' in msg
    assert 'outside 0-18 and 255' in msg
    # and before training with scan_labels=True
    with pytest.raises(DataValidationError, match=f'{bad} \\(15 px\\)'):
        _seg_dataset(cityscapes, scan_labels=True)


def test_label_and_image_of_different_sizes_named(cityscapes):
    import cv2
    ds = _seg_dataset(cityscapes)
    path, lab = _label(ds, 0)
    cv2.imwrite(path, cv2.resize(lab, (32, 16),
                                 interpolation=cv2.INTER_NEAREST))
    with pytest.raises(DataSampleError) as info:
        ds[0]
    msg = str(info.value)
    assert path in msg and ds.get_data_info(0)['img_path'] in msg
    assert '32x16 (WxH)' in msg and '64x32' in msg


def test_missing_label_file_named_before_training(cityscapes):
    ds = _seg_dataset(cityscapes)
    path = ds.get_data_info(0)['seg_map_path']
    os.remove(path)
    with pytest.raises(DataValidationError) as info:
        _seg_dataset(cityscapes)
    assert path in str(info.value)


def test_no_images_named(cityscapes, tmp_path):
    cfg_root = dict(cityscapes)
    cfg_root['data_root'] = str(tmp_path / 'nowhere')
    os.makedirs(osp.join(cfg_root['data_root'], 'leftImg8bit', 'train'))
    with pytest.raises(DataValidationError, match='no images ending in'):
        _seg_dataset(cfg_root)


@pytest.mark.slow
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_validated_datasets_train_and_evaluate_through_train_py(
        task, tmp_path, det_demo_config, seg_demo_config, demo_coco,
        demo_cityscapes):
    """Drop-in: the demo configs train and evaluate with the validated types."""
    import importlib.util

    from conftest import demo_cfg_options, read_val_metrics
    config, root, dtype = (
        (det_demo_config, demo_coco['data_root'], 'ValidatedCocoDataset')
        if task == 'det' else
        (seg_demo_config, demo_cityscapes['data_root'],
         'ValidatedCityscapesDataset'))
    spec = importlib.util.spec_from_file_location(
        'acon_tool_train', str(REPO_ROOT / 'tools/train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    work = tmp_path / 'work'
    train.main([config, '--work-dir', str(work), '--cfg-options',
                *demo_cfg_options(task, root, iters=2), *[
                    f'{s}_dataloader.dataset.type={dtype}'
                    for s in ('train', 'val', 'test')],
                # runners in one process share loggers/visualizers of one name
                f'experiment_name=validated_{task}_{tmp_path.name}',
                f'visualizer.name=vis_validated_{task}_{tmp_path.name}'])
    assert (work / 'iter_2.pth').is_file()
    metrics = read_val_metrics(str(work))
    assert ('coco/bbox_mAP' if task == 'det' else 'mIoU') in metrics
