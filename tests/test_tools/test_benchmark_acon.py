"""tools/analysis_tools/benchmark_acon.py as a user runs it: its ``--json`` output on
CPU and its refusal of ``--device cuda`` without CUDA (the logic behind it:
tests/test_analysis/test_benchmark.py)."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # the benchmark tool in subprocesses

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_acon.py')


def test_benchmark_json_on_cpu(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, BENCH, '--quick', '--skip-detector', '--batch',
                           '1', '--repeats', '2', '--json', str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target failed (busy CPU)
    res = json.loads(out.read_text())
    assert res['device'] == 'cpu' and res['batch'] == 1 and res['detector'] is None
    layers = {(r['layer'], r['impl']) for r in res['activations']}
    assert {('AconC', 'fused'), ('nn.SiLU', '-'), ('MetaAconC', 'naive')} <= layers
    assert res['targets'] and all(set(t) == {'text', 'ok'} for t in res['targets'])
    assert 'Targets:' in proc.stdout


def test_benchmark_cuda_without_cuda_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    proc = subprocess.run([sys.executable, BENCH, '--device', 'cuda'], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert 'CUDA is not available' in proc.stderr, proc.stderr[-2000:]
