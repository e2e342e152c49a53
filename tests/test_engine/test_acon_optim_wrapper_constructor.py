"""The official weight-decay rule: every config's optimiser, every parameter.

Decayed, with the config's ``weight_decay``: parameters whose name ends in
``weight`` and that have more than one dimension (conv / linear weights,
meta-ACON's ``fc1.weight``/``fc2.weight``). Everything else (ACON's ``p1``,
``p2``, ``beta``, Swish's ``beta``, biases, norms): ``weight_decay=0``.
"""
import copy
import glob
import importlib.util
import os.path as osp

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import acon_mm  # noqa: F401
from acon_mm.engine.optimizers import AconOptimWrapperConstructor, official_decay
from acon_mm.engine.runner_utils import register_task_modules, replace_sync_bn
from acon_mm.models.layers import AconC, MetaAconC

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HAS_MMPRETRAIN = importlib.util.find_spec('mmpretrain') is not None
CONFIGS = sorted(
    osp.relpath(p, ROOT) for d in ('retinanet', 'pspnet', 'imagenet')
    for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))


def _expected_decay(name, p):
    leaf = name.rsplit('.', 1)[-1]
    return leaf == 'weight' and p.dim() > 1


def _check_every_parameter(model, optim_wrapper, wd):
    groups = optim_wrapper.optimizer.param_groups
    where = {}
    for gi, g in enumerate(groups):
        for p in g['params']:
            assert id(p) not in where, 'a parameter is in two groups'
            where[id(p)] = gi
    names = dict(model.named_parameters())
    assert len(where) == len(names), 'a parameter is in no group'
    n_decay = n_zero = 0
    for name, p in names.items():
        g = groups[where[id(p)]]
        if _expected_decay(name, p):
            assert g['weight_decay'] == wd, name
            n_decay += 1
        else:
            assert g['weight_decay'] == 0.0, name
            n_zero += 1
    return n_decay, n_zero


@pytest.mark.parametrize('rel', CONFIGS)
def test_every_config_uses_the_official_rule(rel):
    if rel.startswith('configs/imagenet/') and not HAS_MMPRETRAIN:
        pytest.skip('mmpretrain is not installed')
    cfg = Config.fromfile(osp.join(ROOT, rel))
    scope = cfg.default_scope
    assert cfg.optim_wrapper.constructor == 'AconOptimWrapperConstructor', rel
    import importlib
    register_task_modules(scope, init_default_scope=True)
    MODELS = importlib.import_module(f'{scope}.registry').MODELS
    replace_sync_bn(cfg)
    model = MODELS.build(copy.deepcopy(cfg.model))
    ow = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    wd = cfg.optim_wrapper.optimizer.weight_decay
    assert wd > 0
    n_decay, n_zero = _check_every_parameter(model, ow, wd)
    assert n_decay > 0 and n_zero > 0
    names = [n for n, _ in model.named_parameters()]
    act = cfg.model.backbone.acon_cfg.type
    if act in ('AconC', 'MetaAconC'):
        assert any(n.endswith('.p1') for n in names)  # ACON params exist ...
    if act == 'MetaAconC':  # ... and the switch convs decay
        groups = ow.optimizer.param_groups
        fc1 = dict(model.named_parameters())[
            next(n for n in names if n.endswith('fc1.weight'))]
        assert any(g['weight_decay'] == wd and any(p is fc1 for p in g['params'])
                   for g in groups)


class _Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.act = AconC(8)
        self.meta = MetaAconC(8, r=2)
        self.fc = nn.Linear(8, 2)


def test_rule_on_a_small_model():
    m = _Tiny()
    ow = build_optim_wrapper(m, dict(
        constructor='AconOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)))
    decayed = {n for n, p in m.named_parameters() if official_decay(n, p)}
    assert decayed == {'conv.weight', 'meta.fc1.weight', 'meta.fc2.weight',
                       'fc.weight'}
    _check_every_parameter(m, ow, 1e-4)
    assert len(ow.optimizer.param_groups) == 2


def test_paramwise_lr_mult_is_kept_and_the_rule_still_applies():
    m = _Tiny()
    ow = build_optim_wrapper(m, dict(
        constructor='AconOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
        paramwise_cfg=dict(custom_keys={'fc.': dict(lr_mult=0.1)})))
    _check_every_parameter(m, ow, 1e-4)
    fc_w = m.fc.weight
    g = next(g for g in ow.optimizer.param_groups
             if any(p is fc_w for p in g['params']))
    assert g['lr'] == pytest.approx(0.01)


@pytest.mark.parametrize('paramwise', [
    dict(norm_decay_mult=0.0), dict(bias_decay_mult=1.0),
    dict(custom_keys={'.p1': dict(decay_mult=1.0)})
])
def test_conflicting_paramwise_cfg_is_refused(paramwise):
    with pytest.raises(ValueError, match='official ACON weight-decay rule'):
        AconOptimWrapperConstructor(
            dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4)),
            paramwise)
