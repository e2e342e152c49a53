"""The searched layer and its grammar (issue: the activation search, step 1).

Every unary and binary function of the paper against a direct torch reference
and ``gradcheck``; parser round trips and refusals; canonical-form equality; the
layer in a backbone's ``acon_cfg`` and an FPN's ``act_cfg``, its state dict and
its refusal of a checkpoint of another expression.
"""
import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer

from acon_mm.models.backbones import ResNetACON
from acon_mm.models.layers import SearchedActivation, build_acon_layer, iter_acon_layers
from acon_mm.models.layers.expression import (
    BINARY,
    EPS,
    FUNCTIONS,
    UNARY,
    GrammarError,
    canonical,
    compile_expression,
    core_unit,
    num_betas,
    parse,
)

C = 3


def _beta(seed):
    g = torch.Generator().manual_seed(seed)
    return (0.5 + torch.rand(1, C, 1, 1, generator=g, dtype=torch.float64))


B0, B1 = _beta(1), _beta(2)

#: the paper's unary functions with a direct torch reference (b: the beta)
UNARY_REF = {
    'x': lambda x, b: x,
    '-x': lambda x, b: -x,
    'abs(x)': lambda x, b: x.abs(),
    'x**2': lambda x, b: x * x,
    'x**3': lambda x, b: x * x * x,
    'sqrt(x)': lambda x, b: x.sqrt(),
    'beta*x': lambda x, b: b * x,
    'x + beta': lambda x, b: x + b,
    'log(abs(x) + eps)': lambda x, b: torch.log(x.abs() + EPS),
    'exp(x)': lambda x, b: x.exp(),
    'sin(x)': lambda x, b: x.sin(),
    'cos(x)': lambda x, b: x.cos(),
    'sinh(x)': lambda x, b: x.sinh(),
    'cosh(x)': lambda x, b: x.cosh(),
    'tanh(x)': lambda x, b: x.tanh(),
    'asinh(x)': lambda x, b: torch.log(x + torch.sqrt(x * x + 1)),
    'atan(x)': lambda x, b: x.atan(),
    'sinc(x)': lambda x, b: torch.where(x == 0, torch.ones_like(x), x.sin() / x),
    'max(x, 0)': lambda x, b: x.clamp(min=0),
    'min(x, 0)': lambda x, b: x.clamp(max=0),
    'sigmoid(x)': lambda x, b: 1 / (1 + torch.exp(-x)),
    'softplus(x)': lambda x, b: torch.log1p(torch.exp(x)),
    'exp(-x**2)': lambda x, b: torch.exp(-x * x),
    'erf(x)': lambda x, b: torch.erf(x),
    'beta': lambda x, b: b.expand_as(x),
}
#: the binary functions (b: the beta)
BINARY_REF = {
    'x1 + x2': lambda a, c, b: a + c,
    'x1*x2': lambda a, c, b: a * c,
    'x1 - x2': lambda a, c, b: a - c,
    'x1/(x2 + eps)': lambda a, c, b: a / (c + EPS),
    'max(x1, x2)': lambda a, c, b: torch.where(a > c, a, c),
    'min(x1, x2)': lambda a, c, b: torch.where(a < c, a, c),
    'sigmoid(x1)*x2': lambda a, c, b: c / (1 + torch.exp(-a)),
    'exp(-beta*(x1 - x2)**2)': lambda a, c, b: torch.exp(-b * (a - c) ** 2),
    'exp(-beta*abs(x1 - x2))': lambda a, c, b: torch.exp(-b * (a - c).abs()),
    'beta_1*x1 + (1 - beta_1)*x2': lambda a, c, b: b * a + (1 - b) * c,
}


def test_the_space_is_the_paper_s():
    assert len(UNARY) == 25 and len(set(map(canonical, UNARY))) == 25
    assert set(UNARY) == set(UNARY_REF)
    assert len(BINARY) == 10 and set(BINARY) == set(BINARY_REF)


def _input(positive=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 3, 3, generator=g, dtype=torch.float64)
    x = x.abs() + 0.1 if positive else x + 0.01  # away from the kinks at 0
    return x.requires_grad_()


@pytest.mark.parametrize('unary', UNARY)
def test_each_unary_function_against_torch_and_gradcheck(unary):
    x = _input(positive=unary == 'sqrt(x)')
    fn = compile_expression(unary)
    betas = [B0.clone().requires_grad_() for _ in range(num_betas(parse(unary)))]
    want = UNARY_REF[unary](x, B0)
    got = fn(x, *betas)
    torch.testing.assert_close(got.expand_as(x), want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, *b: fn(x, *b), (x, *betas))


@pytest.mark.parametrize('binary', BINARY)
def test_each_binary_function_against_torch_and_gradcheck(binary):
    # x1 = x, x2 = sigmoid(x): a core unit binary(x, sigmoid(x))
    node = core_unit(binary, 'x', 'sigmoid(x)')
    x = _input()
    fn = compile_expression(node)
    n = num_betas(node)
    assert n == (1 if 'beta' in binary else 0)
    betas = [B1.clone().requires_grad_() for _ in range(n)]
    want = BINARY_REF[binary](x, torch.sigmoid(x), B1)
    torch.testing.assert_close(fn(x, *betas), want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, *b: fn(x, *b), (x, *betas))


def test_core_units_and_their_betas():
    node = core_unit('beta_1*x1 + (1 - beta_1)*x2', 'beta*x', 'sigmoid(x)')
    assert canonical(node) == '(1 - beta_1)*sigmoid(x) + beta_1*beta*x'
    assert num_betas(node) == 2  # the convex mix's beta once, the unary's once
    twice = core_unit('x1*x2', 'x', 'tanh(x)', x1=node)  # a repeated core unit
    assert num_betas(twice) == 2  # the first unit is one value: the same betas
    assert 'tanh(x)' in canonical(twice)
    code = compile_expression(core_unit('x1*x2', 'x', 'x', x1=node, x2=node)).code
    assert code.count('torch.sigmoid') == 1  # computed once, used twice


@pytest.mark.parametrize('a,b', [
    ('max(x, sigmoid(x))', 'max(sigmoid(x),x)'),
    ('x*sigmoid(beta*x)', 'sigmoid(beta * x) * x'),
    ('x + 1.0', '(1 + (x))'),
    ('x*(x/2)', '(x/2.)*x'),
    ('exp(-beta*abs(x - sigmoid(x)))', 'exp(-(beta)*abs(x-sigmoid(x)))'),
    ('beta_7*x + (1 - beta_7)*tanh(x)', '(1-beta_2)*tanh(x)+beta_2*x'),
    ('beta*x + beta', 'beta + x*beta'),
])
def test_the_same_function_written_twice_gets_one_name(a, b):
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize('expr', [
    'max(x, sigmoid(x))', 'x*sigmoid(beta*x)', 'x + (x - 1)', '-x**2', '(-x)**2',
    'x**-1', '--x', 'x/(x + eps)*2', '2*x/(x + eps)', 'x - (x - x)', 'x/(x/x)',
    'beta_1*x + (1 - beta_1)*x**2', '(x**2)**3', 'x**2**3', '-(x*x)', 'x*-x',
    *UNARY,
])
def test_canonical_forms_round_trip(expr):
    c = canonical(expr)
    assert canonical(c) == c
    x = _input()
    n = num_betas(parse(expr))
    assert num_betas(parse(c)) == n
    betas = [_beta(i) for i in range(n)]
    ref = compile_expression(expr)(x, *betas)
    # the same function (betas are matched up by the canonical order, which is
    # the order both compile with)
    torch.testing.assert_close(compile_expression(c)(x, *betas), ref, equal_nan=True)


def test_different_functions_keep_different_names():
    assert canonical('x - 1') != canonical('1 - x')
    assert canonical('x/2') != canonical('2/x')
    assert canonical('beta*x + beta*x') != canonical('beta_1*x + beta_1*x')
    assert canonical('softplus(x)') != canonical('log(1 + exp(x))')  # no algebra


@pytest.mark.parametrize('expr,token', [
    ('relu(x)', "'relu'"),
    ('x.relu()', "'x.relu'"),
    ('torch.relu(x)', "'torch.relu'"),
    ('__import__("os").system("true")', "'__import__(\"os\").system'"),
    ('__import__("os")', "'__import__'"),
    ('y + x', "'y'"),
    ('x[0]', "'x[0]'"),
    ('x if x else 0', 'conditional'),
    ('lambda: x', 'lambda'),
    ('max(x)', 'max takes 2'),
    ('sigmoid(x, 2)', 'sigmoid takes 1'),
    ('sigmoid(x=x)', 'sigmoid takes 1'),
    ('True*x', "'True'"),
    ('1e400*x', "'1e400'"),
    ('"x"', 'constant'),
    ('x +', 'not an expression'),
    ('x < 0', 'comparison'),
])
def test_refusals_name_the_token_and_the_valid_names(expr, token):
    with pytest.raises(GrammarError) as err:
        parse(expr)
    msg = str(err.value)
    assert token in msg, msg
    if 'takes' not in msg and 'not an expression' not in msg and 'constant' not in msg:
        assert 'sigmoid' in msg and 'beta_<k>' in msg, msg  # the valid names


def test_nothing_is_evaluated(tmp_path, monkeypatch):
    marker = tmp_path / 'ran'
    with pytest.raises(GrammarError):
        SearchedActivation(f'__import__("pathlib").Path({str(marker)!r}).touch() or x')
    assert not marker.exists()


def test_the_layer():
    layer = SearchedActivation('x*sigmoid(beta*x)')
    assert layer.expr == 'sigmoid(beta*x)*x'
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), F.silu(x))  # beta starts at 1
    assert layer.num_channels == 4 and layer.beta_0.shape == (1, 4, 1, 1)
    with pytest.raises(ValueError, match='expected 4 channels'):
        layer(torch.randn(2, 3, 5, 5))
    assert 'expr=' in repr(layer)
    # a deep copy and a pickle keep the compiled function
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(other(x), layer(x))
    with pytest.raises(GrammarError, match='does not depend on x'):
        SearchedActivation('beta + 1')
    free = SearchedActivation('max(x, sigmoid(x))', num_channels=None)
    torch.testing.assert_close(free(x), torch.maximum(x, torch.sigmoid(x)))


def test_the_layer_is_trainable_and_its_betas_are_per_channel():
    torch.manual_seed(0)
    layer = SearchedActivation('exp(-beta*abs(x - sigmoid(x)))', num_channels=C)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    x = torch.randn(64, C, 4, 4)
    want = torch.tensor([0.5, 2.0, 3.0]).view(1, C, 1, 1)  # a beta per channel
    target = torch.exp(-want * (x - torch.sigmoid(x)).abs())
    for _ in range(300):
        opt.zero_grad()
        F.mse_loss(layer(x), target).backward()
        opt.step()
    assert layer.beta_0.grad.shape == (1, C, 1, 1)
    torch.testing.assert_close(layer.beta_0.detach(), want, rtol=0.05, atol=0.05)


def test_a_checkpoint_of_another_expression_is_refused_by_name():
    a = SearchedActivation('x*sigmoid(beta*x)', num_channels=C)
    b = SearchedActivation('x*tanh(beta*x)', num_channels=C)
    sd = a.state_dict()
    assert bytes(sd['expression'].tolist()).decode() == 'sigmoid(beta*x)*x'
    with pytest.raises(ValueError, match=r"holds expr='sigmoid\(beta\*x\)\*x', this "
                                         r"layer is expr='tanh\(beta\*x\)\*x'"):
        b.load_state_dict(sd)
    c = SearchedActivation('sigmoid(beta * x) * x', num_channels=C)  # the same, rewritten
    with torch.no_grad():
        a.beta_0.fill_(2.5)
    c.load_state_dict(a.state_dict())
    assert torch.all(c.beta_0 == 2.5)


def test_in_a_backbone_and_an_fpn():
    import acon_mm  # noqa: F401 - registers the layers
    backbone = ResNetACON(depth=18, acon_cfg=dict(type='SearchedActivation',
                                                  expr='max(x, sigmoid(x))'))
    layers = [m for m in backbone.modules() if isinstance(m, SearchedActivation)]
    assert len(layers) == 16 and all(m.num_channels for m in layers)
    assert list(iter_acon_layers(backbone)) == []  # not of the ACON family
    out = backbone(torch.randn(1, 3, 64, 64))
    assert all(torch.isfinite(o).all() for o in out)
    built = build_acon_layer(dict(type='SearchedActivation', expr='x*sigmoid(beta*x)'),
                             16, where='neck.act')
    assert built.beta_0.shape == (1, 16, 1, 1) and built.layer_name == 'neck.act'
    act = build_activation_layer(dict(type='SearchedActivation', expr='x*sigmoid(beta*x)'))
    assert act(torch.randn(1, 5, 2, 2)).shape == (1, 5, 2, 2)  # mmcv's builder, lazy C
    assert math.isclose(float(act.beta_0.detach().mean()), 1.0)


def test_functions_are_the_listed_ones():
    assert set(FUNCTIONS) == {'abs', 'sqrt', 'exp', 'log', 'sin', 'cos', 'sinh', 'cosh',
                              'tanh', 'asinh', 'atan', 'sinc', 'sigmoid', 'softplus',
                              'erf', 'max', 'min'}
