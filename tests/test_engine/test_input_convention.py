"""Converted official weights carry their input convention, and configs honour it.

* the converter records BGR 0-255, no mean/std in ``meta['input_convention']``;
* end to end: a PNG file -> the config's own test pipeline and
  ``data_preprocessor`` -> backbone features equal the official network's on
  the official decode (PIL RGB -> BGR float 0..255), for a RetinaNet and a
  PSPNet config (random official-layout weights, converted);
* a preprocessing that contradicts the recorded convention stops
  ``tools/train.py`` before training, naming file, conventions and key;
* a checkpoint without a recorded convention loads with a warning naming it.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from acon_mm.engine.input_convention import (
    InputConventionError,
    check_input_convention,
    preprocessor_convention,
)
from acon_mm.engine.runner_utils import register_task_modules, replace_sync_bn
from acon_mm.models.official_ckpt import (
    INPUT_CONVENTION_KEY,
    OFFICIAL_INPUT_CONVENTION,
    convert_checkpoint,
)

from official_reference import (
    load_layouts,
    official_decode,
    official_forward,
    random_official_state_dict,
    to_bgr_tensor,
)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RETINA = 'configs/retinanet/retinanet_r50-aconc_fpn_1x_coco.py'
PSP_META = 'configs/pspnet/pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py'


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """``{official name: converted checkpoint path}`` + the official tensors."""
    out = {}
    tmp = tmp_path_factory.mktemp('converted')
    layouts = load_layouts()
    for i, name in enumerate(('resnet50_acon', 'resnet50_metaacon')):
        sd = random_official_state_dict(layouts[name], seed=i)
        src = tmp / f'{name}_official.pth'
        torch.save({'state_dict': {'module.' + k: v for k, v in sd.items()}},
                   str(src))
        dst = tmp / f'{name}_mm.pth'
        convert_checkpoint(str(src), str(dst), verbose=False)
        out[name] = (str(dst), sd)
    return out


def _cfg(rel, ckpt):
    cfg = Config.fromfile(osp.join(ROOT, rel))
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    return cfg


def test_converter_records_the_official_convention(converted):
    path, _ = converted['resnet50_acon']
    meta = torch.load(path, weights_only=True)['meta']
    assert meta[INPUT_CONVENTION_KEY] == OFFICIAL_INPUT_CONVENTION
    assert OFFICIAL_INPUT_CONVENTION == dict(
        channel_order='bgr', value_range=255, mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0])


@pytest.mark.parametrize('rel', [
    'configs/retinanet/retinanet_r50-aconc_fpn_1x_coco.py',
    'configs/retinanet/retinanet_r101-swish_fpn_1x_coco.py',
    'configs/retinanet/retinanet_shufflenetv2-1.0x-metaacon_fpn_1x_coco.py',
    'configs/pspnet/pspnet_r50-d8-relu_4xb2-80k_cityscapes-512x1024.py',
    'configs/pspnet/pspnet_r101-d8-metaacon_4xb2-80k_cityscapes-512x1024.py',
])
def test_transfer_configs_feed_raw_bgr(rel):
    cfg = Config.fromfile(osp.join(ROOT, rel))
    conv = preprocessor_convention(cfg.model.data_preprocessor)
    assert conv == OFFICIAL_INPUT_CONVENTION, rel


def _write_png(path, h, w, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    # smooth structure plus noise, so that resizing matters
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 0] = (img[..., 0] // 4 + (xx * 3) % 192).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def _pipeline_batch(cfg, task, img_path):
    """The config's test pipeline (annotation loading dropped) on one file."""
    from mmengine.dataset import Compose, pseudo_collate
    steps = [t for t in copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
             if t['type'] != 'LoadAnnotations']
    pipe = Compose(steps)
    sample = pipe(dict(img_path=img_path, img_id=0, seg_fields=[],
                       reduce_zero_label=False))
    return pseudo_collate([sample])


def _build(cfg, task):
    import importlib
    register_task_modules(task, init_default_scope=True)
    MODELS = importlib.import_module(f'{task}.registry').MODELS
    replace_sync_bn(cfg)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model.eval()


def _official_input(img_path, out_hw):
    """The official decode, resized (cv2 INTER_LINEAR on the uint8 BGR array,
    as the config's Resize) to ``out_hw``, as a BGR 0..255 float tensor."""
    import cv2
    bgr = official_decode(img_path)
    h, w = out_hw
    if bgr.shape[:2] != (h, w):
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    return to_bgr_tensor(bgr)


def _assert_features_equal(ours, ref):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        scale = b.abs().max().item() + 1e-6
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m: f'stage {i}: {m}')


@pytest.mark.parametrize('case', ['retinanet', 'pspnet'])
def test_png_to_features_equal_official(case, converted, tmp_path):
    if case == 'retinanet':
        name, rel, task = 'resnet50_acon', RETINA, 'mmdet'
        # a wide strip: keep-ratio Resize to (1333, 800) scales it by 4/3,
        # cheap to run at full resolution
        img = _write_png(tmp_path / 'img.png', 48, 1000)
        kw = {}
    else:
        name, rel, task = 'resnet50_metaacon', PSP_META, 'mmseg'
        img = _write_png(tmp_path / 'img.png', 32, 1024, seed=1)
        kw = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                  contract_dilation=True)
    path, official_sd = converted[name]
    cfg = _cfg(rel, path)
    model = _build(cfg, task)
    batch = _pipeline_batch(cfg, task, img)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        x = data['inputs']
        h, w = batch['inputs'][0].shape[-2:]
        ref_in = _official_input(img, (h, w))
        # the preprocessed tensor is the official one (padding, if any, is 0)
        torch.testing.assert_close(x[:, :, :h, :w], ref_in, rtol=0, atol=0)
        assert x[:, :, h:, :].abs().sum() == 0 and x[:, :, :, w:].abs().sum() == 0
        ref_full = torch.zeros_like(x)
        ref_full[:, :, :h, :w] = ref_in
        ours = model.backbone(x)
        ref = official_forward(official_sd, ref_full, **kw)
    _assert_features_equal(ours, ref)


def test_contradicting_preprocessor_is_refused(converted):
    path, _ = converted['resnet50_acon']
    cfg = _cfg(RETINA, path)
    assert check_input_convention(cfg, logger=None) == []
    cfg.model.data_preprocessor.mean = [123.675, 116.28, 103.53]
    cfg.model.data_preprocessor.std = [58.395, 57.12, 57.375]
    cfg.model.data_preprocessor.bgr_to_rgb = True
    with pytest.raises(InputConventionError) as err:
        check_input_convention(cfg, logger=None)
    msg = str(err.value)
    assert path in msg and 'model.backbone.init_cfg.checkpoint' in msg
    assert 'BGR 0..255, mean=[0, 0, 0], std=[1, 1, 1]' in msg
    assert 'RGB 0..255, mean=[123.675, 116.28, 103.53]' in msg
    assert 'model.data_preprocessor.bgr_to_rgb=False' in msg
    assert 'model.data_preprocessor.mean=[0,0,0]' in msg


def test_checkpoint_without_convention_warns_with_its_name(converted, tmp_path):
    path, _ = converted['resnet50_acon']
    sd = torch.load(path, weights_only=True)['state_dict']
    bare = str(tmp_path / 'bare.pth')
    torch.save({'state_dict': sd}, bare)
    cfg = _cfg(RETINA, bare)
    msgs = check_input_convention(cfg, logger=None)
    assert len(msgs) == 1 and bare in msgs[0]
    assert 'records no input convention' in msgs[0]


def test_runner_checkpoint_convention_comes_from_its_saved_cfg(tmp_path):
    saved = Config(dict(model=dict(data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
        to_rgb=False))))
    ck = str(tmp_path / 'iter_1.pth')
    torch.save({'state_dict': {'backbone.w': torch.zeros(1)},
                'meta': dict(cfg=saved.pretty_text)}, ck)
    cfg = Config(dict(model=dict(
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[1, 2, 3],
                               std=[1, 1, 1], bgr_to_rgb=False),
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=ck,
                                    prefix='backbone.')))))
    with pytest.raises(InputConventionError, match="meta\\['cfg'\\]"):
        check_input_convention(cfg, logger=None)
    cfg.model.data_preprocessor.mean = [0, 0, 0]
    assert check_input_convention(cfg, logger=None) == []


@pytest.mark.slow
def test_train_tool_stops_before_training(run_tool, converted, tmp_path):
    path, _ = converted['resnet50_acon']
    work = tmp_path / 'work'
    proc = run_tool(
        'tools/train.py', RETINA, '--work-dir', str(work), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={path}',
        'model.data_preprocessor.bgr_to_rgb=True', check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'contradicts the pretrained weights' in proc.stderr
    assert path in proc.stderr and 'model.data_preprocessor' in proc.stderr
    assert not work.exists() or not any(work.rglob('*.pth'))
