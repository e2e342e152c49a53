"""The meta-ACON variants: a switch without norms and the hard-sigmoid gate."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.analysis.study_config import load_members
from acon_mm.models.layers import (
    AconC,
    HardAconC,
    HardMetaAconC,
    MetaAconC,
    MetaAconCNoBN,
    build_acon_layer,
)


def _np(t):
    return t.detach().double().numpy()


def _hsig(z):  # written from the definition, not from torch
    return np.clip(z / 6.0 + 0.5, 0.0, 1.0)


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(3, 20, 4, 5, dtype=torch.float64) * 3


def _randomise(layer):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def test_registered_and_built_by_name():
    for name in ('HardAconC', 'HardMetaAconC', 'MetaAconCNoBN'):
        assert MODELS.get(name) is not None, name
        layer = build_acon_layer(dict(type=name), 8)
        assert layer.num_channels == 8, name


def test_hard_acon_c_formula_and_grad(x):
    layer = _randomise(HardAconC(20).double())
    p1, p2, b = _np(layer.p1), _np(layer.p2), _np(layer.beta)
    d = (p1 - p2) * _np(x)
    np.testing.assert_allclose(_np(layer(x)), d * _hsig(b * d) + p2 * _np(x),
                               rtol=1e-12, atol=1e-12)
    xx = x[:1, :4, :2, :2].clone().requires_grad_()
    small = _randomise(HardAconC(4).double())
    assert torch.autograd.gradcheck(small, (xx, ))
    # with p1 = 1, p2 = 0, beta = 1 it is h-swish
    hs = HardAconC(20).double()
    with torch.no_grad():
        hs.p1.fill_(1.0)
        hs.p2.zero_()
    torch.testing.assert_close(hs(x), nn.functional.hardswish(x))
    # the parameters are AconC's: its checkpoint loads
    HardAconC(20).load_state_dict(AconC(20).state_dict())


def test_hard_meta_acon_c_formula_and_grad(x):
    layer = _randomise(HardMetaAconC(20).double()).eval()
    beta = _np(layer.switch_beta(x))
    p1, p2 = _np(layer.p1), _np(layer.p2)
    d = (p1 - p2) * _np(x)
    np.testing.assert_allclose(_np(layer(x)), d * _hsig(beta * d) + p2 * _np(x),
                               rtol=1e-10, atol=1e-12)
    small = _randomise(HardMetaAconC(4, r=2).double()).train()
    xx = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small, (xx, ))
    HardMetaAconC(20).load_state_dict(MetaAconC(20).state_dict())


def test_meta_acon_no_bn_formula(x):
    layer = _randomise(MetaAconCNoBN(20, r=4).double())
    assert not any('bn' in k for k in layer.state_dict()), list(layer.state_dict())
    w1, b1 = _np(layer.fc1.weight)[:, :, 0, 0], _np(layer.fc1.bias)
    w2, b2 = _np(layer.fc2.weight)[:, :, 0, 0], _np(layer.fc2.bias)
    gap = _np(x).mean(axis=(2, 3))  # (N, C)
    beta = _sig((gap @ w1.T + b1) @ w2.T + b2)[:, :, None, None]
    p1, p2 = _np(layer.p1), _np(layer.p2)
    d = (p1 - p2) * _np(x)
    expected = d * _sig(beta * d) + p2 * _np(x)
    for mode in (layer.train, layer.eval):  # no statistics: one function
        mode()
        np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-10, atol=1e-12)
    small = _randomise(MetaAconCNoBN(4, r=2).double())
    xx = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small, (xx, ))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_meta_acon_no_bn_batch_one_trains(dtype):
    """Batch 1 (train and eval) gives each image the function of a larger batch:
    there are no batch statistics in the switch."""
    torch.manual_seed(0)
    layer = MetaAconCNoBN(16).to(dtype).train()
    x = torch.randn(4, 16, 6, 6, dtype=dtype)
    whole = layer(x)
    one = torch.cat([layer(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(one, whole)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(x[:1]).square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in layer.parameters())
    opt.step()
    layer.eval()
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1])


def test_study_compares_the_variants():
    members = load_members(['configs/demo/retinanet_r18-aconc_fpn_demo.py'],
                           activations=['MetaAconC', 'MetaAconCNoBN', 'HardMetaAconC'])
    assert [m.activation for m in members] == ['MetaAconC', 'MetaAconCNoBN', 'HardMetaAconC']
    assert len({m.name for m in members}) == 3
