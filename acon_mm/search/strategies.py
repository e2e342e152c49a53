"""Search strategies and the loop that feeds them rewards.

A strategy proposes token sequences (:meth:`propose`) and is told their rewards
(:meth:`observe`): ``exhaustive`` lists one core unit's whole space (or a named
subset), ``random`` draws uniformly, ``controller`` samples the RNN policy and
updates it with PPO after each batch (:class:`~acon_mm.search.controller.Controller`).
Each strategy's :meth:`state` is what a resumed search reloads.

:func:`run_search` screens every proposal (:func:`~acon_mm.search.screen.screen`):
a rejected one gets reward 0 and its reason without evaluation, a function
already seen gets the earlier reward without evaluation, and only new functions
are evaluated and count against the budget.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .controller import Controller
from .screen import screen
from .space import SearchSpace, Tokens

__all__ = ['ExhaustiveStrategy', 'RandomStrategy', 'ControllerStrategy',
           'STRATEGIES', 'build_strategy', 'Record', 'run_search', 'first_hit']


class ExhaustiveStrategy:
    """Every sequence of one core unit, in order (binary-major), once."""
    name = 'exhaustive'

    def __init__(self, space: SearchSpace, unary: Optional[Sequence[str]] = None,
                 binary: Optional[Sequence[str]] = None, seed: int = 0):
        self.space = space
        self._all = list(space.enumerate(unary, binary))
        self.position = 0

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self._all)

    def propose(self, n: int) -> List[Tokens]:
        out = self._all[self.position:self.position + n]
        self.position += len(out)
        return out

    def observe(self, sequences, rewards) -> None:
        pass

    def state(self) -> dict:
        return dict(position=self.position)

    def load_state(self, state: dict) -> None:
        self.position = int(state['position'])


class RandomStrategy:
    """Uniform draws over the space (the controller's control), seeded."""
    name = 'random'
    exhausted = False

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space = space
        self.generator = torch.Generator().manual_seed(seed)

    def propose(self, n: int) -> List[Tokens]:
        cols = [torch.randint(v, (n, ), generator=self.generator)
                for v in self.space.vocab_sizes]
        return [tuple(int(c[i]) for c in cols) for i in range(n)]

    def observe(self, sequences, rewards) -> None:
        pass

    def state(self) -> dict:
        return dict(generator=self.generator.get_state())

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state['generator'])


class ControllerStrategy:
    """The paper's RNN controller trained with PPO (one update per batch)."""
    name = 'controller'
    exhausted = False

    def __init__(self, space: SearchSpace, seed: int = 0, **controller_kwargs):
        self.space = space
        self.controller = Controller(space.vocab_sizes, seed=seed, **controller_kwargs)

    def propose(self, n: int) -> List[Tokens]:
        return self.controller.sample(n)

    def observe(self, sequences, rewards) -> None:
        self.controller.update(sequences, rewards)

    def state(self) -> dict:
        return self.controller.state()

    def load_state(self, state: dict) -> None:
        self.controller.load_state(state)


STRATEGIES = {s.name: s for s in (ExhaustiveStrategy, RandomStrategy, ControllerStrategy)}


def build_strategy(name: str, space: SearchSpace, seed: int = 0, **kwargs):
    """A strategy by name (``exhaustive``, ``random``, ``controller``)."""
    if name not in STRATEGIES:
        raise ValueError(f'unknown search strategy {name!r}; valid: {list(STRATEGIES)}')
    return STRATEGIES[name](space, seed=seed, **kwargs)


@dataclass
class Record:
    """One proposal and what became of it. ``status``: ``'evaluated'``,
    ``'duplicate'`` (of ``duplicate_of``, an earlier expression), ``'rejected'``
    or ``'diverged'`` (the evaluator's reason); ``step``: the proposal's index."""
    step: int
    tokens: Tokens
    expression: str
    status: str
    reward: float
    reason: Optional[str] = None
    duplicate_of: Optional[str] = None
    evaluations: int = field(default=0)


def run_search(strategy, evaluate: Callable[[str], float], budget: int,
               batch_size: int = 8, max_proposals: Optional[int] = None,
               stop: Optional[Callable[[List[Record]], bool]] = None) -> List[Record]:
    """Propose, screen, evaluate and feed back until ``budget`` new functions
    are evaluated (or the strategy is exhausted, or ``stop(records)`` is true).

    Args:
        strategy: one of :data:`STRATEGIES`' instances.
        evaluate (Callable[[str], float]): the reward of a canonical expression;
            it may raise :class:`FloatingPointError` (a diverged child), which
            gives reward 0 and the message as the reason.
        budget (int): the number of functions evaluated.
        batch_size (int): proposals per strategy step (one PPO update each).
        max_proposals (int, optional): a bound on proposals (default 50 × budget),
            so that a strategy proposing only known functions ends.
    """
    if budget < 1 or batch_size < 1:
        raise ValueError(f'budget and batch_size must be >= 1, got {budget}, {batch_size}')
    max_proposals = max_proposals or 50 * budget
    records: List[Record] = []
    seen: Dict[str, Record] = {}  # fingerprint -> the evaluated record
    screened: Dict[Tokens, object] = {}
    evaluated = 0
    while evaluated < budget and len(records) < max_proposals and not strategy.exhausted:
        proposals = strategy.propose(batch_size)
        if not proposals:
            break
        rewards = []
        for tokens in proposals:
            if tokens not in screened:
                screened[tokens] = screen(strategy.space.to_expression(tokens))
            s = screened[tokens]
            step = len(records)
            if not s.ok:
                rec = Record(step, tokens, s.expression, 'rejected', 0.0, s.reason)
            elif s.fingerprint in seen:
                first = seen[s.fingerprint]
                rec = Record(step, tokens, s.expression, 'duplicate', first.reward,
                             first.reason, duplicate_of=first.expression)
            elif evaluated >= budget:
                break  # the budget is spent: this proposal is not used
            else:
                evaluated += 1
                try:
                    reward = float(evaluate(s.expression))
                    rec = Record(step, tokens, s.expression, 'evaluated', reward,
                                 evaluations=1)
                except FloatingPointError as e:
                    rec = Record(step, tokens, s.expression, 'diverged', 0.0, str(e),
                                 evaluations=1)
                seen[s.fingerprint] = rec
            records.append(rec)
            rewards.append(rec.reward)
        if rewards:
            strategy.observe(proposals[:len(rewards)], rewards)
        if stop is not None and stop(records):
            break
    return records


def first_hit(records: Sequence[Record], threshold: float) -> Optional[int]:
    """The number of functions evaluated until one reached ``threshold``
    (None if none did)."""
    n = 0
    for rec in records:
        n += rec.evaluations
        if rec.status in ('evaluated', 'duplicate') and rec.reward >= threshold:
            return max(n, 1)
    return None

