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
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .controller import Controller
from .screen import Screened, screen
from .space import SearchSpace, Tokens

__all__ = ['ExhaustiveStrategy', 'RandomStrategy', 'ControllerStrategy',
           'STRATEGIES', 'build_strategy', 'Record', 'Progress', 'search_step', 'run_search',
           'first_hit']


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
    or ``'diverged'`` (the evaluator's reason); ``step``: the proposal's index;
    ``fingerprint``: the function's key (:func:`~acon_mm.search.screen.screen`)."""
    step: int
    tokens: Tokens
    expression: str
    status: str
    reward: float
    reason: Optional[str] = None
    duplicate_of: Optional[str] = None
    evaluations: int = field(default=0)
    fingerprint: Optional[str] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d['tokens'] = list(self.tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'Record':
        return cls(**{**d, 'tokens': tuple(d['tokens'])})


#: ``evaluate_many(screened) -> [(reward, reason)]``: ``reason`` is None for a
#: trained child, the message for a diverged one (reward 0)
BatchEvaluator = Callable[[List[Screened]], List[Tuple[float, Optional[str]]]]


@dataclass
class Progress:
    """One strategy's search so far: its records and the functions it evaluated."""
    records: List[Record] = field(default_factory=list)

    @property
    def evaluated(self) -> int:
        return sum(r.evaluations for r in self.records)

    @property
    def seen(self) -> Dict[str, Record]:
        return {r.fingerprint: r for r in self.records if r.evaluations}


def search_step(strategy, progress: Progress, budget: int, batch_size: int,
                evaluate_many: BatchEvaluator) -> List[Record]:
    """One batch: propose, screen, evaluate the new functions together (so that a
    caller can train them in parallel), record and feed the rewards back.

    A rejected proposal gets reward 0 and its reason; a function this strategy
    saw before (or earlier in the batch) gets that reward without evaluation;
    once ``budget`` functions are evaluated the rest of the batch is not used.
    Returns the batch's records (also appended to ``progress``).
    """
    proposals = strategy.propose(batch_size)
    seen = progress.seen
    first_in_batch: Dict[str, int] = {}
    plan, new = [], []  # plan: (tokens, screened, kind)
    evaluated = progress.evaluated
    for tokens in proposals:
        s = screen(strategy.space.to_expression(tokens))
        if not s.ok:
            plan.append((tokens, s, 'rejected'))
        elif s.fingerprint in seen or s.fingerprint in first_in_batch:
            plan.append((tokens, s, 'duplicate'))
        elif evaluated + len(new) >= budget:
            break  # the budget is spent: this proposal is not used
        else:
            first_in_batch[s.fingerprint] = len(new)
            new.append(s)
            plan.append((tokens, s, 'new'))
    results = list(evaluate_many(new)) if new else []
    if len(results) != len(new):
        raise RuntimeError(f'the evaluator returned {len(results)} results for {len(new)}')
    out: List[Record] = []
    for tokens, s, kind in plan:
        step = len(progress.records) + len(out)
        if kind == 'rejected':
            rec = Record(step, tokens, s.expression, 'rejected', 0.0, s.reason)
        elif kind == 'new':
            reward, reason = results[first_in_batch[s.fingerprint]]
            rec = Record(step, tokens, s.expression,
                         'evaluated' if reason is None else 'diverged',
                         float(reward) if reason is None else 0.0, reason,
                         evaluations=1, fingerprint=s.fingerprint)
            seen[s.fingerprint] = rec
        else:
            first = seen[s.fingerprint]
            rec = Record(step, tokens, s.expression, 'duplicate', first.reward,
                         first.reason, duplicate_of=first.expression,
                         fingerprint=s.fingerprint)
        out.append(rec)
    progress.records.extend(out)
    if out:
        strategy.observe([r.tokens for r in out], [r.reward for r in out])
    return out


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

    def one(s: Screened) -> Tuple[float, Optional[str]]:
        try:
            return float(evaluate(s.expression)), None
        except FloatingPointError as e:
            return 0.0, str(e)

    progress = Progress()
    while (progress.evaluated < budget and len(progress.records) < max_proposals
           and not strategy.exhausted):
        if not search_step(strategy, progress, budget, batch_size,
                           lambda new: [one(s) for s in new]):
            break
        if stop is not None and stop(progress.records):
            break
    return progress.records


def first_hit(records: Sequence[Record], threshold: float) -> Optional[int]:
    """The number of functions evaluated until one reached ``threshold``
    (None if none did)."""
    n = 0
    for rec in records:
        n += rec.evaluations
        if rec.status in ('evaluated', 'duplicate') and rec.reward >= threshold:
            return max(n, 1)
    return None

