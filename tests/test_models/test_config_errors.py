"""Bad config, named: each mistake names the culprit.

The checks themselves live in the backbones; these tests pin what a
user sees for each mistake, through the registries a config goes through.
"""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import MODELS

import acon_mm  # noqa: F401
from acon_mm.models.official_ckpt import convert_checkpoint

from official_reference import load_layouts, random_official_state_dict


def _build(cfg, scope='mmdet'):
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg)


@pytest.mark.parametrize('backbone', [
    dict(type='ResNetACON', depth=18),
    dict(type='ShuffleNetV2ACON', widen_factor=0.5),
])
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_unknown_acon_type_named(backbone, scope):
    with pytest.raises(KeyError) as info:
        _build(dict(backbone, acon_cfg=dict(type='AconZ')), scope)
    msg = str(info.value)
    assert "'AconZ'" in msg
    for t in ('AconC', 'MetaAconC'):
        assert t in msg  # the valid types are listed


@pytest.mark.parametrize('backbone,bad,valid', [
    (dict(type='ResNetACON', depth=18), 4, '0..3'),
    (dict(type='ResNetACON', depth=50, num_stages=3), 3, '0..2'),
    (dict(type='ResNetACON', depth=18), -1, '0..3'),
    (dict(type='ShuffleNetV2ACON', widen_factor=1.0), 4, '0..3'),
])
def test_out_indices_out_of_range_named(backbone, bad, valid):
    with pytest.raises(ValueError) as info:
        _build(dict(backbone, out_indices=(0, bad)))
    msg = str(info.value)
    assert f'out_indices entry {bad}' in msg and valid in msg
    assert backbone['type'] in msg


@pytest.mark.parametrize('backbone,bad', [
    (dict(type='ResNetACON', depth=18), 5),
    (dict(type='ResNetACON', depth=18), -2),
    (dict(type='ShuffleNetV2ACON', widen_factor=1.0), 5),
])
def test_frozen_stages_out_of_range_named(backbone, bad):
    with pytest.raises(ValueError) as info:
        _build(dict(backbone, frozen_stages=bad))
    msg = str(info.value)
    assert f'frozen_stages={bad}' in msg and 'out of range' in msg
    assert backbone['type'] in msg


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.text = []

    def emit(self, record):
        self.text.append(record.getMessage())


def _load_reports(backbone_cfg, ckpt):
    """What loading ``ckpt`` through ``init_cfg`` Pretrained reports."""
    model = _build(dict(backbone_cfg, init_cfg=dict(type='Pretrained',
                                                   checkpoint=ckpt)))
    logger = MMLogger.get_current_instance()
    rec = _Records()
    logger.addHandler(rec)
    try:
        model.init_weights()
        return '\n'.join(rec.text)
    except Exception as err:  # an error naming the keys is fine too
        return str(err)
    finally:
        logger.removeHandler(rec)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Converted official checkpoints (random values, official layouts)."""
    layouts = load_layouts()
    out = {}
    d = tmp_path_factory.mktemp('converted')
    for name in ('resnet50_acon', 'shufflenetv2_1.0x_acon'):
        src = str(d / f'{name}_official.pth')
        torch.save({'state_dict': {
            'module.' + k: v for k, v in
            random_official_state_dict(layouts[name]).items()}}, src)
        out[name] = str(d / f'{name}_mm.pth')
        convert_checkpoint(src, out[name], verbose=False) \
            if 'verbose' in convert_checkpoint.__code__.co_varnames else \
            convert_checkpoint(src, out[name])
    return out


def test_checkpoint_of_another_depth_names_missing_keys(converted):
    text = _load_reports(dict(type='ResNetACON', depth=101),
                         converted['resnet50_acon'])
    # ResNet-101's layer3 has 23 blocks, ResNet-50's 6: block 6 on is missing
    assert 'missing' in text and 'layer3.6.' in text, text[:2000]


def test_checkpoint_of_another_depth_names_shape_mismatch(converted):
    text = _load_reports(dict(type='ResNetACON', depth=18),
                         converted['resnet50_acon'])
    assert 'size mismatch' in text or 'shape' in text, text[:2000]
    assert 'layer1.0.conv1.weight' in text, text[:2000]


def test_checkpoint_of_another_width_names_shape_mismatch(converted):
    text = _load_reports(dict(type='ShuffleNetV2ACON', widen_factor=0.5),
                         converted['shufflenetv2_1.0x_acon'])
    assert 'size mismatch' in text or 'shape' in text, text[:2000]
    assert 'stage' in text or 'features' in text, text[:2000]
