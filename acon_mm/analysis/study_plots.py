"""The pictures of an activation study (matplotlib, Agg, imported lazily):
``study_curves.png`` (training loss and the validation metric against
iteration, one curve per activation, shaded over seeds) and
``study_metrics.png`` (the test metrics as bars with error bars)."""
from typing import Dict, List, Tuple

import numpy as np

from .curves import get_pyplot
from .study_logs import metric_label

__all__ = ['plot_curves', 'plot_metrics', 'seed_band']


def seed_band(curves: List[List[Tuple[int, float]]]):
    """Mean, min and max over seeds at the iterations every seed logged.

    Returns:
        tuple: ``(iters, mean, low, high)`` arrays (empty if no common
        iteration).
    """
    if not curves:
        return (np.array([]), ) * 4
    common = set.intersection(*[{int(i) for i, _ in c} for c in curves])
    its = np.array(sorted(common))
    if not len(its):
        return (np.array([]), ) * 4
    vals = np.array([[dict((int(i), v) for i, v in c)[i] for i in its]
                     for c in curves], dtype=float)
    return its, vals.mean(0), vals.min(0), vals.max(0)


def _title(report) -> str:
    acts = ' vs '.join(s['activation'] for s in report['activations'])
    n = len(report['seeds'])
    sched = (f'{report["iters"]} iterations' if report['iters'] else
             "the configs' schedule")
    return f'{report["name"]}: {acts} ({n} seed{"s" * (n > 1)}, {sched})'


def plot_curves(report: dict, path: str, dpi: int = 110) -> str:
    """Training loss and validation ``report['primary']`` against iteration."""
    plt = get_pyplot()
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(13, 4.8))
    primary = report['primary']
    for i, s in enumerate(report['activations']):
        runs = [r for r in report['runs'] if r['member'] == s['name']]
        color = f'C{i}'
        label = f'{s["activation"]} ({len(runs)} run{"s" * (len(runs) > 1)})'
        its, mean, lo, hi = seed_band([r['train_curve'] for r in runs
                                       if r['train_curve']])
        if len(its):
            ax_l.plot(its, mean, color=color, label=label)
            if len(runs) > 1:
                ax_l.fill_between(its, lo, hi, color=color, alpha=0.2)
        val = [[(i, m[primary]) for i, m in r['val_curve'] if primary in m]
               for r in runs]
        its, mean, lo, hi = seed_band([v for v in val if v])
        if len(its):
            ax_v.plot(its, mean, color=color, marker='o', label=label)
            if len(runs) > 1:
                ax_v.fill_between(its, lo, hi, color=color, alpha=0.2)
    ax_l.set(title='training loss (mean over seeds, shaded: min–max)',
             xlabel='iteration', ylabel='loss (total)')
    ax_v.set(title=f'validation {primary} during training',
             xlabel='iteration', ylabel=primary or 'metric')
    for ax in (ax_l, ax_v):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, 'nothing logged', ha='center',
                    transform=ax.transAxes)
    fig.suptitle(_title(report), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_metrics(report: dict, path: str, dpi: int = 110) -> str:
    """The test metrics per activation: bar = mean over seeds, error bar =
    sample std (none for one seed)."""
    plt = get_pyplot()
    keys = [k for k in report['metrics']
            if any(s['metrics'][k]['n'] for s in report['activations'])]
    acts = report['activations']
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(keys) * max(1, len(acts)) / 2
                                        + 2), 4.8))
    width = 0.8 / max(1, len(acts))
    x = np.arange(len(keys))
    for i, s in enumerate(acts):
        st: Dict[str, dict] = s['metrics']
        mean = [st[k]['mean'] if st[k]['mean'] is not None else np.nan
                for k in keys]
        err = [st[k]['std'] or 0.0 for k in keys]
        ax.bar(x + (i - (len(acts) - 1) / 2) * width, mean, width, yerr=err,
               capsize=3, color=f'C{i}', label=s['activation'])
    ax.set_xticks(x)
    ax.set_xticklabels([metric_label(k) for k in keys])
    ax.set(xlabel='metric (test set, final checkpoint)',
           ylabel='value (mean ± std over seeds)',
           title=_title(report))
    ax.grid(axis='y', alpha=0.3)
    if acts and keys:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, 'no metrics', ha='center', transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
