"""A detector/segmentor backbone loads a classifier checkpoint with
``prefix='backbone.'``, checked key for key on the prefixed subset."""
import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.models import ResNetACON
from acon_mm.models.utils import pretrained_path, pretrained_spec


def _classifier_ckpt(path, depth=18, seed=0):
    torch.manual_seed(seed)
    bb = ResNetACON(depth=depth)
    sd = {f'backbone.{k}': v for k, v in bb.state_dict().items()}
    sd['head.fc.weight'] = torch.randn(3, 512)
    sd['head.fc.bias'] = torch.zeros(3)
    torch.save({'state_dict': sd, 'meta': {}}, str(path))
    return bb


def test_spec_of_prefixed_init_cfg():
    cfg = dict(type='Pretrained', checkpoint='a.pth', prefix='backbone.')
    assert pretrained_spec(cfg) == ('a.pth', 'backbone.')
    assert pretrained_path([dict(type='Kaiming'), cfg]) == 'a.pth'
    assert pretrained_spec(dict(type='Pretrained',
                                checkpoint='https://x/y.pth')) == (None, None)


def test_prefixed_classifier_checkpoint_loads(tmp_path):
    ck = tmp_path / 'cls.pth'
    src = _classifier_ckpt(ck)
    bb = ResNetACON(depth=18, out_indices=(1, 2, 3), init_cfg=dict(
        type='Pretrained', checkpoint=str(ck), prefix='backbone.'))
    bb.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(bb.state_dict()[k], v, msg=k)


def test_mismatched_classifier_backbone_is_named(tmp_path):
    ck = tmp_path / 'cls34.pth'
    _classifier_ckpt(ck, depth=34)
    bb = ResNetACON(depth=18, init_cfg=dict(
        type='Pretrained', checkpoint=str(ck), prefix='backbone.'))
    with pytest.raises(ValueError) as err:
        bb.init_weights()
    msg = str(err.value)
    assert str(ck) in msg and "prefix='backbone.'" in msg
    assert 'unexpected keys' in msg and 'layer1.2.' in msg


def test_classifier_checkpoint_without_prefix_gets_a_hint(tmp_path):
    ck = tmp_path / 'cls.pth'
    _classifier_ckpt(ck)
    bb = ResNetACON(depth=18, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(ck)))
    with pytest.raises(ValueError, match="add prefix='backbone.'"):
        bb.init_weights()


def test_prefix_not_in_checkpoint_is_named(tmp_path):
    ck = tmp_path / 'cls.pth'
    _classifier_ckpt(ck)
    bb = ResNetACON(depth=18, init_cfg=dict(
        type='Pretrained', checkpoint=str(ck), prefix='model.backbone.'))
    with pytest.raises(ValueError) as err:
        bb.init_weights()
    assert "no key starting with prefix='model.backbone.'" in str(err.value)
    assert "backbone." in str(err.value) and str(ck) in str(err.value)
