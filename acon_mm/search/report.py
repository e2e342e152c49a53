"""The report of an activation search (:func:`~acon_mm.search.runner.run_activation_search`):
``search.md``, ``search.csv`` (one row per proposal), ``search.json`` (all of it),
``search_shapes.png`` (the top functions and the references on [−6, 6], betas at
their initial 1: the paper's Figure 3) and ``search_curves.png`` (best reward
against functions evaluated, per strategy, the references as lines).

Every number is read from the search state, which holds what the children's
own test results gave.
"""
import csv
import json
import os.path as osp
import statistics
from typing import Dict, List

__all__ = ['leaderboard', 'top_functions', 'write_search_report']


def _std(values: List[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def leaderboard(state: dict) -> List[dict]:
    """Every function trained, best first: ``expression``, ``reward``, ``std``,
    ``rewards`` per seed, ``status``, ``found_by`` ({strategy: first step}),
    ``reference`` (True for a control), ``same_as`` (the expression of the
    reference or earlier find that is the same function on the probe, whose
    reward it got without training; None for a function trained itself)."""
    from .screen import screen
    rows: Dict[str, dict] = {}
    owner: Dict[str, str] = {}  # fingerprint -> the first expression with it
    for ref in state['references'] or []:
        fp = screen(ref['activation']).fingerprint
        rows[ref['activation']] = dict(
            expression=ref['activation'], reward=ref['reward'], rewards=ref['rewards'],
            std=_std(ref['rewards']), status='diverged' if ref['reason'] else 'evaluated',
            reason=ref['reason'], found_by={}, reference=True, same_as=None)
        if fp:
            owner.setdefault(fp, ref['activation'])
    for name, records in state['progress'].items():
        for r in records:
            if not r['evaluations']:
                continue
            row = rows.get(r['expression'])
            if row is None:
                child = state['children'].get(r['fingerprint'], {})
                rewards = child.get('rewards', [])
                row = rows[r['expression']] = dict(
                    expression=r['expression'], reward=r['reward'], rewards=rewards,
                    std=_std(rewards), status=r['status'], reason=r['reason'],
                    found_by={}, reference=False, same_as=None)
                first = owner.setdefault(r['fingerprint'], r['expression'])
                if first != r['expression']:
                    row['same_as'] = first
            row['found_by'].setdefault(name, r['step'])
    board = sorted(rows.values(), key=lambda d: -d['reward'])
    for rank, row in enumerate(board, 1):
        row['rank'] = rank
    return board


def _counts(records: List[dict]) -> dict:
    out = dict(proposals=len(records), evaluated=0, duplicate=0, rejected=0, diverged=0)
    for r in records:
        out[r['status']] += 1
    out['best'] = max((r['reward'] for r in records), default=None)
    return out


def _save_figure(fig, path: str) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plots(state: dict, board: List[dict], work_dir: str, top: int = 6) -> Dict[str, str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch

    from ..models.layers.expression import compile_expression, num_betas, parse
    paths = {}
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    shown = [b for b in board if not b['reference']][:top]
    refs = [b for b in board if b['reference']]
    for b in shown + refs:
        expr = 'max(x, 0)' if b['expression'] == 'ReLU' else b['expression']
        try:
            n = parse(expr)
        except Exception:  # noqa: BLE001 - a registered type, not an expression
            continue
        with torch.no_grad():
            y = compile_expression(n)(x, *[torch.ones((), dtype=torch.float64)] * num_betas(n))
        y = torch.as_tensor(y, dtype=torch.float64).expand_as(x).clamp(-10, 10)
        ax.plot(x, y, '--' if b['reference'] else '-',
                label=f'{b["expression"]} ({b["reward"]:.3g})')
    ax.set(xlabel='x', ylabel='f(x) (betas = 1)', ylim=(-6, 8),
           title='top functions and the references')
    ax.legend(fontsize=6)
    paths['shapes'] = _save_figure(fig, osp.join(work_dir, 'search_shapes.png'))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, records in state['progress'].items():
        xs, ys, n, best = [], [], 0, 0.0
        for r in records:
            n += r['evaluations']
            best = max(best, r['reward'])
            if r['evaluations']:
                xs.append(n)
                ys.append(best)
        ax.step(xs, ys, where='post', label=name)
    for b in refs:
        ax.axhline(b['reward'], ls=':', lw=1, color='gray')
        ax.annotate(b['expression'], (0, b['reward']), fontsize=6)
    ax.set(xlabel='functions evaluated', ylabel='best reward so far',
           title='strategies at equal budget')
    ax.legend(fontsize=7)
    paths['curves'] = _save_figure(fig, osp.join(work_dir, 'search_curves.png'))
    return paths


def _cell(row: dict) -> str:
    if row['status'] == 'diverged':
        return 'diverged (0)'
    spread = f' ± {row["std"]:.2f}' if len(row['rewards']) > 1 else ''
    same = f' (= `{row["same_as"]}`, not trained again)' if row.get('same_as') else ''
    return f'{row["reward"]:.2f}{spread}{same}'


def top_functions(board: List[dict], k: int) -> List[str]:
    """The ``k`` best functions the search found: trained, not a reference and
    not the same function as a reference or a better find."""
    return [b['expression'] for b in board if not b['reference']
            and b['status'] == 'evaluated' and not b.get('same_as')][:k]


def write_search_report(state: dict, work_dir: str, transfer: dict = None) -> Dict[str, str]:
    """Write the report files into ``work_dir``; returns their paths."""
    board = leaderboard(state)
    st = state['settings']
    counts = {n: _counts(r) for n, r in state['progress'].items()}
    lines = [f'# Activation search: {st["config"]}', '',
             f'Strategies {", ".join(st["strategies"])} at a budget of {st["budget"]} '
             f'functions each, batch {st["batch_size"]}, child seeds {st["seeds"]}, '
             f'search seed {st["search_seed"]}; child schedule: '
             f'{st["trainer"].get("iters") or "the config"} iterations. Reward: the '
             f'child\'s test {st["trainer"].get("metric") or "primary metric"} '
             '(mean over seeds). References (dashed) trained in the same run.', '',
             '## Strategies', '',
             '| strategy | proposals | evaluated | duplicates | rejected | diverged | best |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for n, c in counts.items():
        best = '–' if c['best'] is None else f'{c["best"]:.2f}'
        lines.append(f'| {n} | {c["proposals"]} | {c["evaluated"]} | {c["duplicate"]} | '
                     f'{c["rejected"]} | {c["diverged"]} | {best} |')
    lines += ['', '## Leaderboard', '',
              '| rank | activation | reward | found by (proposal #) |',
              '| ---: | --- | ---: | --- |']
    for b in board:
        by = 'reference' if b['reference'] else ', '.join(
            f'{k} ({v})' for k, v in b['found_by'].items())
        lines.append(f'| {b["rank"]} | `{b["expression"]}` | {_cell(b)} | {by} |')
    paths = _plots(state, board, work_dir)
    lines += ['', '![shapes](search_shapes.png)', '', '![curves](search_curves.png)']
    if transfer:
        lines += ['', '## Transfer', '', f'The top functions trained with '
                  f'`{transfer["config"]}` by the study ({transfer["study_md"]}):', '',
                  transfer['table']]
    paths['md'] = osp.join(work_dir, 'search.md')
    with open(paths['md'], 'w') as f:
        f.write('\n'.join(lines) + '\n')
    paths['csv'] = osp.join(work_dir, 'search.csv')
    with open(paths['csv'], 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['strategy', 'step', 'expression', 'status', 'reward', 'reason',
                    'duplicate_of', 'evaluated_so_far'])
        for n, records in state['progress'].items():
            total = 0
            for r in records:
                total += r['evaluations']
                w.writerow([n, r['step'], r['expression'], r['status'], r['reward'],
                            r['reason'] or '', r['duplicate_of'] or '', total])
    paths['json'] = osp.join(work_dir, 'search.json')
    with open(paths['json'], 'w') as f:
        json.dump(dict(settings=st, strategies=counts, leaderboard=board,
                       references=state['references'], progress=state['progress'],
                       transfer=transfer), f, indent=1, default=str)
    return paths
