"""The activation search as a study whose members are proposed as it goes
(``tools/activation_search.py``; docs/search.md).

Each candidate the strategies propose and the screen keeps is a member of the
child config (``acon_cfg`` replaced by a ``SearchedActivation`` of it, as the
study's ``--activations`` does), planned, trained and tested by the study's own
machinery (:func:`~acon_mm.analysis.study.plan_runs`, ``tools/train.py`` and
``tools/test.py``, ``jobs`` at a time on the CPU) in ``<work_dir>/children/``.
Its reward is the child's test metric (top-1 by default), averaged over seeds.

The reference activations (:data:`REFERENCES`: ReLU, x·σ(βx), max(x, σ(x))) are
trained first, in the same run, as controls. The strategies take turns, one batch
each; a function any strategy (or a reference) trained is not trained again, but
counts against the budget of each strategy that proposes it (equal budgets stay
equal).

A child's training gets :class:`~acon_mm.engine.hooks.NonFiniteLossHook`: a loss
that turns NaN or Inf stops it, and the candidate is recorded as diverged with
reward 0 and the hook's message. Any other failure stops the search (resumable).

The search state (``search_state.pth``: each strategy's state — the controller's
weights, optimiser and sampling generator, the random generator —, every record
and every child outcome) is written after each batch, atomically. ``resume``
reloads it: the batch in flight is proposed again identically, and its children
that finished are found finished on disk, so no finished child is trained again.
"""
import copy
import os
import os.path as osp
import statistics
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.config import ConfigDict

from ..analysis.study import (
    REPO_ROOT,
    StudyError,
    _check_config,
    _commands,
    _execute,
    _train_and_test,
    plan_runs,
    run_state,
)
from ..analysis.study_config import check_members, load_members
from ..analysis.study_logs import PRIMARY_METRICS
from ..analysis.study_report import collect_run
from .screen import Screened, screen
from .space import SearchSpace
from .strategies import Progress, Record, build_strategy, search_step

__all__ = ['REFERENCES', 'STATE_FILE', 'ChildTrainer', 'run_activation_search']

#: the controls trained in every search (the paper's ReLU and its two best finds)
REFERENCES = ('ReLU', 'x*sigmoid(beta*x)', 'max(x, sigmoid(x))')
STATE_FILE = 'search_state.pth'
DIVERGED_FILE = 'search_diverged.json'


class ChildTrainer:
    """Trains children of ``config`` with given activations through the study
    machinery and returns their rewards.

    Args:
        config (str): the child config.
        work_dir (str): the children's folder (one run folder per member and seed).
        seeds (Sequence[int]): each child is trained once per seed.
        metric (str, optional): the test metric rewarded (default the study's
            primary one: bbox mAP, mIoU or top-1, whichever the child reports).
        iters, val_interval: a shortened child schedule (the study's).
        gpus, cpu, data_root, jobs, cfg_options, activation_key, tools_dir,
        execute, log: as :func:`~acon_mm.analysis.study.run_study`.
    """

    def __init__(self, config: str, work_dir: str, seeds: Sequence[int] = (0, ),
                 metric: Optional[str] = None, iters: Optional[int] = None,
                 val_interval: Optional[int] = None, gpus: int = 1, cpu: bool = False,
                 data_root: Optional[str] = None, jobs: int = 1,
                 cfg_options: Optional[dict] = None,
                 activation_key: str = 'model.backbone.acon_cfg',
                 tools_dir: Optional[str] = None,
                 execute: Callable = _execute, log: Callable[[str], None] = print):
        if jobs < 1:
            raise StudyError(f'--jobs must be >= 1, got {jobs}')
        if jobs > 1 and not cpu:
            raise StudyError(f'--jobs {jobs} trains several children at once on '
                             'the CPU: pass --cpu')
        if data_root and not osp.isdir(data_root):
            raise StudyError(f'--data-root {data_root!r} is not a directory')
        if jobs > 1 and execute is _execute:
            execute = partial(_execute, threads=max(1, (os.cpu_count() or 1) // jobs))
        self.config, self.work_dir, self.seeds = config, work_dir, list(seeds)
        self.metric, self.iters, self.val_interval = metric, iters, val_interval
        self.gpus, self.cpu, self.data_root, self.jobs = gpus, cpu, data_root, jobs
        self.cfg_options, self.activation_key = cfg_options, activation_key
        self.tools_dir = tools_dir or osp.join(REPO_ROOT, 'tools')
        self.execute, self.log = execute, log

    def members(self, activations: Sequence[str], check: bool = False):
        """The children's members, each stopped by a non-finite loss."""
        members = load_members([self.config], list(activations), self.activation_key,
                               self.cfg_options)
        for m in members:
            hooks = list(m.cfg.get('custom_hooks') or [])
            if not any(h.get('type') == 'NonFiniteLossHook' for h in hooks):
                hooks.append(ConfigDict(type='NonFiniteLossHook', action='stop'))
            m.cfg.custom_hooks = hooks
        if check:
            check_members(members)
        return members

    def _one(self, run, head: str) -> Optional[str]:
        """Train and test one run unless done; the divergence message, or None."""
        marker = osp.join(run.work_dir, DIVERGED_FILE)
        if osp.isfile(marker):
            with open(marker) as f:
                return f.read().strip()
        state = run_state(run)
        if state == 'done':
            self.log(f'{head}: finished before, reused')
            return None
        if osp.isdir(run.work_dir) and os.listdir(run.work_dir):
            _check_config(run)
        train, test = _commands(run, self.gpus, self.data_root, self.cpu,
                                state == 'resume', self.tools_dir)
        try:
            _train_and_test(head, run, state, train, test, self.execute, self.log)
        except StudyError as err:
            log_file = osp.join(run.work_dir, 'study_train.out')
            text = open(log_file, errors='replace').read() if osp.isfile(log_file) else ''
            lines = [ln for ln in text.splitlines() if 'non-finite loss at' in ln]
            if not lines:
                raise err
            msg = lines[-1][lines[-1].index('non-finite loss at'):]
            with open(marker, 'w') as f:
                f.write(msg + '\n')
            self.log(f'{head}: diverged ({msg})')
            return msg
        return None

    def evaluate(self, activations: Sequence[str]) -> List[dict]:
        """Train every activation's children (``jobs`` at a time); one outcome
        each: ``reward`` (mean over seeds; 0 if diverged), ``rewards`` per seed,
        ``reason`` (None, or why it diverged), ``runs`` (their folders)."""
        if not activations:
            return []
        members = self.members(activations)
        runs = plan_runs(members, self.seeds, self.work_dir, self.iters,
                         self.val_interval)
        heads = [f'[child {i}/{len(runs)}] {r.name}' for i, r in enumerate(runs, 1)]
        if self.jobs == 1:
            reasons = [self._one(r, h) for r, h in zip(runs, heads)]
        else:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = [pool.submit(self._one, r, h) for r, h in zip(runs, heads)]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]
            reasons = [f.result() for f in futures]
        out = []
        per = len(self.seeds)
        for i, m in enumerate(members):
            chunk = runs[i * per:(i + 1) * per]
            why = [r for r in reasons[i * per:(i + 1) * per] if r]
            values = [] if why else [self._metric_of(r) for r in chunk]
            out.append(dict(activation=m.activation, member=m.name,
                            reward=statistics.mean(values) if values else 0.0,
                            rewards=values, reason=why[0] if why else None,
                            runs=[r.work_dir for r in chunk]))
        return out

    def _metric_of(self, run) -> float:
        metrics = collect_run(run)['metrics']
        key = self.metric or next((k for k in PRIMARY_METRICS if k in metrics), None)
        if key not in metrics:
            raise StudyError(f'{run.work_dir}: the child reported no {key or "metric"} '
                             f'to reward (it reported {sorted(metrics)}); pass --metric')
        return float(metrics[key])


def _save(state: dict, path: str) -> None:
    tmp = path + '.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written state


def _settings_differences(old: dict, new: dict) -> List[str]:
    keys = sorted(set(old) | set(new))
    return [f'{k}: {old.get(k)!r} before, {new.get(k)!r} now' for k in keys
            if old.get(k) != new.get(k)]


def run_activation_search(config: str, work_dir: str,
                          strategies: Sequence[str] = ('controller', 'random'),
                          budget: int = 8, batch_size: int = 4,
                          seeds: Sequence[int] = (0, ), search_seed: int = 0,
                          num_units: Optional[int] = None,
                          unary: Optional[Sequence[str]] = None,
                          binary: Optional[Sequence[str]] = None,
                          references: Sequence[str] = REFERENCES,
                          resume: bool = False, trainer_kwargs: Optional[dict] = None,
                          log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a search; returns its state (see the module docstring).

    Args:
        config (str): the child config.
        work_dir (str): the search's folder.
        strategies (list[str]): ``exhaustive`` (one core unit), ``random``,
            ``controller``; each gets ``budget`` evaluated functions.
        batch_size (int): proposals per step (one PPO update each).
        seeds (list[int]): the children's training seeds.
        search_seed (int): seeds the strategies.
        num_units (int, optional): core units (default 1 for ``exhaustive``, else 2).
        unary, binary (list[str], optional): ``exhaustive``'s subset.
        references (list[str]): the controls trained first.
        resume (bool): continue the search in ``work_dir``.
        trainer_kwargs (dict): :class:`ChildTrainer`'s other arguments.
    """
    if budget < 1 or batch_size < 1:
        raise StudyError(f'--budget and --batch-size must be >= 1, got {budget}, {batch_size}')
    settings = dict(config=config, strategies=list(strategies), budget=budget,
                    batch_size=batch_size, seeds=list(seeds), search_seed=search_seed,
                    num_units=num_units, unary=list(unary or []), binary=list(binary or []),
                    references=list(references),
                    trainer={k: (trainer_kwargs or {}).get(k, default) for k, default in (
                        ('metric', None), ('iters', None), ('val_interval', None),
                        ('cfg_options', None), ('activation_key', 'model.backbone.acon_cfg'))})
    trainer = ChildTrainer(config, osp.join(work_dir, 'children'), seeds, log=log,
                           **(trainer_kwargs or {}))
    spaces, strats = {}, {}
    for name in strategies:
        units = num_units or (1 if name == 'exhaustive' else 2)
        spaces[name] = SearchSpace(units)
        extra = dict(unary=unary, binary=binary) if name == 'exhaustive' else {}
        try:
            strats[name] = build_strategy(name, spaces[name], seed=search_seed, **extra)
        except ValueError as err:
            raise StudyError(f'--strategies: {err}') from None
    path = osp.join(work_dir, STATE_FILE)
    if osp.isfile(path) and not resume:
        raise StudyError(f'{work_dir} holds a search ({path}); pass --resume to '
                         'continue it, or choose another --work-dir')
    if resume and osp.isfile(path):
        state = torch.load(path, weights_only=False)
        diff = _settings_differences(state['settings'], settings)
        if diff:
            raise StudyError(f'{path} was started with other settings; resume with '
                             'the same ones, or use another --work-dir:\n  '
                             + '\n  '.join(diff))
        for name, s in strats.items():
            s.load_state(state['strategies'][name])
        log(f'search {work_dir}: resumed at ' + ', '.join(
            f'{n} {len(state["progress"][n])} proposals' for n in strategies))
    else:
        trainer.members(list(references) or ['max(x, sigmoid(x))'], check=True)
        os.makedirs(work_dir, exist_ok=True)
        state = dict(version=1, settings=settings, references=None, children={},
                     strategies={n: s.state() for n, s in strats.items()},
                     progress={n: [] for n in strategies}, steps={n: 0 for n in strategies})
    children: Dict[str, dict] = state['children']  # fingerprint -> outcome
    if state['references'] is None:
        log(f'search {work_dir}: training the references ' + ', '.join(references))
        outcomes = trainer.evaluate(list(references))
        for ref, outcome in zip(references, outcomes):
            s = screen(ref)
            if s.ok:
                children.setdefault(s.fingerprint, outcome)
        state['references'] = outcomes
        _save(state, path)

    def evaluate_many(new: List[Screened]):
        todo = [s for s in new if s.fingerprint not in children]
        for s, outcome in zip(todo, trainer.evaluate([s.expression for s in todo])):
            children[s.fingerprint] = outcome
        return [(children[s.fingerprint]['reward'], children[s.fingerprint]['reason'])
                for s in new]

    progress = {n: Progress([Record.from_dict(d) for d in state['progress'][n]])
                for n in strategies}

    def active(n):
        p = progress[n]
        return (p.evaluated < budget and not strats[n].exhausted
                and len(p.records) < 50 * budget)

    while any(active(n) for n in strategies):
        name = min((n for n in strategies if active(n)), key=lambda n: state['steps'][n])
        out = search_step(strats[name], progress[name], budget, batch_size, evaluate_many)
        state['steps'][name] += 1
        state['progress'][name] = [r.to_dict() for r in progress[name].records]
        state['strategies'][name] = strats[name].state()
        _save(state, path)
        best = max((r.reward for r in progress[name].records), default=0.0)
        log(f'search {work_dir}: {name} step {state["steps"][name]}: '
            f'{progress[name].evaluated}/{budget} evaluated, best reward {best:.4g}')
        if not out:
            break
    return copy.deepcopy(state)
