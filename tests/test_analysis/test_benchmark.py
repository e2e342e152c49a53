"""acon_mm.analysis.benchmark, the logic of tools/analysis_tools/benchmark_acon.py.

Shrunk to tiny shapes so that it runs in seconds: the report's structure, the
implementation names it runs under, the JSON and the exit status. The tool itself
(``--quick`` on the real shapes, ``--device cuda`` without CUDA) is run in
tests/test_tools/test_benchmark_acon.py.
"""
import json
import types

import pytest
import torch

import acon_mm.analysis.benchmark as bench
from acon_mm.analysis import BenchmarkOptions, run_benchmark
from acon_mm.analysis.benchmark import common, cpu


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(common, 'STAGES', ((8, 6), (16, 3)))
    return BenchmarkOptions(batch=1, repeats=1, skip_detector=True)


def test_cpu_run_report_and_json(tiny, tmp_path, capsys):
    out = tmp_path / 'sub' / 'bench.json'
    rc = run_benchmark(BenchmarkOptions(**{**vars(tiny), 'out': str(out)}))
    res = json.loads(out.read_text())
    assert rc == (0 if all(t['ok'] for t in res['targets']) else 1)
    assert res['device'] == 'cpu' and res['batch'] == 1 and res['detector'] is None
    rows = {(r['layer'], r['impl']): r for r in res['activations']}
    for name in bench.LAYERS:
        assert (name, 'fused') in rows and (name, 'naive') in rows
    assert {('nn.ReLU', '-'), ('nn.SiLU', '-')} <= set(rows)
    assert rows[('nn.SiLU', '-')]['ratio_silu'] == pytest.approx(1.0)
    assert len(rows[('AconC', 'fused')]['per_shape_ratio_silu']) == 2
    # the fused function saves only the input, the naive formula more
    assert rows[('AconC', 'fused')]['saved_over_input'] == pytest.approx(1.0, abs=0.05)
    assert rows[('AconC', 'naive')]['saved_over_input'] > 1.5
    assert sorted(t['text'].split(':')[0] for t in res['targets']) == sorted(bench.TARGETS)
    text = capsys.readouterr().out
    assert 'fused backend on CPU:' in text and 'Targets:' in text


def test_fused_rows_run_under_auto(tiny, monkeypatch):
    """The 'fused' rows run acon_impl('auto'): the name 'fused' is not passed on."""
    seen = []
    real = common.acon_impl

    def spy(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(common, 'acon_impl', spy)  # make_step
    monkeypatch.setattr(cpu, 'acon_impl', spy)  # the naive rows' saved bytes
    bench.bench_activations(tiny)
    assert set(seen) == {'auto', 'naive'}


def test_batch_defaults_by_device(monkeypatch):
    got = []

    def fake_cpu(opts):
        got.append(opts)
        return 0

    monkeypatch.setattr(bench, 'benchmark_cpu', fake_cpu)
    assert run_benchmark(BenchmarkOptions()) == 0
    assert got[0].batch == bench.DEFAULT_BATCH['cpu'] == 8


def test_cuda_checks_without_cuda():
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    with pytest.raises(RuntimeError, match='CUDA is not available'):
        run_benchmark(BenchmarkOptions(device='cuda'))
    with pytest.raises(ValueError, match='device'):
        run_benchmark(BenchmarkOptions(device='tpu'))


def test_bandwidth_helpers():
    x = torch.empty(2, 3, 4, 5, dtype=torch.bfloat16)
    assert bench.fused_pass_bytes(x) == 5 * 120 * 2
    props = types.SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=6144,
                                  name='X')
    assert bench.peak_bandwidth_gbs(props) == pytest.approx(2 * 2.619e9 * 768 / 1e9)
    assert bench.peak_bandwidth_gbs(props, 4800.0) == 4800.0
    assert bench.peak_bandwidth_gbs(types.SimpleNamespace(name='NVIDIA H100')) == 3350.0
    assert bench.peak_bandwidth_gbs(types.SimpleNamespace(name='GPU')) is None


def test_interleaved_times_resets_between_steps():
    calls = []

    def step():
        calls.append('step')

    step.reset = lambda: calls.append('reset')
    times = bench.interleaved_times({'a': step}, repeats=3, warmup=1, stat='min')
    assert set(times) == {'a'} and times['a'] >= 0
    assert calls == ['step'] + ['reset', 'step'] * 3


def test_compiled_twins_and_ratios():
    """--compile: each detector gets a compiled twin with the same weights, whose
    step time is reported over eager's."""
    models = {'ReLU': torch.nn.Linear(3, 2)}
    assert common.with_compiled(models, False) == models
    both = common.with_compiled(models, True)
    assert set(both) == {'ReLU', 'ReLU compiled'}
    x = torch.randn(4, 3)
    torch.testing.assert_close(both['ReLU compiled'](x), models['ReLU'](x))
    assert both['ReLU compiled'].weight is not models['ReLU'].weight  # a copy
    ratios = common.compile_ratios({'ReLU': 2.0, 'ReLU compiled': 1.0, 'MetaAconC': 3.0})
    assert ratios == {'ReLU': 0.5}
