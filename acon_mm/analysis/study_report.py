"""The report of an activation study: ``study.md``, ``study.csv``,
``study.json``, ``study_curves.png`` and ``study_metrics.png`` in the study's
folder (see :func:`acon_mm.analysis.study.run_study`).

Every number is read from the runs' own files (:mod:`.study_logs`), except
parameters and FLOPs, which :func:`acon_mm.analysis.complexity` counts on the
member's model. A number that is not there is reported missing, with the run's
work dir, never filled in.
"""
import csv
import datetime
import json
import os
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

from .study_config import StudyError
from .study_logs import (
    PRIMARY_METRICS,
    metric_label,
    order_metrics,
    read_scalars,
    read_test_result,
    training_cost,
)

__all__ = ['collect_run', 'build_report', 'write_report']

DONE_FILE = 'study_run.json'


def collect_run(run) -> dict:
    """Everything the report needs from one run's work dir (a
    :class:`~acon_mm.analysis.study.StudyRun`)."""
    train, val = read_scalars(run.work_dir)
    test = read_test_result(osp.join(run.work_dir, 'test'))
    done = {}
    if osp.isfile(osp.join(run.work_dir, DONE_FILE)):
        with open(osp.join(run.work_dir, DONE_FILE)) as f:
            done = json.load(f)
    out = dict(member=run.member.name, activation=run.member.activation,
               seed=run.seed, work_dir=run.work_dir, config=run.config_file,
               metrics={}, metrics_source=None, metrics_file=None,
               checkpoint=None, missing_reason=None)
    if test is not None:
        out.update(metrics=test['metrics'], metrics_file=test['file'],
                   metrics_source='tools/test.py',
                   checkpoint=test['checkpoint'] or done.get('checkpoint'))
        if not test['metrics']:  # e.g. an untrained detector: COCO found nothing to score
            out['missing_reason'] = (f'no metrics: tools/test.py reported none in '
                                     f'{test["file"]}')
    elif val:
        last = val[-1]
        ckpt = osp.join(run.work_dir, f'iter_{last["iter"]}.pth')
        out.update(metrics=last['metrics'],
                   metrics_source=f'validation at iteration {last["iter"]} '
                   '(no tools/test.py result)',
                   checkpoint=ckpt if osp.isfile(ckpt) else None)
    else:
        out['missing_reason'] = (
            'no metrics: no finished tools/test.py run in '
            f'{osp.join(run.work_dir, "test")} and no validation in the '
            f'training logs of {run.work_dir}' if osp.isdir(run.work_dir) else
            f'no metrics: the work dir {run.work_dir} does not exist')
    out.update(training_cost(train))
    out['train_curve'] = [[int(r['iter']), float(r['loss'])] for r in train
                          if isinstance(r.get('loss'), (int, float))]
    out['val_curve'] = [[v['iter'], v['metrics']] for v in val]
    return out


def _not_applicable(key: str, value: float) -> bool:
    """COCO's -1: the area range has no ground truth (not a score)."""
    return key.startswith('coco/') and value < 0


def _stats(values: Dict[int, float]) -> dict:
    vals = list(values.values())
    return dict(
        mean=statistics.mean(vals) if vals else None,
        std=statistics.stdev(vals) if len(vals) > 1 else None,
        n=len(vals), values={str(k): v for k, v in values.items()})


def _member_cost(run, shape: Optional[Sequence[int]]) -> dict:
    """Parameters and FLOPs of the run's model on one image (CPU)."""
    from .complexity import config_complexity
    return config_complexity(run.member.cfg, shape)


def build_report(runs, members, work_dir: str, seeds: Sequence[int],
                 iters: Optional[int] = None, data_root: Optional[str] = None,
                 diffs: Optional[dict] = None, baseline: Optional[str] = None,
                 flops_shape: Optional[Sequence[int]] = None,
                 flops: bool = True) -> dict:
    """Collect every run and summarise each member over its seeds.

    Returns:
        dict: ``name``, ``work_dir``, ``metrics`` (keys in report order),
        ``primary``, ``baseline``, ``activations`` (one summary per member:
        per metric ``mean``, ``std``, ``n``, per-seed ``values`` and
        ``delta`` against the baseline; ``params``, ``flops``,
        ``flops_elementwise``, ``flops_input``; ``sec_per_iter``,
        ``peak_memory_mb``; ``checkpoints`` per seed), ``runs`` (what
        :func:`collect_run` read), ``missing`` (``{member, seed, work_dir,
        what}``; ``not_applicable: True`` for COCO's -1, a number that has no
        value rather than a missing one), ``differences`` and ``markdown``.
    """
    results = [collect_run(r) for r in runs]
    keys = order_metrics({k for r in results for k in r['metrics']})
    primary = next((k for k in PRIMARY_METRICS if k in keys),
                   keys[0] if keys else None)
    names = [m.name for m in members]
    if baseline is None:
        baseline = next((m.name for m in members if m.activation == 'ReLU'),
                        None)
    elif baseline not in names:
        raise StudyError(f'--baseline {baseline!r} is not a member: {names}')
    missing, summaries = [], []
    for m in members:
        mine = [r for r in results if r['member'] == m.name]
        s = dict(name=m.name, activation=m.activation, config=m.source,
                 runs=len(mine), metrics={})
        for r in mine:
            if r['missing_reason']:
                missing.append(dict(member=m.name, seed=r['seed'],
                                    work_dir=r['work_dir'],
                                    what=r['missing_reason']))
                continue
            src = r['metrics_file'] or r['metrics_source']
            for k in keys:
                if k not in r['metrics']:
                    missing.append(dict(
                        member=m.name, seed=r['seed'], work_dir=r['work_dir'],
                        what=f'{k} not reported ({src})'))
                elif _not_applicable(k, r['metrics'][k]):
                    missing.append(dict(
                        member=m.name, seed=r['seed'], work_dir=r['work_dir'],
                        what=f'{k} = -1: COCO found no ground-truth box of that '
                        f'size, no score ({src})', not_applicable=True))
        for k in keys:
            s['metrics'][k] = _stats({
                r['seed']: r['metrics'][k] for r in mine if k in r['metrics']
                and not _not_applicable(k, r['metrics'][k])})
        s['sec_per_iter'] = _stats({r['seed']: r['sec_per_iter'] for r in mine
                                    if r['sec_per_iter'] is not None})
        s['peak_memory_mb'] = _stats({r['seed']: r['peak_memory_mb'] for r in mine
                                      if r['peak_memory_mb'] is not None})
        s['checkpoints'] = {str(r['seed']): r['checkpoint'] for r in mine}
        s.update(params=None, flops=None, flops_elementwise=None,
                 flops_input=None, flops_error=None)
        if flops and runs:
            try:
                c = _member_cost(next(r for r in runs if r.member.name == m.name),
                                 flops_shape)
                s.update(params=c['params'], flops=c['flops'],
                         flops_elementwise=c['flops_elementwise'],
                         flops_input=c['input_shape'])
            except Exception as err:  # noqa: BLE001 - reported, not hidden
                s['flops_error'] = f'{type(err).__name__}: {err}'
        summaries.append(s)
    base = next((s for s in summaries if s['name'] == baseline), None)
    for s in summaries:
        for k, st in s['metrics'].items():
            b = base['metrics'][k]['mean'] if base else None
            st['delta'] = (st['mean'] - b if b is not None and st['mean']
                           is not None and s is not base else None)
    report = dict(
        name=osp.basename(osp.normpath(work_dir)), work_dir=work_dir,
        created=datetime.datetime.now().isoformat(timespec='seconds'),
        seeds=list(seeds), iters=iters, data_root=data_root, metrics=keys,
        primary=primary, baseline=baseline, activations=summaries,
        runs=results, missing=missing, differences=diffs or {})
    report['markdown'] = _markdown(report)
    return report


def _fmt(v, digits=None) -> str:
    if v is None:
        return '–'
    if digits is None:
        digits = 3 if abs(v) < 10 else 2
    return f'{v:.{digits}f}'


def _cell(st: dict) -> str:
    if not st['n']:
        return 'missing'
    return _fmt(st['mean']) + (f' ± {_fmt(st["std"])}' if st['std'] is not None
                               else '') + (f' (n={st["n"]})' if st['n'] else '')


def _what_was_run(report) -> str:
    acts = ', '.join(s['activation'] for s in report['activations'])
    sched = (f'{report["iters"]} iterations each (shortened schedule)'
             if report['iters'] else "each config's own schedule")
    return (f'{acts}; seeds {", ".join(map(str, report["seeds"]))}; {sched}'
            + (f'; data {report["data_root"]}' if report['data_root'] else ''))


def _row(cells: Sequence[str]) -> str:
    """One Markdown table row: as many cells as ``cells``."""
    return '| ' + ' | '.join(cells) + ' |'


def _markdown(report) -> str:
    keys, acts = report['metrics'], report['activations']
    labels = [metric_label(k) for k in keys]
    base = report['baseline'] if keys else None
    lines = [f'# Activation study: {report["name"]}', '',
             f'{_what_was_run(report)}. Trained with tools/train.py, tested '
             f'with tools/test.py; folder {report["work_dir"]}; written '
             f'{report["created"]}.', '']
    if keys:
        lines += [_row(['activation', 'config'] + labels),
                  _row(['---', '---'] + ['---:'] * len(keys))]
        for s in acts:
            lines.append(_row([f'{s["activation"]} ({s["name"]})', s['config']]
                              + [_cell(s['metrics'][k]) for k in keys]))
        lines += ['', 'Test metrics of each run\'s final checkpoint, mean ± '
                  'sample std over seeds (n = runs that reported it).', '']
    else:
        lines += [f'**No run reported a metric**: every number of this study is '
                  f'missing ({len(report["missing"])} listed under "Missing" below).', '']
    if base:
        lines += [f'## Δ against {base}', '',
                  '| activation | ' + ' | '.join(f'Δ {lb}' for lb in labels) + ' |',
                  '|---|' + '---:|' * len(keys)]
        for s in acts:
            lines.append(f'| {s["activation"]} | ' + ' | '.join(
                ('(baseline)' if s['name'] == base else
                 ('–' if s['metrics'][k]['delta'] is None else
                  f'{s["metrics"][k]["delta"]:+.3f}')) for k in keys) + ' |')
        lines.append('')
    shapes = {tuple(s['flops_input']) for s in acts if s['flops_input']}
    lines += ['## Cost', '',
              '| activation | params (M) | FLOPs (G) | FLOPs+ew (G) | s/iter '
              '(train) | peak memory (MB) |', '|---|---:|---:|---:|---:|---:|']
    for s in acts:
        mem = s['peak_memory_mb']
        lines.append(
            f'| {s["activation"]} | '
            + (f'{s["params"] / 1e6:.3f} | {s["flops"] / 1e9:.3f} | '
               f'{s["flops_elementwise"] / 1e9:.3f}' if s['params'] is not None
               else f'– | – | – ({s["flops_error"] or "not counted"})')
            + f' | {_cell(s["sec_per_iter"]) if s["sec_per_iter"]["n"] else "–"}'
            f' | {_cell(mem) if mem["n"] else "– (not logged: no CUDA)"} |')
    lines += ['', 'Parameters and FLOPs: acon_mm.analysis.complexity (mmengine\'s '
              'analyzer) on one input of shape '
              + (', '.join('x'.join(map(str, sh)) for sh in sorted(shapes)) or '–')
              + '; FLOPs = multiply-adds as mmengine counts them, FLOPs+ew adds '
              'one per element of every elementwise op. s/iter: mean of the '
              '`time` mmengine logged while training (first logged window left '
              'out). Peak memory: largest logged `memory` (CUDA only).', '',
              '## Runs', '',
              _row(['activation', 'seed'] + labels + ['s/iter', 'checkpoint', 'source']),
              _row(['---', '---:'] + ['---:'] * len(keys) + ['---:', '---', '---'])]
    for r in report['runs']:
        lines.append(_row(
            [r['activation'], str(r['seed'])]
            + [_fmt(r['metrics'][k]) if k in r['metrics'] else 'missing' for k in keys]
            + [_fmt(r['sec_per_iter'], 4), r['checkpoint'] or '–',
               r['metrics_source'] or ('missing' if r['missing_reason'] else '–')]))
    if report['missing']:
        lines += ['', '## Missing', '']
        lines += [f'- {m["member"]} seed {m["seed"]}: {m["what"]} (work dir '
                  f'{m["work_dir"]})' for m in report['missing']]
    if report['differences']:
        lines += ['', '## Config differences besides the activation '
                  '(--allow-differences)', '']
        lines += [f'- `{k}`: ' + ', '.join(f'{n}={v!r}' for n, v in d.items())
                  for k, d in report['differences'].items()]
    return '\n'.join(lines) + '\n'


def _csv_rows(report) -> List[dict]:
    rows = []
    for s in report['activations']:
        row = dict(name=s['name'], activation=s['activation'],
                   config=s['config'], runs=s['runs'])
        for k in report['metrics']:
            st = s['metrics'][k]
            row.update({f'{k}_mean': st['mean'], f'{k}_std': st['std'],
                        f'{k}_n': st['n'], f'{k}_delta': st['delta'],
                        f'{k}_per_seed': ';'.join(
                            f'{sd}:{v}' for sd, v in st['values'].items())})
        row.update(params=s['params'], flops=s['flops'],
                   flops_elementwise=s['flops_elementwise'],
                   flops_input='x'.join(map(str, s['flops_input'] or [])),
                   sec_per_iter_mean=s['sec_per_iter']['mean'],
                   sec_per_iter_std=s['sec_per_iter']['std'],
                   peak_memory_mb=s['peak_memory_mb']['mean'],
                   checkpoints=';'.join(f'{sd}:{c}' for sd, c in
                                        s['checkpoints'].items()))
        rows.append(row)
    return rows


def write_report(report: dict, out_dir: str) -> Dict[str, str]:
    """Write ``study.{md,csv,json}`` and the two PNGs; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: osp.join(out_dir, f'study.{k}') for k in ('md', 'csv', 'json')}
    with open(paths['md'], 'w') as f:
        f.write(report['markdown'])
    rows = _csv_rows(report)
    with open(paths['csv'], 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['name'])
        w.writeheader()
        for r in rows:
            w.writerow({k: '' if v is None else v for k, v in r.items()})
    with open(paths['json'], 'w') as f:
        json.dump({k: v for k, v in report.items() if k != 'markdown'}, f,
                  indent=1)
    from .study_plots import plot_curves, plot_metrics
    paths['curves'] = plot_curves(report, osp.join(out_dir, 'study_curves.png'))
    paths['bars'] = plot_metrics(report, osp.join(out_dir, 'study_metrics.png'))
    return paths
