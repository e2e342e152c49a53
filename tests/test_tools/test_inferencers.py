"""Inference the ecosystem's way (issue 24, point 6): mmdet's DetInferencer and
init_detector + inference_detector, mmseg's MMSegInferencer and inference_model,
with an acon-mm config and a checkpoint trained by tools/train.py, in a fresh
interpreter that never imports acon_mm itself (the config's custom_imports does)."""
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # two short trainings

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = 'configs/demo/retinanet_r18-aconc_fpn_demo.py'
SEG = 'configs/demo/pspnet_r18-d8-aconc_demo.py'


def _train(run_tool, config, data_root, work_dir):
    proc = run_tool('tools/train.py', config, '--cpu', '--data-root', data_root,
                    '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=2',
                    'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
                    'model.backbone.acon_cfg.type=MetaAconC', timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt)
    return ckpt


def _python(code, tmp_path):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_mmdet_inferencers_with_an_acon_config(run_tool, tmp_path, demo_coco):
    ckpt = _train(run_tool, DET, demo_coco['data_root'], str(tmp_path / 'det'))
    img = osp.join(demo_coco['data_root'], 'val2017', sorted(
        f for f in __import__('os').listdir(osp.join(demo_coco['data_root'], 'val2017')))[0])
    out = _python(f"""
        import sys
        from mmengine.config import Config
        from mmdet.apis import DetInferencer, inference_detector, init_detector
        cfg = Config.fromfile({DET!r})
        cfg.model.backbone.acon_cfg.type = 'MetaAconC'
        inf = DetInferencer(model=cfg, weights={ckpt!r}, device='cpu')
        res = inf({img!r}, out_dir={str(tmp_path / 'vis')!r})
        pred = res['predictions'][0]
        assert 'acon_mm' in sys.modules
        print('classes', inf.model.dataset_meta['classes'])
        print('det boxes', len(pred['bboxes']), type(inf.model.backbone).__name__,
              type(inf.model.backbone.layer1[0].acon2).__name__)
        model = init_detector(cfg, {ckpt!r}, device='cpu')
        r = inference_detector(model, {img!r})
        print('init_detector boxes', len(r.pred_instances.bboxes))
    """, tmp_path)
    assert "classes ('circle', 'square', 'triangle')" in out, out
    assert 'det boxes' in out and 'ResNetACON MetaAconC' in out, out
    assert 'init_detector boxes' in out
    assert osp.isfile(tmp_path / 'vis' / 'vis' / osp.basename(img)), 'no picture drawn'


def test_mmseg_inferencers_with_an_acon_config(run_tool, tmp_path, demo_cityscapes):
    ckpt = _train(run_tool, SEG, demo_cityscapes['data_root'], str(tmp_path / 'seg'))
    out = _python(f"""
        import glob
        from mmengine.config import Config
        from mmseg.apis import MMSegInferencer, inference_model, init_model
        cfg = Config.fromfile({SEG!r})
        cfg.model.backbone.acon_cfg.type = 'MetaAconC'
        img = sorted(glob.glob({demo_cityscapes['data_root']!r} + '/leftImg8bit/val/*/*.png'))[0]
        inf = MMSegInferencer(model=cfg, weights={ckpt!r}, device='cpu')
        res = inf(img, out_dir={str(tmp_path / 'vis')!r})
        print('seg map', res['predictions'].shape)
        model = init_model(cfg, {ckpt!r}, device='cpu')
        r = inference_model(model, img)
        print('inference_model', tuple(r.pred_sem_seg.data.shape))
    """, tmp_path)
    assert 'seg map' in out and 'inference_model (1,' in out, out
    assert list((tmp_path / 'vis').rglob('*.png')), 'no picture drawn'
