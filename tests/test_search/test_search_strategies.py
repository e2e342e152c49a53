"""The search's space, screening, controller and strategies (issue 22, step 2a).

No training here: the rewards are computed from the candidate's values, so that
what is tested is the search machinery itself.
"""
import copy

import pytest
import torch

from acon_mm.models.layers import SearchedActivation
from acon_mm.models.layers.expression import BINARY, UNARY, canonical
from acon_mm.search import Controller, SearchSpace, build_strategy, first_hit, run_search, screen


def test_space_sizes_and_round_trip():
    one = SearchSpace(1)
    assert one.size == 10 * 25 * 25 == len(list(one.enumerate()))
    two = SearchSpace(2)
    assert two.vocab_sizes == [1, 1, 25, 25, 10, 2, 2, 25, 25, 10]
    assert two.size == 6250 * 4 * 6250
    b, u1, u2 = BINARY.index('sigmoid(x1)*x2'), UNARY.index('beta*x'), UNARY.index('x')
    expr = one.to_expression((0, 0, u1, u2, b))
    assert expr == canonical('x*sigmoid(beta*x)')
    # the layer takes the search's expression as it is
    assert SearchedActivation(expr, num_channels=3).expr == expr
    # a second unit on the first one's output and on x
    tokens = (0, 0, UNARY.index('x'), UNARY.index('sigmoid(x)'), BINARY.index('max(x1, x2)'),
              1, 0, UNARY.index('tanh(x)'), UNARY.index('x'), BINARY.index('x1 + x2'))
    assert two.to_expression(tokens) == canonical('tanh(max(x, sigmoid(x))) + x')
    assert 'unit 2' in two.describe(tokens)


def test_space_refuses_bad_tokens_and_names():
    one = SearchSpace(1)
    with pytest.raises(ValueError, match=r'token 2 \(unit 1 unary1\) is 25'):
        one.to_node((0, 0, 25, 0, 0))
    with pytest.raises(ValueError, match='has 5 tokens, got 4'):
        one.to_node((0, 0, 0, 0))
    with pytest.raises(ValueError, match="'relu' is not a unary function"):
        list(one.enumerate(unary=['relu']))
    with pytest.raises(ValueError, match='one core unit'):
        list(SearchSpace(2).enumerate())
    subset = list(one.enumerate(unary=['x', 'sigmoid(x)'], binary=['max(x1, x2)']))
    assert len(subset) == 4


@pytest.mark.parametrize('expr, reason', [
    ('sqrt(x)', 'not finite'),          # NaN below 0
    ('exp(x**3)', 'not finite'),        # overflows on the probe's large values
    ('x - x', 'constant'),
    ('max(x, 0)*0', 'constant'),
])
def test_screen_rejects_degenerate(expr, reason):
    s = screen(expr)
    assert not s.ok and reason in s.reason, s


def test_screen_rejects_no_x_and_grammar():
    assert screen('beta + 1').reason == 'does not depend on x'
    assert 'not in the grammar' in screen('relu(x)').reason


def test_screen_same_function_once():
    # equal values, different names: one fingerprint
    assert screen('softplus(x)').fingerprint == screen('log(1 + exp(x))').fingerprint
    assert screen('max(x, 0) + min(x, 0)').fingerprint == screen('x').fingerprint
    assert screen('x*sigmoid(beta*x)').fingerprint != screen('x*sigmoid(x)').fingerprint
    assert screen('max(x, sigmoid(x))').fingerprint != screen('x*sigmoid(x)').fingerprint


def test_controller_ppo_raises_probability_of_rewarded_sequence():
    ctl = Controller([1, 1, 25, 25, 10], seed=0)
    good, bad = (0, 0, 3, 7, 2), (0, 0, 4, 1, 9)
    before = ctl.log_prob([good, bad]).detach()
    for _ in range(5):
        ctl.update([good, bad, good, bad], [1.0, 0.0, 1.0, 0.0])
    after = ctl.log_prob([good, bad]).detach()
    assert after[0] > before[0] + 0.5
    assert after[1] < before[1]
    # the EMA baseline moved from the first batch's mean
    assert 0.0 < float(ctl.baseline) <= 1.0


def test_controller_state_resumes_exactly():
    ctl = Controller([1, 1, 25, 25, 10], seed=3)
    ctl.update(ctl.sample(8), [float(i) / 8 for i in range(8)])
    state = copy.deepcopy(ctl.state())
    expect = ctl.sample(8)
    ctl.update(expect, [1.0] * 8)
    expect_next = ctl.sample(8)
    resumed = Controller([1, 1, 25, 25, 10], seed=99)  # other weights and generator
    resumed.load_state(state)
    assert resumed.sample(8) == expect
    resumed.update(expect, [1.0] * 8)
    assert resumed.sample(8) == expect_next


@pytest.mark.parametrize('name', ['exhaustive', 'random', 'controller'])
def test_strategy_state_resumes(name):
    space = SearchSpace(1)
    a = build_strategy(name, space, seed=1)
    a.observe(a.propose(4), [0.5, 0.1, 0.9, 0.0])
    state = copy.deepcopy(a.state())
    b = build_strategy(name, space, seed=7)
    b.load_state(state)
    assert a.propose(4) == b.propose(4)


def test_unknown_strategy_named():
    with pytest.raises(ValueError, match=r"unknown search strategy 'ppo'.*'controller'"):
        build_strategy('ppo', SearchSpace(1))


def _closeness_to(target: str):
    """A planted reward: how close a candidate's values (betas at 1) are to
    ``target``'s on [-6, 6]."""
    from acon_mm.models.layers.expression import compile_expression, num_betas, parse
    x = torch.linspace(-6, 6, 97, dtype=torch.float64)

    def values(e):
        n = parse(e)
        with torch.no_grad():
            v = compile_expression(n)(x, *[torch.ones((), dtype=torch.float64)] * num_betas(n))
        return torch.as_tensor(v, dtype=torch.float64).expand_as(x)

    t = values(target)
    calls = []

    def reward(e):
        calls.append(e)
        d = ((values(e) - t)**2).mean().sqrt()
        if e.startswith('x/'):
            raise FloatingPointError('loss is nan at iteration 3')
        return float(torch.exp(-d / 0.1)) if torch.isfinite(d) else 0.0

    return reward, calls


def test_run_search_exhaustive_subset_screens_and_dedupes():
    space = SearchSpace(1)
    unary = ['x', 'sigmoid(x)', 'sqrt(x)', 'softplus(x)']
    binary = ['max(x1, x2)', 'x1*x2', 'x1/(x2 + eps)']
    strategy = build_strategy('exhaustive', space, unary=unary, binary=binary)
    reward, calls = _closeness_to('max(x, sigmoid(x))')
    records = run_search(strategy, reward, budget=1000, batch_size=5)
    assert len(records) == 4 * 4 * 3 and strategy.exhausted
    status = {r.status for r in records}
    assert status == {'evaluated', 'duplicate', 'rejected', 'diverged'}
    # every function trained once: the evaluator saw no expression twice
    assert len(calls) == len(set(calls)) == sum(r.evaluations for r in records)
    # max(x1, x2) is commutative: (x, sigmoid) and (sigmoid, x) are one function
    dup = [r for r in records if r.status == 'duplicate']
    assert any(r.duplicate_of == canonical('max(x, sigmoid(x))') for r in dup)
    for r in records:
        if r.status == 'rejected':
            assert 'sqrt' in r.expression and r.reward == 0 and r.reason
        if r.status == 'diverged':
            assert r.reward == 0 and 'nan' in r.reason
    best = max(records, key=lambda r: r.reward)
    assert best.expression == canonical('max(x, sigmoid(x))') and best.reward == pytest.approx(1.0)


def test_run_search_budget_counts_evaluations():
    reward, calls = _closeness_to('x*sigmoid(x)')
    records = run_search(build_strategy('random', SearchSpace(2), seed=0), reward,
                         budget=20, batch_size=8)
    assert sum(r.evaluations for r in records) == len(calls) == 20
    with pytest.raises(ValueError, match='budget'):
        run_search(build_strategy('random', SearchSpace(1)), reward, budget=0)
    hit = first_hit(records, 0.0)
    assert hit == 1 or records[0].status == 'rejected'


@pytest.mark.slow  # ~2 min: 4 seeds x 2 strategies x up to 1500 candidates
def test_controller_finds_planted_function_sooner_than_random():
    """The issue's test: on a planted toy reward (closeness to max(x, sigmoid(x))
    in the controller's two-unit space, 1.6e8 sequences) the PPO controller
    reaches the planted function in fewer evaluated candidates than random
    search, both measured here over the same seeds and budget."""
    from acon_mm.models.layers.expression import compile_expression, num_betas, parse
    x = torch.linspace(-6, 6, 97, dtype=torch.float64)

    def values(e):
        n = parse(e)
        with torch.no_grad():
            v = compile_expression(n)(x, *[torch.ones((), dtype=torch.float64)] * num_betas(n))
        return torch.as_tensor(v, dtype=torch.float64).expand_as(x)

    target = values('max(x, sigmoid(x))')

    def reward(e):  # 1 at the planted function, smoothly less away from it
        d = ((values(e) - target)**2).mean().sqrt()
        return float(1 / (1 + d / 0.3)) if torch.isfinite(d) else 0.0

    budget, hits = 1500, {}
    for name in ('random', 'controller'):
        hits[name] = []
        for seed in range(4):
            records = run_search(build_strategy(name, SearchSpace(2), seed=seed), reward,
                                 budget=budget, batch_size=16,
                                 stop=lambda r: bool(r) and r[-1].reward > 0.999)
            hits[name].append(first_hit(records, 0.999) or budget + 1)
    # measured: random [None, 1469, None, 1347], controller [483, 976, 585, 643]
    assert all(h <= budget for h in hits['controller']), hits
    assert max(hits['controller']) < min(hits['random']), hits
    assert sum(hits['controller']) < 0.6 * sum(hits['random']), hits


def test_leaderboard_names_a_reference_in_disguise():
    """A find that is a reference written otherwise (here ReLU) shares its
    fingerprint, is shown as that reference and is not transferred."""
    from acon_mm.search.report import leaderboard, top_functions
    relu = 'min(abs(-x - abs(x)), max(0, x))'
    assert screen(relu).fingerprint == screen('ReLU').fingerprint == screen('max(x, 0)').fingerprint

    def rec(step, expr, reward):
        s = screen(expr)
        return dict(step=step, tokens=[], expression=s.expression, status='evaluated',
                    reward=reward, reason=None, duplicate_of=None, evaluations=1,
                    fingerprint=s.fingerprint)

    ref = dict(activation='ReLU', reward=38.1, rewards=[38.1], reason=None)
    state = dict(references=[ref], children={},
                 progress={'controller': [rec(0, relu, 38.1), rec(1, 'tanh(x) + x', 30.0)]})
    board = leaderboard(state)
    disguised = [b for b in board if b['expression'] == screen(relu).expression][0]
    assert disguised['same_as'] == 'ReLU'
    assert top_functions(board, 3) == [screen('tanh(x) + x').expression]
