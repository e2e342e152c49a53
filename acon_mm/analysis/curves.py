r"""The ACON family as curves (``tools/analysis_tools/plot_acon_curves.py``).

Every member of the ACON family is the smooth maximum of two linear units,

.. math::
    f(x) = (p_1 - p_2)\,x\,\sigma\big(\beta (p_1 - p_2) x\big) + p_2 x,

with :math:`p_1 = 1, p_2 = 0` for ACON-A / Swish-beta and :math:`p_1 = 1,
p_2 = p` for ACON-B. matplotlib is imported lazily with the ``Agg`` backend.
"""
import csv
import math
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..ops import acon_naive

__all__ = [
    'DEFAULT_OUT_ROOT', 'acon_curve', 'acon_curve_grad', 'plot_acon_curves'
]

#: Root of every analysis tool's default output directory.
DEFAULT_OUT_ROOT = osp.join('work_dirs', 'analysis')


def get_pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------------------
# the ACON family as curves
# ---------------------------------------------------------------------------
def acon_curve(x: np.ndarray, p1: float = 1.0, p2: float = 0.0,
               beta: float = 1.0) -> np.ndarray:
    r"""ACON :math:`f(x) = (p_1-p_2)x\sigma(\beta(p_1-p_2)x) + p_2 x` (float64).

    ``beta=math.inf`` gives the limit :math:`\max(p_1 x, p_2 x)`.
    """
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(beta):
        return np.maximum(p1 * x, p2 * x)
    # the project's functional op, so the curves are what the layers compute
    t = torch.from_numpy(x)
    out = acon_naive(t, torch.tensor(p1, dtype=torch.float64),
                     torch.tensor(p2, dtype=torch.float64),
                     torch.tensor(beta, dtype=torch.float64))
    return out.numpy()


def acon_curve_grad(x: np.ndarray, p1: float = 1.0, p2: float = 0.0,
                    beta: float = 1.0) -> np.ndarray:
    r"""First derivative :math:`df/dx`, by autograd through the project's op.

    Closed form: :math:`d\sigma(\beta d x) + \beta d^2 x \sigma(\beta d x)
    (1 - \sigma(\beta d x)) + p_2` with :math:`d = p_1 - p_2`; for
    ``beta=inf`` the derivative of the maximum (``p1`` where ``p1 x > p2 x``).
    """
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(beta):
        return np.where(p1 * x >= p2 * x, p1, p2).astype(np.float64)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = acon_naive(t, torch.tensor(p1, dtype=torch.float64),
                     torch.tensor(p2, dtype=torch.float64),
                     torch.tensor(beta, dtype=torch.float64))
    (grad, ) = torch.autograd.grad(out.sum(), t)
    return grad.numpy()


#: The panels of the curve figure: (title, family, [(label, p1, p2, beta)]).
def _curve_panels(betas: Sequence[float]) -> List[Tuple[str, str, list]]:
    def b(v):
        return '∞' if math.isinf(v) else f'{v:g}'

    p = 0.25
    p1, p2 = 1.2, -0.8
    return [
        ('ACON-A  max(x, 0)', 'ACON-A',
         [(f'β={b(v)}', 1.0, 0.0, v) for v in betas]),
        (f'ACON-B  max(x, px), p={p:g}', 'ACON-B',
         [(f'β={b(v)}', 1.0, p, v) for v in betas]),
        (f'ACON-C  max(p1x, p2x), p1={p1:g}, p2={p2:g}', 'ACON-C',
         [(f'β={b(v)}', p1, p2, v) for v in betas]),
        ('ACON-C  β=1, learned bounds (p1≈p2: linear)', 'ACON-C',
         [(f'p1={a:g}, p2={c:g}', a, c, 1.0)
          for a, c in ((1.0, 0.0), (1.2, -0.8), (1.5, 0.5), (0.5, -0.5),
                       (0.8, 0.6))]),
    ]


def plot_acon_curves(out_dir: str, betas: Sequence[float] = (0.0, 0.5, 1.0, 2.0,
                                                             10.0, math.inf),
                     x_range: Tuple[float, float] = (-6.0, 6.0),
                     num_points: int = 601, dpi: int = 120) -> Dict[str, str]:
    """Draw ACON-A/B/C at several beta, p1, p2 and their first derivatives.

    Writes ``acon_curves.png`` (top row: f(x); bottom row: df/dx; dashed lines
    on ACON-C's derivative mark the bounds learned by p1 and p2) and
    ``acon_curves.csv`` (one row per x and curve: ``panel, family, label, p1,
    p2, beta, x, f, df``) to ``out_dir``.

    Returns:
        dict: ``{'png': path, 'csv': path}``.
    """
    plt = get_pyplot()
    os.makedirs(out_dir, exist_ok=True)
    x = np.linspace(x_range[0], x_range[1], num_points)
    panels = _curve_panels(betas)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 8.2))
    rows = []
    for col, (title, family, curves) in enumerate(panels):
        ax_f, ax_d = axes[0, col], axes[1, col]
        for label, p1, p2, beta in curves:
            f = acon_curve(x, p1, p2, beta)
            df = acon_curve_grad(x, p1, p2, beta)
            style = dict(ls='--', color='k', lw=1.0) if math.isinf(beta) else {}
            ax_f.plot(x, f, label=label, **style)
            ax_d.plot(x, df, label=label, **style)
            for xi, fi, di in zip(x, f, df):
                rows.append((col, family, label, p1, p2, beta, xi, fi, di))
        if family == 'ACON-C' and col == 2:
            _, p1, p2, _ = curves[0]
            # bounds of the derivative for beta > 0 (Ma et al., Sec. 3.2)
            for bound in (1.0998 * p1 - 0.0998 * p2, 1.0998 * p2 - 0.0998 * p1):
                ax_d.axhline(bound, color='grey', ls=':', lw=1)
        ax_f.set_title(title, fontsize=10)
        ax_d.set_title('first derivative', fontsize=10)
        for ax in (ax_f, ax_d):
            ax.axhline(0, color='grey', lw=0.5)
            ax.axvline(0, color='grey', lw=0.5)
            ax.grid(alpha=0.3)
            ax.set_xlabel('x')
        ax_f.set_ylabel('f(x)')
        ax_d.set_ylabel("f'(x)")
        ax_f.legend(fontsize=8, loc='upper left')
    fig.suptitle('The ACON family: f(x) = (p1−p2)·x·σ(β(p1−p2)x) + p2·x  '
                 '(β→0: linear, β→∞: max)', fontsize=12)
    fig.tight_layout()
    png = osp.join(out_dir, 'acon_curves.png')
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    csv_path = osp.join(out_dir, 'acon_curves.csv')
    with open(csv_path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['panel', 'family', 'label', 'p1', 'p2', 'beta', 'x', 'f', 'df'])
        for r in rows:
            w.writerow([r[0], r[1], r[2], repr(r[3]), repr(r[4]),
                        'inf' if math.isinf(r[5]) else repr(r[5]),
                        repr(float(r[6])), repr(float(r[7])), repr(float(r[8]))])
    return dict(png=png, csv=csv_path)
