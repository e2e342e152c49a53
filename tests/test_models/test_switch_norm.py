"""meta-ACON's switch norm: synchronised like the backbone, batch 1 still works.

The switch generator normalises one pooled value per image and channel; with
PSPNet's 2 crops per GPU per-GPU statistics come from 2 values. The PSPNet
meta-ACON configs therefore use ``AconSwitchSyncBN`` (the backbone's SyncBN),
which also trains at batch 1 and per process on CPU, and which the fused CPU
kernel leaves to the modules.
"""
import copy
import os.path as osp

import torch
import torch.nn as nn
from mmengine.config import Config

import acon_mm  # noqa: F401
from acon_mm.models.layers import AconSwitchSyncBN, MetaAconC, switch_norm_cfg

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_switch_norm_cfg_maps_backbone_norms():
    assert switch_norm_cfg(dict(type='SyncBN', requires_grad=True)) == dict(
        type='AconSwitchSyncBN', requires_grad=True)
    assert switch_norm_cfg(dict(type='BN', eps=1e-3))['type'] == 'AconSwitchBN'
    assert switch_norm_cfg(dict(type='GN', num_groups=2))['type'] == 'GN'
    assert switch_norm_cfg(None) is None


def test_sync_switch_bn_batch_one_uses_running_stats():
    sbn = AconSwitchSyncBN(8).train()
    with torch.no_grad():
        sbn.running_mean.normal_()
        sbn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 8, 1, 1)
    before = sbn.running_mean.clone()
    y = sbn(x)
    ref = (x - sbn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        sbn.running_var.view(1, -1, 1, 1) + sbn.eps)
    torch.testing.assert_close(y, ref)
    assert torch.equal(sbn.running_mean, before)


def test_sync_switch_bn_is_batchnorm_otherwise():
    torch.manual_seed(0)
    bn, sbn = nn.BatchNorm2d(8).train(), AconSwitchSyncBN(8).train()
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(sbn(x), bn(x))
    torch.testing.assert_close(sbn.running_var, bn.running_var)
    assert set(sbn.state_dict()) == set(bn.state_dict())


def test_meta_acon_with_sync_switch_norm_equals_the_plain_one():
    torch.manual_seed(0)
    plain = MetaAconC(16, r=4, norm_cfg=dict(type='AconSwitchBN')).train()
    sync = MetaAconC(16, r=4, norm_cfg=dict(type='AconSwitchSyncBN')).train()
    sync.load_state_dict(plain.state_dict())
    assert isinstance(sync.bn1, AconSwitchSyncBN)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    y_sync = sync(x)  # modules (the fused kernel does not run SyncBN)
    assert 'MetaFn' not in (y_sync.grad_fn.name() if y_sync.grad_fn else '')
    torch.testing.assert_close(y_sync, plain(x))
    for b in (1, 3):  # batch 1 trains too
        sync(torch.randn(b, 16, 4, 4)).sum().backward()


def test_pspnet_metaacon_switch_norm_follows_syncbn():
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/pspnet/pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py'))
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    assert cfg.model.backbone.acon_cfg.norm_cfg == switch_norm_cfg(
        cfg.model.backbone.norm_cfg)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    bb = copy.deepcopy(cfg.model.backbone)
    bb.init_cfg = None
    bb.depth = 50
    model = MODELS.build(bb).train()
    switch = [m for n, m in model.named_modules() if n.endswith('acon.bn1')]
    assert switch and all(isinstance(m, AconSwitchSyncBN) for m in switch)
    # CPU, no process group: a forward/backward at batch 1 works
    model(torch.randn(1, 3, 64, 64))[-1].mean().backward()
