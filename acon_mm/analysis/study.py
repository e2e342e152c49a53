"""Activation studies: one config family, several activations and seeds, each
trained and tested with the project's own tools, compared in one report
(``tools/analysis_tools/study.py``; docs/study.md).

:func:`run_study` takes the members (:mod:`.study_config`: a family found by
name, or one config with the activations replaced; refused if they differ in
more than the activation), plans the runs ``<work_dir>/<member>_seed<k>/``
(:func:`plan_runs`), runs ``tools/train.py`` (``tools/dist_train.sh`` with
several GPUs) and ``tools/test.py`` for each in turn (or ``jobs`` runs at a
time on the CPU, each with its share of the cores), resumes an interrupted
study (:func:`run_state`), then writes the report (:mod:`.study_report`).
"""
import copy
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence

from mmengine.config import Config, ConfigDict

from ..engine.checkpoint import is_complete_checkpoint
from .study_config import (
    ACTIVATION_TOKENS,
    Member,
    StudyError,
    check_family,
    check_members,
    config_differences,
    family_name,
    find_family,
    is_iter_based,
    load_members,
    shorten_schedule,
)

__all__ = [
    'ACTIVATION_TOKENS', 'StudyError', 'Member', 'StudyRun', 'find_family',
    'load_members', 'config_differences', 'check_family', 'check_members',
    'shorten_schedule',
    'plan_runs', 'run_state', 'run_study', 'DONE_FILE'
]

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The file a run gets when its test has finished (what ``--resume`` skips).
DONE_FILE = 'study_run.json'


@dataclass
class StudyRun:
    """One member trained with one seed: ``<work_dir>/<member>_seed<k>/``."""
    member: Member
    seed: int
    work_dir: str
    config_file: str
    final_checkpoint: str

    @property
    def name(self) -> str:
        return osp.basename(self.work_dir)


# ---------------------------------------------------------------------------
# planning and running
# ---------------------------------------------------------------------------
def _final_checkpoint(cfg: Config, work_dir: str) -> str:
    tc = cfg.train_cfg
    if is_iter_based(tc):
        return osp.join(work_dir, f'iter_{tc["max_iters"]}.pth')
    return osp.join(work_dir, f'epoch_{tc["max_epochs"]}.pth')


def plan_runs(members: Sequence[Member], seeds: Sequence[int], work_dir: str,
              iters: Optional[int] = None,
              val_interval: Optional[int] = None) -> List[StudyRun]:
    """One :class:`StudyRun` per member and seed, configs not written yet.

    Each run's config is the member's with ``randomness.seed`` set, the
    schedule shortened (``iters``) and, for iteration-based loops, the
    validation metrics logged at their iteration (``log_metric_by_epoch``
    off); it goes to ``<work_dir>/configs/<member>_seed<k>.py``.
    """
    runs = []
    for m in members:
        for seed in seeds:
            cfg = copy.deepcopy(m.cfg)
            if iters is not None:
                shorten_schedule(cfg, iters, val_interval)
            elif val_interval is not None:
                cfg.train_cfg['val_interval'] = val_interval
            cfg.randomness = ConfigDict({**(cfg.get('randomness') or {}),
                                         'seed': int(seed)})
            if is_iter_based(cfg.train_cfg):
                cfg.setdefault('default_hooks', ConfigDict()).setdefault(
                    'logger', ConfigDict(type='LoggerHook'))[
                        'log_metric_by_epoch'] = False
            name = f'{m.name}_seed{seed}'
            run_dir = osp.join(work_dir, name)
            runs.append(StudyRun(
                Member(m.name, m.activation, m.source, cfg), int(seed), run_dir,
                osp.join(work_dir, 'configs', f'{name}.py'),
                _final_checkpoint(cfg, run_dir)))
    return runs


def run_state(run: StudyRun) -> str:
    """``'done'`` (tested), ``'test'`` (trained, not tested), ``'resume'``
    (checkpoints but not the final one), ``'new'`` (nothing yet)."""
    if osp.isfile(osp.join(run.work_dir, DONE_FILE)):
        return 'done'
    if is_complete_checkpoint(run.final_checkpoint):
        return 'test'
    if glob.glob(osp.join(run.work_dir, '*_*.pth')):
        return 'resume'
    return 'new'


def _commands(run: StudyRun, gpus: int, data_root: Optional[str], cpu: bool,
              resume: bool, tools_dir: str):
    extra = (['--data-root', data_root] if data_root else []) + (
        ['--cpu'] if cpu else [])
    if gpus > 1:
        train = ['bash', osp.join(tools_dir, 'dist_train.sh'), run.config_file,
                 str(gpus)]
        test = ['bash', osp.join(tools_dir, 'dist_test.sh'), run.config_file,
                run.final_checkpoint, str(gpus)]
    else:
        train = [sys.executable, osp.join(tools_dir, 'train.py'), run.config_file]
        test = [sys.executable, osp.join(tools_dir, 'test.py'), run.config_file,
                run.final_checkpoint]
    train += ['--work-dir', run.work_dir] + extra + (['--resume'] if resume else [])
    test += ['--work-dir', osp.join(run.work_dir, 'test')] + extra
    return train, test


def _execute(cmd: List[str], log_file: str,
             threads: Optional[int] = None) -> None:
    """Run ``cmd``, its output into ``log_file``; raise StudyError on failure.

    ``threads``: the run's CPU threads (``OMP_NUM_THREADS``, unless the
    caller's environment sets it), for runs side by side (``jobs``).
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH']
                                     if env.get('PYTHONPATH') else '')
    env.setdefault('PYTHON', sys.executable)  # for the dist_*.sh scripts
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    if threads is not None:
        env.setdefault('OMP_NUM_THREADS', str(threads))
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    with open(log_file, 'w') as f:
        # in the caller's directory, as if the user ran the tool there
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        with open(log_file, errors='replace') as f:
            tail = f.read()[-3000:]
        raise StudyError(f'`{" ".join(cmd)}` exited with status {rc}; its '
                         f'output is in {log_file}:\n{tail}')


def _check_config(run: StudyRun) -> None:
    """A started run must continue with the config it was started with."""
    if osp.isfile(run.config_file):
        with open(run.config_file) as f:
            if f.read() != run.member.cfg.pretty_text:
                raise StudyError(
                    f'{run.config_file} (the config run {run.work_dir} was '
                    'started with) differs from the one these options give; '
                    'resume with the same options, or use another --work-dir')


def _write_config(run: StudyRun) -> None:
    os.makedirs(osp.dirname(run.config_file), exist_ok=True)
    with open(run.config_file, 'w') as f:
        f.write(run.member.cfg.pretty_text)


def _train_and_test(head: str, run: StudyRun, state: str, train: List[str],
                    test: List[str], execute, log) -> List[List[str]]:
    """Train (unless only the test is left) and test one run; mark it done."""
    executed = []
    _write_config(run)
    record = dict(member=run.member.name, activation=run.member.activation,
                  seed=run.seed, config=run.config_file,
                  source=run.member.source, checkpoint=run.final_checkpoint)
    if state != 'test':
        log(f'{head}: training ({"resumed" if state == "resume" else "new"}'
            f'), log {osp.join(run.work_dir, "study_train.out")}')
        t0 = time.time()
        execute(train, osp.join(run.work_dir, 'study_train.out'))
        executed.append(train)
        record.update(train_command=train, train_seconds=time.time() - t0)
    if not is_complete_checkpoint(run.final_checkpoint):
        raise StudyError(f'{run.work_dir}: training finished without '
                         f'writing {run.final_checkpoint}')
    log(f'{head}: testing {run.final_checkpoint}')
    t0 = time.time()
    execute(test, osp.join(run.work_dir, 'study_test.out'))
    executed.append(test)
    record.update(test_command=test, test_seconds=time.time() - t0,
                  finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    with open(osp.join(run.work_dir, DONE_FILE), 'w') as f:
        json.dump(record, f, indent=1)
    return executed


def _in_parallel(todo, jobs: int, execute, log) -> List[List[str]]:
    """:func:`_train_and_test` for each item, ``jobs`` at a time.

    After the first failure no new run starts; the running ones finish (a
    run killed half-way would only have to be resumed), then the first
    failure in plan order is raised.
    """
    stop = threading.Event()

    def one(item):
        if stop.is_set():
            return None  # not started: an earlier run failed
        try:
            return _train_and_test(*item, execute, log)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, item) for item in todo]
    executed = []
    for f in futures:
        err = f.exception()
        if err is not None:
            raise err
        executed += f.result() or []
    return executed


def run_study(configs: Sequence[str],
              activations: Optional[Sequence[str]] = None,
              seeds: Sequence[int] = (0, ),
              work_dir: Optional[str] = None,
              iters: Optional[int] = None,
              val_interval: Optional[int] = None,
              gpus: int = 1,
              cpu: bool = False,
              data_root: Optional[str] = None,
              cfg_options: Optional[dict] = None,
              activation_key: str = 'model.backbone.acon_cfg',
              resume: bool = False,
              collect_only: bool = False,
              dry_run: bool = False,
              allow_differences: bool = False,
              baseline: Optional[str] = None,
              flops_shape: Optional[Sequence[int]] = None,
              flops: bool = True,
              jobs: int = 1,
              tools_dir: Optional[str] = None,
              execute: Callable[[List[str], str], None] = _execute,
              log: Callable[[str], None] = print) -> dict:
    """Run (or collect) an activation study and write its report.

    Args:
        configs, activations, activation_key, cfg_options: the members, see
            :func:`load_members`.
        seeds (list[int]): ``randomness.seed`` of each run of a member.
        work_dir (str, optional): the study's folder (default
            ``work_dirs/study/<family name without the activation>``).
        iters, val_interval: a shortened schedule (:func:`shorten_schedule`).
        gpus (int): >1 trains and tests with ``tools/dist_*.sh`` on that many.
        cpu (bool), data_root (str): passed to the tools (``--cpu``,
            ``--data-root``).
        resume (bool): skip tested runs, test trained ones, resume the rest
            (``tools/train.py --resume``); without it an existing run folder
            is an error.
        collect_only (bool): run nothing, report the runs found.
        dry_run (bool): print the plan and the commands, run nothing.
        allow_differences (bool): accept members that differ in more than
            the activation (the report lists the differences).
        baseline (str, optional): the member the Δ columns compare with
            (default: the one with ``ReLU``).
        flops_shape ((H, W), optional), flops (bool): the FLOP count's input.
        jobs (int): CPU runs (``cpu=True``) trained and tested at a time, each
            with ``cpu_count() // jobs`` threads (``OMP_NUM_THREADS``, unless
            set); on a small machine several single-threaded runs get more
            done than one run on every core. The first failure stops new runs
            from starting; the running ones finish, then it is raised.
        execute: runs one command, output to a log file (tests replace it).

    Returns:
        dict: the report (see :func:`.study_report.write_report`) plus
        ``'executed'``, the commands run.
    """
    from .study_report import build_report, write_report
    members = load_members(configs, activations, activation_key, cfg_options)
    diffs = check_family(members, allow_differences)
    if not collect_only:  # every member before the first run (a dry run too)
        check_members(members)
    if baseline is not None and baseline not in [m.name for m in members]:
        raise StudyError(f'--baseline {baseline!r} is not a member: '
                         f'{[m.name for m in members]}')
    if work_dir is None:
        work_dir = osp.join('work_dirs', 'study', family_name(configs[0]))
    if data_root and not osp.isdir(data_root):
        raise StudyError(f'--data-root {data_root!r} is not a directory')
    if jobs < 1:
        raise StudyError(f'--jobs must be >= 1, got {jobs}')
    if jobs > 1 and not cpu:
        raise StudyError(f'--jobs {jobs} runs several trainings at once on the '
                         'CPU: pass --cpu (on GPUs use --gpus N, one run at a '
                         'time on N GPUs)')
    if jobs > 1 and execute is _execute:
        execute = partial(_execute,
                          threads=max(1, (os.cpu_count() or 1) // jobs))
    tools_dir = tools_dir or osp.join(REPO_ROOT, 'tools')
    runs = plan_runs(members, seeds, work_dir, iters, val_interval)
    log(f'study {work_dir}: {len(members)} activations x {len(seeds)} seeds: '
        + ', '.join(f'{m.name} ({m.activation})' for m in members))
    executed = []
    if not collect_only:
        started = [r for r in runs if osp.isdir(r.work_dir)
                   and os.listdir(r.work_dir)]
        if resume:
            for r in started:
                _check_config(r)
        elif started and not dry_run:
            raise StudyError(
                'these runs were started before: '
                + ', '.join(r.work_dir for r in started)
                + '; pass --resume to skip the finished ones and continue the '
                'others, --collect-only to report them, or choose another '
                '--work-dir')
        todo = []
        for i, run in enumerate(runs, 1):
            state = run_state(run)
            train, test = _commands(run, gpus, data_root, cpu,
                                    state == 'resume', tools_dir)
            head = f'[{i}/{len(runs)}] {run.name}'
            if state == 'done':
                log(f'{head}: finished before, skipped')
                continue
            if dry_run:
                log(f'{head} ({state}):\n  ' + ' '.join(train) + '\n  '
                    + ' '.join(test))
                continue
            todo.append((head, run, state, train, test))
        if jobs == 1:
            for item in todo:
                executed += _train_and_test(*item, execute, log)
        elif todo:
            executed += _in_parallel(todo, jobs, execute, log)
        if dry_run:
            return dict(runs=[r.work_dir for r in runs], executed=[])
    report = build_report(runs, members, work_dir=work_dir, seeds=seeds,
                          iters=iters, data_root=data_root, diffs=diffs,
                          baseline=baseline, flops_shape=flops_shape,
                          flops=flops)
    paths = write_report(report, work_dir)
    log(report['markdown'])
    log('written: ' + ', '.join(paths.values()))
    report.update(files=paths, executed=executed)
    return report
