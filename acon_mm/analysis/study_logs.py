"""What one run of an activation study left in its work dir, read back.

A run is ``tools/train.py`` into ``<run>/`` followed by ``tools/test.py``
into ``<run>/test/`` (see :mod:`acon_mm.analysis.study`). mmengine writes, per
start of a tool, a timestamp folder ``<work_dir>/YYYYmmdd_HHMMSS/`` with

* ``vis_data/scalars.json``: one JSON object per line. Training lines carry
  ``loss``, ``lr``, ``time`` (seconds per iteration, averaged over the
  logger's window), ``data_time``, ``iter`` (global, 1-based), ``step`` and,
  on CUDA only, ``memory`` (peak MB allocated). Validation lines carry the
  evaluator's metrics and ``step`` (the iteration, or the epoch when the
  logger hook's ``log_metric_by_epoch`` is on).
* ``<timestamp>.json`` (test only): the evaluator's metrics of the test run.
* ``<timestamp>.log``: the text log; ``tools/test.py`` writes
  ``acon-mm: <task> metrics of <checkpoint>: {...}`` there.

Nothing here fills in a missing number: a value that is not in the logs is
returned as ``None`` (or left out of the metric dict).
"""
import glob
import json
import math
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

__all__ = [
    'METRIC_ORDER', 'PRIMARY_METRICS', 'is_metric_key', 'metric_label',
    'order_metrics',
    'log_dirs', 'read_scalars', 'read_test_result', 'training_cost'
]

#: Metric keys in report order: COCO bbox (mmdet), Cityscapes (mmseg),
#: ImageNet (mmpretrain). Other numeric evaluator keys follow, sorted.
METRIC_ORDER = [
    'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s',
    'coco/bbox_mAP_m', 'coco/bbox_mAP_l', 'mIoU', 'mAcc', 'aAcc',
    'accuracy/top1', 'accuracy/top5'
]
#: The headline metric of a task: the first of these the evaluator reports.
PRIMARY_METRICS = ('coco/bbox_mAP', 'mIoU', 'accuracy/top1')

_NOT_METRICS = {
    'time', 'data_time', 'step', 'iter', 'epoch', 'lr', 'base_lr', 'memory',
    'eta', 'grad_norm'
}
_TS_RE = re.compile(r'^\d{8}_\d{6}$')
_TEST_LINE_RE = re.compile(r'acon-mm: \w+ metrics of (.+?): (\{.*\})\s*$')


def is_metric_key(key: str) -> bool:
    """Whether a scalar logged by mmengine is an evaluator metric."""
    return (key not in _NOT_METRICS and 'loss' not in key
            and not key.endswith('lr') and not key.endswith('time'))


def order_metrics(keys) -> List[str]:
    """``keys`` in :data:`METRIC_ORDER`, then the others sorted."""
    keys = set(keys)
    return [k for k in METRIC_ORDER if k in keys] + sorted(
        keys - set(METRIC_ORDER))


def metric_label(key: str) -> str:
    """Short column name: ``coco/bbox_mAP_50`` -> ``mAP_50``,
    ``coco/bbox_mAP`` -> ``bbox_mAP``, ``accuracy/top1`` -> ``top1``."""
    last = key.split('/')[-1]
    return last[len('bbox_'):] if last.startswith('bbox_mAP_') else last


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) \
        and math.isfinite(v)


def log_dirs(work_dir: str) -> List[str]:
    """mmengine's timestamp folders of ``work_dir``, oldest first."""
    found = [p for p in glob.glob(osp.join(work_dir, '*'))
             if osp.isdir(p) and _TS_RE.match(osp.basename(p))]
    return sorted(found, key=osp.basename)


def _json_lines(path: str) -> List[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    return out


def read_scalars(work_dir: str) -> Tuple[List[dict], List[dict]]:
    """Training and validation records of every start of training in ``work_dir``.

    Returns:
        tuple: ``(train, val)``. ``train``: the training lines, one per
        logged iteration (``iter``), sorted; when a resumed run logged an
        iteration again the later start wins. ``val``: ``{'iter': int,
        'metrics': {key: value}}`` per validation, sorted by ``iter``. A
        validation is placed at ``max(step, iteration of the last training
        line before it)``, which is exact for ``log_metric_by_epoch=False``
        and for epoch-based loops (validation follows an epoch's last line).
    """
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for d in log_dirs(work_dir):
        path = osp.join(d, 'vis_data', 'scalars.json')
        if not osp.isfile(path):
            continue
        last_iter = 0
        for rec in _json_lines(path):
            if 'iter' in rec and ('loss' in rec or 'lr' in rec):
                last_iter = int(rec['iter'])
                train[last_iter] = rec
                continue
            metrics = {k: v for k, v in rec.items()
                       if is_metric_key(k) and _finite_number(v)}
            if metrics:
                it = max(int(rec.get('step', 0)), last_iter)
                val[it] = dict(iter=it, metrics=metrics)
    return ([train[k] for k in sorted(train)], [val[k] for k in sorted(val)])


def read_test_result(test_dir: str) -> Optional[dict]:
    """The metrics of the last finished ``tools/test.py`` run in ``test_dir``.

    Returns:
        dict | None: ``{'metrics': {key: float}, 'checkpoint': str | None,
        'file': the JSON the metrics came from}``, or None if no test run
        in ``test_dir`` got as far as writing its metrics.
    """
    for d in reversed(log_dirs(test_dir)):
        ts = osp.basename(d)
        path = osp.join(d, f'{ts}.json')
        if not osp.isfile(path):
            continue
        try:
            with open(path) as f:
                rec = json.load(f)
        except json.JSONDecodeError:
            recs = _json_lines(path)
            rec = recs[-1] if recs else {}
        metrics = {k: float(v) for k, v in rec.items()
                   if is_metric_key(k) and _finite_number(v)}
        checkpoint = None
        log = osp.join(d, f'{ts}.log')
        if osp.isfile(log):
            with open(log, errors='replace') as f:
                for line in f:
                    m = _TEST_LINE_RE.search(line)
                    if m:
                        checkpoint = m.group(1)
        return dict(metrics=metrics, checkpoint=checkpoint, file=path)
    return None


def training_cost(train: List[dict]) -> dict:
    """Seconds per iteration and peak memory from the training lines.

    ``sec_per_iter``: the mean of the logged ``time`` values (each already the
    mean over the logger's window); the first logged window, which holds the
    start-up (data loader, cudnn autotuning), is left out when there are more.
    ``peak_memory_mb``: the largest logged ``memory`` (mmengine logs it on
    CUDA only; None on a CPU run).
    """
    times = [float(r['time']) for r in train if _finite_number(r.get('time'))]
    if len(times) > 1:
        times = times[1:]
    mems = [float(r['memory']) for r in train
            if _finite_number(r.get('memory'))]
    return dict(
        sec_per_iter=sum(times) / len(times) if times else None,
        peak_memory_mb=max(mems) if mems else None,
        time_values=len(times))
