"""tools/train.py, tools/test.py and mmdet's/mmseg's own train scripts on the demo data.

Every run here is real: the demo configs (ResNetACON ACON-C backbones) train
for a few iterations on generated COCO/Cityscapes-layout data and are evaluated
with pycocotools' COCO metric and mmseg's IoUMetric.
"""
import glob
import json
import os
import os.path as osp
import pickle

import pytest

from conftest import read_val_metrics

pytestmark = pytest.mark.slow  # tools/train.py and test.py in subprocesses

DET_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')
SEG_KEYS = ('aAcc', 'mIoU', 'mAcc')


def _metrics_line(stdout):
    for line in stdout.splitlines()[::-1]:
        if 'acon-mm:' in line and 'metrics of' in line:
            return json.loads(line[line.index('{'):])
    raise AssertionError('tools/test.py printed no metrics line:\n' +
                         stdout[-3000:])


def _load_ckpt(path):
    # through acon-mm's safe loader (weights_only=True + mmengine allow-list)
    from acon_mm.utils import safe_torch_load
    return safe_torch_load(path)


def test_train_det_via_tools_train(tiny_det_checkpoint):
    run = tiny_det_checkpoint
    ckpt = _load_ckpt(run.checkpoint)
    assert ckpt['meta']['iter'] == 6
    sd = ckpt['state_dict']
    # ACON-C parameters of the backbone were trained and saved
    assert any(k.startswith('backbone.') and k.endswith('.p1') for k in sd)
    for k in DET_KEYS:
        assert k in run.metrics, run.metrics
        assert 0.0 <= run.metrics[k] <= 1.0
    # the validation predictions were written and cover every val image
    preds = json.load(open(osp.join(run.work_dir, 'val_preds.bbox.json')))
    assert {p['image_id'] for p in preds} == set(range(100001, 100009))


def test_train_seg_via_tools_train(tiny_seg_checkpoint):
    run = tiny_seg_checkpoint
    ckpt = _load_ckpt(run.checkpoint)
    assert ckpt['meta']['iter'] == 6
    assert any(k.endswith('.p1') for k in ckpt['state_dict'])
    for k in SEG_KEYS:
        assert k in run.metrics, run.metrics
        assert 0.0 <= run.metrics[k] <= 100.0


def test_test_py_reproduces_det_metric(tiny_det_checkpoint, run_tool,
                                       tmp_path):
    run = tiny_det_checkpoint
    out = tmp_path / 'raw.pkl'
    show = tmp_path / 'show'
    proc = run_tool('tools/test.py', run.config, run.checkpoint, '--work-dir',
                    tmp_path / 'wd', '--out', out, '--show-dir', show,
                    '--cfg-options',
                    f'test_evaluator.outfile_prefix={tmp_path}/test_preds')
    metrics = _metrics_line(proc.stdout)
    for k in DET_KEYS:
        assert metrics[k] == pytest.approx(run.metrics[k], abs=1e-4), k
    # same detections as the validation at the end of training
    val = json.load(open(osp.join(run.work_dir, 'val_preds.bbox.json')))
    test = json.load(open(tmp_path / 'test_preds.bbox.json'))
    assert len(val) == len(test) > 0
    for a, b in zip(val, test):
        assert a['image_id'] == b['image_id']
        assert a['category_id'] == b['category_id']
        assert a['bbox'] == pytest.approx(b['bbox'], abs=1e-2)
        assert a['score'] == pytest.approx(b['score'], abs=1e-4)
    raw = pickle.load(open(out, 'rb'))
    assert len(raw) == 8
    assert {'img_id', 'pred_instances'} <= set(raw[0])
    drawn = sorted(glob.glob(str(show / '*.jpg')))
    assert len(drawn) == 8, drawn


def test_test_py_reproduces_seg_metric(tiny_seg_checkpoint, run_tool,
                                       tmp_path):
    run = tiny_seg_checkpoint
    out = tmp_path / 'raw.pkl'
    show = tmp_path / 'show'
    proc = run_tool('tools/test.py', run.config, run.checkpoint, '--work-dir',
                    tmp_path / 'wd', '--out', out, '--show-dir', show)
    metrics = _metrics_line(proc.stdout)
    for k in SEG_KEYS:
        assert metrics[k] == pytest.approx(run.metrics[k], abs=0.02), k
    raw = pickle.load(open(out, 'rb'))
    assert len(raw) == 4
    drawn = glob.glob(str(show / 'vis_data' / 'vis_image' / '*.png'))
    assert len(drawn) == 4, drawn


def _lib_train_script(pkg):
    mod = pytest.importorskip(pkg)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(path):
        pytest.skip(f'{pkg} ships no tools/train.py ({path})')
    return path


@pytest.mark.parametrize('pkg,task', [('mmdet', 'det'), ('mmseg', 'seg')])
def test_library_own_train_script_runs_the_demo_config(
        pkg, task, run_tool, demo_coco, demo_cityscapes, det_demo_config,
        seg_demo_config, demo_cfg_options, tmp_path):
    script = _lib_train_script(pkg)
    data = demo_coco if task == 'det' else demo_cityscapes
    config = det_demo_config if task == 'det' else seg_demo_config
    run_tool(script, config, '--work-dir', tmp_path, '--cfg-options',
             *demo_cfg_options(task, data['data_root'], iters=2), timeout=400)
    assert (tmp_path / 'iter_2.pth').is_file()
    metrics = read_val_metrics(str(tmp_path))
    assert ('coco/bbox_mAP' if task == 'det' else 'mIoU') in metrics, metrics


def test_missing_pretrained_weights_are_named(run_tool, tmp_path):
    """A full-size config whose converted ImageNet weights are not there yet.

    tools/train.py stops before building anything, naming the file, the
    config key, the converter command and how to train from scratch.
    """
    cfg = 'configs/pspnet/pspnet_r50-d8-aconc_4xb2-80k_cityscapes-512x1024.py'
    proc = run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'a',
                    check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'checkpoints/resnet50_acon_mm.pth' in proc.stderr
    assert 'model.backbone.init_cfg.checkpoint' in proc.stderr
    assert 'acon_official_to_mm.py' in proc.stderr
    assert '--cfg-options model.backbone.init_cfg=None' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_demo_data_is_deterministic_and_in_the_real_formats(tmp_path):
    import filecmp

    import numpy as np
    from mmcv import imread
    from pycocotools.coco import COCO

    from acon_mm.testing import COCO_DEMO_CLASSES, make_cityscapes_demo, make_coco_demo
    kw = dict(num_train=3, num_val=2)
    a = make_coco_demo(str(tmp_path / 'a'), seed=3, **kw)
    b = make_coco_demo(str(tmp_path / 'b'), seed=3, **kw)
    c = make_coco_demo(str(tmp_path / 'c'), seed=4, **kw)
    assert filecmp.cmp(a['train_ann'], b['train_ann'], shallow=False)
    assert not filecmp.cmp(a['train_ann'], c['train_ann'], shallow=False)
    coco = COCO(a['val_ann'])
    assert [coco.cats[i]['name'] for i in sorted(coco.cats)] == \
        list(COCO_DEMO_CLASSES)
    for img in coco.dataset['images']:
        arr = imread(osp.join(a['data_root'], 'val2017', img['file_name']))
        assert arr.shape == (img['height'], img['width'], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert 1 <= len(anns) <= 3
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= img['width'] and y + h <= img['height']
            assert ann['iscrowd'] == 0 and 0 < ann['area'] <= w * h

    s1 = make_cityscapes_demo(str(tmp_path / 's1'), seed=3, **kw)
    s2 = make_cityscapes_demo(str(tmp_path / 's2'), seed=3, **kw)
    lab_files = sorted(glob.glob(osp.join(s1['data_root'], 'gtFine', '*', '*',
                                          '*_gtFine_labelTrainIds.png')))
    assert len(lab_files) == 5
    for f in lab_files:
        twin = f.replace(s1['data_root'], s2['data_root'])
        assert filecmp.cmp(f, twin, shallow=False)
        lab = imread(f, flag='unchanged')
        assert lab.shape == (128, 256) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= set(range(19)) | {255}
        img = f.replace(osp.join(s1['data_root'], 'gtFine'),
                        osp.join(s1['data_root'], 'leftImg8bit')).replace(
                            '_gtFine_labelTrainIds.png', '_leftImg8bit.png')
        assert imread(img).shape == (128, 256, 3)
    # mmseg's CityscapesDataset pairs every image with its label map
    from mmseg.datasets import CityscapesDataset
    ds = CityscapesDataset(
        data_root=s1['data_root'],
        data_prefix=dict(img_path='leftImg8bit/train',
                         seg_map_path='gtFine/train'),
        pipeline=[], serialize_data=False)
    assert len(ds) == 3
    assert all(osp.isfile(d['seg_map_path']) for d in ds)


def test_make_demo_data_writes_once_per_options(tmp_path):
    """The stamp keeps an up-to-date dataset; other options or force rewrite it."""
    from acon_mm.testing import make_demo_data
    out, lines = str(tmp_path), []
    kw = dict(coco_kwargs=dict(num_train=2, num_val=1), which=['coco'],
              log=lines.append)
    assert make_demo_data(out, seed=1, **kw) == {'coco': True}
    ann = osp.join(out, 'coco', 'annotations', 'instances_train2017.json')
    mtime = os.stat(ann).st_mtime_ns
    assert make_demo_data(out, seed=1, **kw) == {'coco': False}
    assert os.stat(ann).st_mtime_ns == mtime and 'up to date' in lines[-1]
    assert make_demo_data(out, seed=2, **kw) == {'coco': True}
    assert make_demo_data(out, seed=2, force=True, **kw) == {'coco': True}
    with pytest.raises(ValueError, match="'kitti'"):
        make_demo_data(out, which=['kitti'])
