"""mmdet-ResNet parity of ResNetACON: ``dcn`` / ``stage_with_dcn`` and
``plugins`` (issue 24), on the stock mmdet configs that use them."""
import os

import pytest
import torch

from acon_mm.models.backbones import ResNetACON

DCN = dict(type='DCN', deform_groups=1, fallback_on_stride=False)
DCNV2 = dict(type='DCNv2', deform_groups=1, fallback_on_stride=False)
GCB = [dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
            stages=(False, True, True, True), position='after_conv3')]


@pytest.mark.parametrize('dcn', [DCN, DCNV2], ids=['DCN', 'DCNv2'])
def test_dcn_and_plugins_build_train_and_start_as_the_plain_block(dcn):
    torch.manual_seed(0)
    m = ResNetACON(depth=50, acon_cfg=dict(type='MetaAconC'), dcn=dcn,
                   stage_with_dcn=(False, True, True, True), plugins=GCB,
                   zero_init_residual=False)
    m.init_weights()
    assert type(m.layer1[0].conv2).__name__ == 'Conv2d'  # stage 1: no dcn, no plugin
    assert not hasattr(m.layer1[0], 'context_block')
    block = m.layer3[1]
    assert type(block.conv2).__name__ == ('DeformConv2dPack' if dcn is DCN
                                          else 'ModulatedDeformConv2dPack')
    # offsets at zero (the Kaiming init covers every Conv2d), GCNet's last conv
    # zero as mmcv initialises it: both start as the plain block
    assert block.conv2.conv_offset.weight.abs().sum() == 0
    assert block.context_block.channel_add_conv[3].weight.abs().sum() == 0
    assert block.after_conv3_plugin_names == ['context_block']
    out = m(torch.rand(2, 3, 128, 128))
    assert [tuple(o.shape) for o in out] == [(2, 256, 32, 32), (2, 512, 16, 16),
                                             (2, 1024, 8, 8), (2, 2048, 4, 4)]
    sum(o.square().mean() for o in out).backward()
    # (GCNet's zero last conv gets the gradient; what feeds it starts without)
    for p in (block.conv2.weight, block.conv2.conv_offset.weight, block.acon.p1,
              block.context_block.channel_add_conv[3].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_fallback_on_stride_keeps_a_plain_strided_conv():
    m = ResNetACON(depth=50, style='pytorch', dcn=dict(DCNV2, fallback_on_stride=True),
                   stage_with_dcn=(False, True, True, True))
    assert type(m.layer2[0].conv2).__name__ == 'Conv2d'  # stride 2 on conv2
    assert type(m.layer2[1].conv2).__name__ == 'ModulatedDeformConv2dPack'


def test_plain_checkpoint_loads_strictly_into_dcn_and_plugins(tmp_path):
    plain = ResNetACON(depth=50, num_stages=4)
    path = str(tmp_path / 'plain.pth')
    torch.save(plain.state_dict(), path)
    for dcn in (DCN, DCNV2):
        m = ResNetACON(depth=50, dcn=dcn, stage_with_dcn=(False, False, True, True),
                       plugins=GCB, init_cfg=dict(type='Pretrained', checkpoint=path))
        m.init_weights()
        torch.testing.assert_close(m.layer3[0].conv2.weight,
                                   plain.layer3[0].conv2.weight)
        torch.testing.assert_close(m.layer1[0].conv2.bias, plain.layer1[0].conv2.bias)
        assert m.layer3[0].conv2.conv_offset.weight.abs().sum() == 0
    # a tensor the plain network does need is still refused by name
    sd = plain.state_dict()
    del sd['layer2.0.conv1.weight']
    torch.save(sd, path)
    m = ResNetACON(depth=50, dcn=DCNV2, stage_with_dcn=(False, False, True, True),
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r'missing keys.*layer2\.0\.conv1\.weight'):
        m.init_weights()


def test_bad_dcn_and_plugins_are_named():
    with pytest.raises(ValueError, match=r'layer1\.0: dcn needs bottleneck blocks'):
        ResNetACON(depth=18, dcn=DCN, stage_with_dcn=(True, True, True, True))
    with pytest.raises(ValueError, match=r'layer2\.0: plugins needs bottleneck'):
        ResNetACON(depth=34, plugins=GCB)
    with pytest.raises(ValueError, match=r"plugins\[0\] position 'after_conv4' does not "
                       r"exist; valid positions are \['after_conv1'"):
        ResNetACON(depth=50, plugins=[dict(GCB[0], position='after_conv4')])
    with pytest.raises(ValueError, match=r"plugins\[0\] has unknown key\(s\) \['stage'\]"):
        ResNetACON(depth=50, plugins=[dict(cfg=GCB[0]['cfg'], position='after_conv3',
                                           stage=(True, ) * 4)])
    with pytest.raises(ValueError, match=r'plugins\[0\] stages \(True, True\) needs one '
                       r'entry per stage \(4\)'):
        ResNetACON(depth=50, plugins=[dict(GCB[0], stages=(True, True))])
    with pytest.raises(ValueError, match=r'stage_with_dcn \(True,\) needs one entry'):
        ResNetACON(depth=50, dcn=DCN, stage_with_dcn=(True, ))
    with pytest.raises(ValueError, match=r'conv_cfg must be None with dcn'):
        ResNetACON(depth=50, dcn=DCN, stage_with_dcn=(True, ) * 4,
                   conv_cfg=dict(type='Conv2d'))


# the stock configs that set dcn / plugins, with only the backbone type changed
STOCK = ['dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py',
         'dcnv2/faster-rcnn_r50-mdconv-c3-c5_fpn_1x_coco.py',
         'gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py']


@pytest.mark.parametrize('rel', STOCK)
def test_stock_dcn_and_gcnet_configs_train_a_step(rel):
    import mmdet
    import numpy as np
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim',
                                       'configs', rel))
    assert cfg.model.backbone.get('dcn') or cfg.model.backbone.get('plugins')
    cfg.model.backbone.type = 'ResNetACON'
    cfg.model.backbone.acon_cfg = dict(type='MetaAconC')
    cfg.model.backbone.init_cfg = None  # the stock torchvision weights: no network here
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    samples, imgs = [], []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128),
                                        scale_factor=(1.0, 1.0), pad_shape=(128, 128),
                                        batch_input_shape=(128, 128)))
        boxes = torch.tensor([[8.0, 12.0, 80.0, 100.0], [40.0, 20.0, 120.0, 60.0]])
        masks = np.zeros((2, 128, 128), np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([i, 7]),
                                      masks=BitmapMasks(masks, 128, 128))
        samples.append(s)
        imgs.append((torch.rand(3, 128, 128) * 255).to(torch.uint8))
    optim = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    bb = model.backbone
    assert any(type(m).__name__ in ('DeformConv2dPack', 'ModulatedDeformConv2dPack',
                                    'ContextBlock') for m in bb.modules())
    grads = [p.grad for n, p in bb.named_parameters() if '.acon.' in n and p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    before = bb.layer4[0].bn3.weight.detach().clone()
    optim.step()
    assert not torch.equal(before, bb.layer4[0].bn3.weight)
