"""Screening candidates before any training: degenerate ones out, duplicates once.

A candidate is **rejected** (and recorded with its reason) when on the probe its
output is not finite, it does not depend on ``x`` at all, or it is constant.
Two candidates are the **same function** when their values on the fixed probe
agree (to :data:`ROUND` relative digits) for two settings of the betas (all 1,
their initial value, and a fixed random draw): the second is not trained again
but gets the first one's reward. No algebra is needed: ``softplus(x)`` and
``log(1 + exp(x))``, or ``max(x, 0) + min(x, 0)`` and ``x``, are one function.
"""
import hashlib
from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..models.layers.expression import (
    GrammarError,
    Node,
    canonical,
    compile_expression,
    depends_on_x,
    num_betas,
    parse,
)

__all__ = ['Screened', 'screen', 'probe_points', 'FUNCTION_OF']

#: significant digits of the values compared
ROUND = 6

#: registered activation types that are a function of the grammar (screened as it)
FUNCTION_OF = {'ReLU': 'max(x, 0)'}


def probe_points() -> torch.Tensor:
    """The fixed probe: a grid on [-6, 6] (the plotted range), values near 0,
    and a few large ones (float64)."""
    grid = torch.linspace(-6.0, 6.0, 97, dtype=torch.float64)
    near0 = torch.tensor([-1e-3, -1e-6, 0.0, 1e-6, 1e-3], dtype=torch.float64)
    large = torch.tensor([-20.0, -10.0, 10.0, 20.0], dtype=torch.float64)
    return torch.cat([grid, near0, large])


@dataclass(frozen=True)
class Screened:
    """The outcome of :func:`screen`.

    ``expression``: the canonical text; ``reason``: why it is rejected (None if
    it is kept); ``fingerprint``: the key of its values (equal for one function).
    """
    expression: str
    reason: Optional[str] = None
    fingerprint: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _values(fn, x: torch.Tensor, betas):
    with torch.no_grad():
        out = fn(x, *betas)
    if not isinstance(out, torch.Tensor):  # a constant folded to a number
        out = torch.full_like(x, float(out))
    return out.expand_as(x)


def _key(v: torch.Tensor) -> bytes:
    # ROUND significant digits; -0.0 and 0.0 are one value
    text = ','.join(f'{float(a):.{ROUND - 1}e}' for a in v.tolist())
    return text.replace('-0.00000e+00', '0.00000e+00').encode()


def screen(expr: Union[str, Node]) -> Screened:
    """Screen one candidate (text or tree) on :func:`probe_points`; a name of
    :data:`FUNCTION_OF` (``'ReLU'``) is screened as its function."""
    try:
        node = parse(FUNCTION_OF.get(expr, expr)) if isinstance(expr, str) else expr
        text = canonical(node)
    except GrammarError as e:
        return Screened(str(expr), f'not in the grammar: {e}')
    if not depends_on_x(node):
        return Screened(text, 'does not depend on x')
    fn = compile_expression(node)
    x = probe_points()
    k = num_betas(node)
    draw = torch.Generator().manual_seed(0)
    settings = [[torch.ones((), dtype=torch.float64)] * k,
                [torch.empty((), dtype=torch.float64).uniform_(0.25, 2.0, generator=draw)
                 for _ in range(k)]]
    digest = hashlib.sha1()
    for betas in settings:
        v = _values(fn, x, betas)
        if not bool(torch.isfinite(v).all()):
            bad = x[~torch.isfinite(v)][0].item()
            return Screened(text, f'not finite on the probe (x = {bad:g})')
        if float(v.max() - v.min()) <= 1e-6 * max(1.0, float(v.abs().max())):
            return Screened(text, 'constant on the probe')
        digest.update(_key(v))
    return Screened(text, None, digest.hexdigest()[:16])
