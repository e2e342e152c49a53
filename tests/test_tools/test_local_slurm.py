"""A real Slurm (issue 23, step 1): the one-node cluster of
tools/misc/local_slurm.sh answers srun, sbatch, squeue/scontrol and scancel.

Marked ``slurm``: runs whenever ``sinfo`` answers (``.ci/run`` starts the local
cluster before ``make test``), skipped with the reason otherwise. Every Slurm
call has a timeout; jobs are polled with ``squeue`` (``sbatch --wait`` polls at
2, 8, 32 s)."""
import os
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm


def _sinfo_answers() -> bool:
    if shutil.which('sinfo') is None:
        return False
    try:
        out = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True,
                             timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


if not _sinfo_answers():
    pytest.skip('no Slurm answers here (start one: sudo bash tools/misc/local_slurm.sh start)',
                allow_module_level=True)


def _run(*cmd, timeout=60):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd}: {proc.stderr}'
    return proc.stdout


def _job_state(job_id: str) -> str:
    out = _run('scontrol', 'show', 'job', job_id, timeout=20)
    return out.split('JobState=')[1].split()[0]


def _wait_gone(job_id: str, timeout: float = 120) -> str:
    """Poll squeue until the job left the queue; its final state."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _run('squeue', '-h', '-j', job_id, '-o', '%i', timeout=20).strip():
            return _job_state(job_id)
        time.sleep(0.5)
    subprocess.run(['scancel', job_id], timeout=20)
    raise AssertionError(f'job {job_id} still queued after {timeout} s: {_job_state(job_id)}')


def test_srun_starts_two_ranks():
    out = _run('srun', '-n2', '--time=1', 'bash', '-c',
               'echo rank=$SLURM_PROCID of $SLURM_NTASKS', timeout=60)
    assert sorted(out.split('\n')[:2]) == ['rank=0 of 2', 'rank=1 of 2'], out


def test_sbatch_runs_a_job_to_completion(tmp_path):
    out_file = tmp_path / 'out.txt'
    script = tmp_path / 'job.sh'
    script.write_text('#!/bin/bash\n'
                      f'echo "job $SLURM_JOB_ID on $SLURM_JOB_NODELIST" > {out_file}\n')
    job = _run('sbatch', '--parsable', '--time=1', '-o', str(tmp_path / 'log'),
               str(script)).strip().split(';')[0]
    assert _wait_gone(job) == 'COMPLETED'
    assert out_file.read_text().startswith(f'job {job} on ')


def test_scancel_stops_a_job_and_its_children(tmp_path):
    pid_file = tmp_path / 'child.pid'
    script = tmp_path / 'sleep.sh'
    script.write_text(f'#!/bin/bash\nsleep 300 &\necho $! > {pid_file}\nwait\n')
    job = _run('sbatch', '--parsable', '--time=2', '-o', str(tmp_path / 'log'),
               str(script)).strip().split(';')[0]
    end = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < end, f'job {job} never started: {_job_state(job)}'
        time.sleep(0.2)
    child = int(pid_file.read_text())
    _run('scancel', job, timeout=20)
    assert _wait_gone(job) == 'CANCELLED'
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, 9)
    raise AssertionError(f'the cancelled job left its child {child} running')


DEMO = 'configs/demo/retinanet_r18-aconc_fpn_demo.py'


def _opts(data_root):
    return ['--data-root', data_root, '--cfg-options', 'train_cfg.max_iters=3',
            'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3',
            'model.test_cfg.score_thr=0.0', 'randomness.seed=0']


@pytest.mark.slow
def test_slurm_train_on_a_cpu_partition_equals_torchrun(repo_root, demo_coco, tmp_path):
    """GPUS_PER_NODE=0: two srun tasks train with gloo; the checkpoint is the one a
    2-rank torchrun run (tools/dist_train.sh) writes; slurm_test.sh evaluates it."""
    import torch
    env = dict(os.environ, GPUS='2', GPUS_PER_NODE='0', CPUS_PER_TASK='1',
               OMP_NUM_THREADS='1', SRUN_ARGS='--time=10', PYTHONWARNINGS='ignore')
    slurm_dir = tmp_path / 'slurm'
    proc = subprocess.run(
        ['bash', 'tools/slurm_train.sh', 'debug', 'acon-test', DEMO, str(slurm_dir),
         *_opts(demo_coco['data_root'])],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Distributed launcher: slurm' in proc.stdout, proc.stdout[-2000:]
    assert 'Distributed training: True' in proc.stdout and 'GPU number: 2' in proc.stdout
    torchrun_dir = tmp_path / 'torchrun'
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', DEMO, '2', '--work-dir', str(torchrun_dir), '--cpu',
         *_opts(demo_coco['data_root'])],
        cwd=repo_root, env=dict(env, PORT='29731'), capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(slurm_dir / 'iter_3.pth', map_location='cpu', weights_only=False)
    b = torch.load(torchrun_dir / 'iter_3.pth', map_location='cpu', weights_only=False)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k
    proc = subprocess.run(
        ['bash', 'tools/slurm_test.sh', 'debug', 'acon-test', DEMO,
         str(slurm_dir / 'iter_3.pth'), '--work-dir', str(tmp_path / 'test'),
         *_opts(demo_coco['data_root'])],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/bbox_mAP:' in proc.stdout + proc.stderr
