"""ACON in any registered backbone: ``ACONBackbone`` / ``replace_activations``
(issue 24, point 2) on mmdet's ResNeXt and RegNet, mmseg's ResNetV1c and
mmpretrain's EfficientNet built through mmdet."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, DefaultScope

from acon_mm.models.backbones import PerWidthActivation, replace_activations


@pytest.fixture(scope='module', autouse=True)
def _registered():
    from mmdet.utils import register_all_modules as mmdet_all
    from mmseg.utils import register_all_modules as mmseg_all
    mmdet_all(init_default_scope=False)
    mmseg_all(init_default_scope=False)


def _build(cfg, scope='mmdet'):
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg)


RESNEXT = dict(type='ResNeXt', depth=50, groups=32, base_width=4, num_stages=4,
               out_indices=(0, 1, 2, 3), frozen_stages=1)


def test_resnext_keeps_its_names_loads_its_checkpoint_and_trains(tmp_path):
    torch.manual_seed(0)
    plain = _build(RESNEXT)
    path = str(tmp_path / 'resnext.pth')
    torch.save(plain.state_dict(), path)
    m = _build(dict(type='ACONBackbone', acon_cfg=dict(type='MetaAconC'),
                    backbone=dict(RESNEXT, init_cfg=dict(type='Pretrained', checkpoint=path))))
    assert type(m).__name__ == 'ResNeXt'  # the backbone itself, not a wrapper
    m.init_weights()
    own, before = m.state_dict(), plain.state_dict()
    assert set(before) <= set(own)
    for k, v in before.items():
        torch.testing.assert_close(own[k], v, msg=k)
    new = set(own) - set(before)
    assert new and all(k.startswith('relu.') or '.relu.' in k for k in new)
    # mmdet's Bottleneck calls one self.relu at planes and 4*planes channels
    rep = {d['name']: d for d in m.acon_replaced}
    assert rep['layer1.0.relu']['widths'] == [128, 256]
    assert rep['relu']['widths'] == [64]  # the stem
    assert type(m.layer1[0].relu).__name__ == 'PerWidthActivation'
    assert type(m.relu).__name__ == 'MetaAconC'
    m.train()
    # frozen_stages=1: the new layers of the stem and stage 1 are frozen too
    assert not any(p.requires_grad for p in m.layer1[0].relu.parameters())
    assert not any(p.requires_grad for p in m.relu.parameters())
    out = m(torch.rand(2, 3, 64, 64))
    sum(o.square().mean() for o in out).backward()
    p1 = m.layer3[0].relu.c1024.p1
    assert p1.requires_grad and p1.grad is not None and p1.grad.abs().sum() > 0


def test_include_last_stages_only_and_logged(capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('aconbackbone_test')
    m = _build(dict(type='ACONBackbone', acon_cfg=dict(type='AconC'), backbone=RESNEXT,
                    replace=dict(include=['layer3.*', 'layer4.*'])))
    names = [d['name'] for d in m.acon_replaced]
    assert names and all(n.startswith(('layer3.', 'layer4.')) for n in names)
    assert type(m.layer2[0].relu) is nn.ReLU
    assert len(names) == 6 + 3


@pytest.mark.parametrize('cfg,scope,types', [
    (dict(type='RegNet', arch='regnetx_400mf', out_indices=(0, 1, 2, 3)), 'mmdet', ['ReLU']),
    (dict(type='ResNetV1c', depth=18, out_indices=(0, 1, 2, 3)), 'mmseg', ['ReLU']),
    (dict(type='mmpretrain.EfficientNet', arch='b0', out_indices=(2, 3, 4)), 'mmdet',
     ['Swish']),
], ids=['mmdet-RegNet', 'mmseg-ResNetV1c', 'mmpretrain-EfficientNet'])
def test_other_backbones(cfg, scope, types):
    torch.manual_seed(0)
    ref = _build(cfg, scope)
    ref.eval()  # (mmdet's ResNet.train() returns None)
    x = torch.rand(2, 3, 64, 64)
    m = _build(dict(type='ACONBackbone', backbone=cfg, acon_cfg=dict(type='AconC'),
                    replace=dict(types=types)), scope)
    assert m.acon_replaced and {d['old'] for d in m.acon_replaced} == set(types)
    assert not any(type(mod).__name__ in types for mod in m.modules())
    out = m(x)
    assert [o.shape for o in out] == [o.shape for o in ref(x)]
    sum(o.square().mean() for o in out).backward()
    acon = [p for n, p in m.named_parameters() if n.endswith('.p1')]
    # (EfficientNet runs layers after its last out_index too: no gradient there)
    graded = [p for p in acon if p.grad is not None]
    assert len(graded) > len(acon) // 2
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in graded)


def test_stock_retinanet_with_the_stock_backbone_wrapped_trains_a_step():
    import os

    import mmdet
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                                       'retinanet/retinanet_r50_fpn_1x_coco.py'))
    stock = dict(cfg.model.backbone, init_cfg=None)  # torchvision weights: no network
    cfg.model.backbone = dict(type='ACONBackbone', backbone=stock,
                              acon_cfg=dict(type='MetaAconC'))
    torch.manual_seed(0)
    model = _build(cfg.model)
    model.init_weights()
    model.train()
    samples = []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
                                      labels=torch.tensor([i]))
        samples.append(s)
    imgs = [(torch.rand(3, 64, 64) * 255).to(torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    total = sum(v if torch.is_tensor(v) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    p1 = model.backbone.layer4[0].relu.c2048.p1  # (zero-init residual: c512 gets none yet)
    assert p1.grad is not None and p1.grad.abs().sum() > 0


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 4)
        self.head_act = nn.ReLU()
        self.unused = nn.SiLU()

    def forward(self, x):
        x = self.act(self.conv(x)).mean((2, 3))
        return self.head_act(self.fc(x))


def test_bad_replacements_are_named():
    with pytest.raises(ValueError, match=r"\['GELU'\] match no module; the activation "
                       r"types in this model are \['ReLU', 'SiLU'\]"):
        replace_activations(_Tiny(), dict(type='AconC'), types=['GELU'])
    with pytest.raises(ValueError, match=r'leave no ReLU module to replace; there are 2, '
                       r'e\.g\. act, head_act'):
        replace_activations(_Tiny(), dict(type='AconC'), include=['layer3.*'])
    with pytest.raises(ValueError, match=r'head_act \(ReLU\) sees inputs of shape \(1, 4\)'
                       r'.*width cannot be inferred'):
        replace_activations(_Tiny(), dict(type='AconC'))
    with pytest.raises(ValueError, match=r'unused \(SiLU\) was not called by a forward of '
                       r'shape \(1, 3, 64, 64\)'):
        replace_activations(_Tiny(), dict(type='AconC'), types=['SiLU'])
    m = _Tiny()
    done = replace_activations(m, dict(type='AconC'), exclude=['head_act'])
    assert done == [dict(name='act', old='ReLU', widths=[8])]
    assert m.act.p1.shape[1] == 8
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stages'\]"):
        _build(dict(type='ACONBackbone', backbone=RESNEXT, replace=dict(stages=[3])))
    layer = PerWidthActivation({4: nn.Identity()}, where='layer1.0.relu')
    with pytest.raises(RuntimeError, match=r'layer1\.0\.relu: an input of 5 channels; the '
                       r'ACON layers here were built for \[4\]'):
        layer(torch.zeros(1, 5, 2, 2))
