"""The CIFAR ResNet child of the activation search (issue 22)."""
import pytest
import torch

from acon_mm.models.backbones import ResNetCIFARACON
from acon_mm.models.layers import SearchedActivation


def test_resnet20_shape_params_and_activations():
    m = ResNetCIFARACON(depth=20, acon_cfg=dict(type='ReLU')).eval()
    out = m(torch.rand(2, 3, 32, 32))
    assert [tuple(o.shape) for o in out] == [(2, 64, 8, 8)]
    # He et al.'s ResNet-20 has 0.27M parameters (with its 64x10 classifier)
    n = sum(p.numel() for p in m.parameters()) + 64 * 10 + 10
    assert 0.26e6 < n < 0.28e6, n
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 19 + 2  # + 2 shortcuts
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)


def test_every_relu_is_the_searched_activation():
    expr = 'max(x, sigmoid(x))'
    m = ResNetCIFARACON(depth=20, acon_cfg=dict(type='SearchedActivation', expr=expr))
    acts = [x for x in m.modules() if isinstance(x, SearchedActivation)]
    assert len(acts) == 1 + 2 * 9  # the stem's and both of each basic block's
    assert not any(isinstance(x, torch.nn.ReLU) for x in m.modules())
    loss = m(torch.rand(2, 3, 32, 32))[0].square().mean()
    loss.backward()
    assert m.conv1.weight.grad is not None


def test_builds_in_an_mmpretrain_classifier_and_refuses_bad_options():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    import acon_mm  # noqa: F401
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='ResNetCIFARACON', depth=20,
                          acon_cfg=dict(type='SearchedActivation', expr='x*sigmoid(beta*x)')),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
                      loss=dict(type='CrossEntropyLoss'))))
    model.init_weights()
    logits = model(torch.rand(4, 3, 32, 32), mode='tensor')
    assert tuple(logits.shape) == (4, 10)
    with pytest.raises(KeyError, match=r'invalid depth 18.*\[20, 32, 44, 56, 110\]'):
        ResNetCIFARACON(depth=18)
    with pytest.raises(ValueError, match='deep_stem'):
        ResNetCIFARACON(depth=20, deep_stem=True)
