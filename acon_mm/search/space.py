r"""The search space of "Searching for Activation Functions" as token sequences.

An activation of ``num_units`` core units is the sequence of choices, per unit
:math:`k`:

* ``input1``, ``input2``: the inputs of its unary functions, ``x`` or the output
  of an earlier unit (the paper: "the pre-activation x and the outputs of earlier
  binary functions"). Unit 1 has only ``x`` (a choice of one, kept in the sequence
  so that every unit has the same five positions);
* ``unary1``, ``unary2``: indices into :data:`~acon_mm.models.layers.expression.UNARY`;
* ``binary``: an index into :data:`~acon_mm.models.layers.expression.BINARY`.

The activation is the last unit's output:
:math:`b_k(u_{k,1}(\mathrm{in}_{k,1}), u_{k,2}(\mathrm{in}_{k,2}))`. One unit has
10 × 25 × 25 = 6250 sequences (:meth:`SearchSpace.enumerate` lists them), two
units 6250 × 2 × 2 × 6250 = 1.6e8, the controller's space.
"""
import itertools
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from ..models.layers.expression import BINARY, UNARY, Node, canonical, core_unit

__all__ = ['SearchSpace', 'Tokens']

#: a candidate as its choices, one int per position of :attr:`SearchSpace.positions`
Tokens = Tuple[int, ...]

_FIELDS = ('input1', 'input2', 'unary1', 'unary2', 'binary')


@dataclass(frozen=True)
class SearchSpace:
    """Activations of ``num_units`` core units over ``unary`` and ``binary``.

    Args:
        num_units (int): core units per activation (the paper: 1 exhaustive,
            more by the controller; its best functions have 1 or 2).
        unary (Sequence[str]): unary templates over ``x`` (default the paper's 25).
        binary (Sequence[str]): binary templates over ``x1``, ``x2`` (default its 10).
    """
    num_units: int = 1
    unary: Tuple[str, ...] = UNARY
    binary: Tuple[str, ...] = BINARY

    def __post_init__(self):
        if not isinstance(self.num_units, int) or self.num_units < 1:
            raise ValueError(f'num_units must be an int >= 1, got {self.num_units!r}')
        for name, values in (('unary', self.unary), ('binary', self.binary)):
            if not values:
                raise ValueError(f'the search space needs at least one {name} function')
        object.__setattr__(self, 'unary', tuple(self.unary))
        object.__setattr__(self, 'binary', tuple(self.binary))
        for u in self.unary:  # refuse a bad template when the space is made
            core_unit(self.binary[0], u, u)
        for b in self.binary:
            core_unit(b, self.unary[0], self.unary[0])

    @property
    def positions(self) -> List[Tuple[int, str]]:
        """``(unit, field)`` of each position of a token sequence."""
        return [(k, f) for k in range(self.num_units) for f in _FIELDS]

    @property
    def vocab_sizes(self) -> List[int]:
        """The number of choices at each position."""
        sizes = []
        for k in range(self.num_units):
            sizes += [k + 1, k + 1, len(self.unary), len(self.unary), len(self.binary)]
        return sizes

    @property
    def size(self) -> int:
        """The number of token sequences (not of distinct functions)."""
        n = 1
        for v in self.vocab_sizes:
            n *= v
        return n

    def check(self, tokens: Sequence[int]) -> Tokens:
        """``tokens`` as a tuple, or a ValueError naming the bad position."""
        tokens = tuple(int(t) for t in tokens)
        sizes = self.vocab_sizes
        if len(tokens) != len(sizes):
            raise ValueError(f'a candidate of {self.num_units} core unit(s) has '
                             f'{len(sizes)} tokens, got {len(tokens)}: {tokens}')
        for i, (t, v) in enumerate(zip(tokens, sizes)):
            if not 0 <= t < v:
                unit, name = self.positions[i]
                raise ValueError(f'token {i} (unit {unit + 1} {name}) is {t}, '
                                 f'not in [0, {v})')
        return tokens

    def to_node(self, tokens: Sequence[int]) -> Node:
        """The expression tree of a token sequence."""
        tokens = self.check(tokens)
        outputs: List[Node] = [Node('x')]  # input choice 0 is x, k is unit k's output
        for k in range(self.num_units):
            in1, in2, u1, u2, b = tokens[5 * k:5 * k + 5]
            outputs.append(core_unit(self.binary[b], self.unary[u1], self.unary[u2],
                                     x1=outputs[in1], x2=outputs[in2]))
        return outputs[-1]

    def to_expression(self, tokens: Sequence[int]) -> str:
        """The canonical expression of a token sequence (what
        ``SearchedActivation(expr=...)`` takes and reports record)."""
        return canonical(self.to_node(tokens))

    def describe(self, tokens: Sequence[int]) -> str:
        """The choices in words, e.g. ``'unit 1: sigmoid(x1)*x2 of (beta*x, x)'``."""
        tokens = self.check(tokens)
        parts = []
        for k in range(self.num_units):
            in1, in2, u1, u2, b = tokens[5 * k:5 * k + 5]
            names = ['x'] + [f'unit {j}' for j in range(1, k + 1)]
            parts.append(f'unit {k + 1}: {self.binary[b]} of ({self.unary[u1]} on '
                         f'{names[in1]}, {self.unary[u2]} on {names[in2]})')
        return '; '.join(parts)

    def enumerate(self, unary: Optional[Sequence[str]] = None,
                  binary: Optional[Sequence[str]] = None) -> Iterator[Tokens]:
        """Every one-unit sequence (binary-major order), or those of the named
        subsets of the space's unary and binary functions."""
        if self.num_units != 1:
            raise ValueError('exhaustive enumeration is for one core unit '
                             f'(the paper\'s), this space has {self.num_units}')
        ui = self._indices(unary, self.unary, 'unary')
        bi = self._indices(binary, self.binary, 'binary')
        for b, u1, u2 in itertools.product(bi, ui, ui):
            yield (0, 0, u1, u2, b)

    @staticmethod
    def _indices(names, pool, what) -> List[int]:
        if names is None:
            return list(range(len(pool)))
        out = []
        for n in names:
            if n not in pool:
                raise ValueError(f'{n!r} is not a {what} function of the search '
                                 f'space; valid: {list(pool)}')
            out.append(pool.index(n))
        return out
