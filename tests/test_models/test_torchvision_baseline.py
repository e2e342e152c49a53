"""The ReLU baseline from torchvision's ImageNet weights.

``configs/retinanet/retinanet_r50-relu-torchvision_fpn_1x_coco.py`` is
``ResNetACON`` with ``acon_cfg=dict(type='ReLU'), conv_bias=False,
style='pytorch'`` and ``init_cfg`` ``torchvision://resnet50``: torchvision's own
ResNet-50 weights (random here: nothing downloads, the file is put in the
download cache as mmengine would keep it) load into it and its stage outputs
are torchvision's ``layer1``..``layer4``; without the file in the cache
``tools/train.py``'s check names the source and ``--allow-download``, and does
not call these weights the wrong layout.
"""
import os
import os.path as osp

import pytest
import torch
import torchvision
from mmengine.config import Config

from acon_mm.engine.run_checks import (
    RemoteWeightsError,
    check_remote_weights,
    download_cache_path,
    weight_url,
)
from acon_mm.engine.runner_utils import register_task_modules

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(ROOT, 'configs/retinanet/retinanet_r50-relu-torchvision_fpn_1x_coco.py')
STOCK = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield tmp_path / 'hub'
    torch.hub.set_dir(old)


def test_uncached_torchvision_weights_are_named_with_the_fix(hub_dir):
    cfg = Config.fromfile(CFG)
    with pytest.raises(RemoteWeightsError) as err:
        check_remote_weights(cfg)
    msg = str(err.value)
    assert "model.backbone.init_cfg.checkpoint = 'torchvision://resnet50'" in msg
    assert 'https://download.pytorch.org/models/resnet50-' in msg
    assert str(hub_dir) in msg and '--allow-download' in msg
    assert 'no URL holds weights in its layout' not in msg  # these do fit
    assert check_remote_weights(cfg, allow_download=True)


def test_the_preprocessing_is_torchvision_s(tmp_path):
    stock_file = tmp_path / 'stock.py'
    stock_file.write_text(f"_base_ = '{STOCK}'\n")
    dp, stock = Config.fromfile(CFG).model.data_preprocessor, \
        Config.fromfile(str(stock_file)).model.data_preprocessor
    assert (dp.mean, dp.std, dp.bgr_to_rgb) == (stock.mean, stock.std, stock.bgr_to_rgb)


def test_torchvision_resnet50_loads_and_gives_its_features(hub_dir):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    for m in tv.modules():  # BN statistics that matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    cache = download_cache_path(weight_url('torchvision://resnet50'))
    os.makedirs(osp.dirname(cache))
    torch.save(tv.state_dict(), cache)
    cfg = Config.fromfile(CFG)
    msgs = check_remote_weights(cfg)
    assert msgs == [f"model.backbone.init_cfg.checkpoint = 'torchvision://resnet50': "
                    f'loaded from the download cache {cache}']

    register_task_modules('mmdet')
    from mmdet.registry import MODELS
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    backbone.eval()
    tv.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = backbone(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for feat, layer in zip(feats, (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            y = layer(y)
            torch.testing.assert_close(feat, y, rtol=1e-4, atol=1e-4)
