"""The CPU benchmark (the default device): part 1, the activations against
nn.SiLU, nn.ReLU and the naive formula; part 2, the RetinaNet-R50 train step
(see :mod:`acon_mm.analysis.benchmark`)."""
import copy
import os.path as osp

import torch
import torch.nn as nn

from ...models.layers import SearchedActivation
from ...ops import acon_backend, acon_impl, cpu_ext_error, load_cpu_ext
from . import common
from .common import (
    FUSED_IMPL,
    LAYERS,
    BenchmarkOptions,
    build_retinanet,
    compile_ratios,
    finish_report,
    interleaved_times,
    machine_name,
    make_det_batch,
    make_step,
    saved_bytes,
    with_compiled,
)

__all__ = ['benchmark_cpu', 'bench_activations', 'report_activations',
           'bench_detector', 'TARGETS', 'DETECTOR_TARGET']

#: layer -> (max time ratio to nn.SiLU, max saved bytes / input bytes)
TARGETS = {'AconC': (1.5, 1.1), 'SwishBeta': (1.5, 1.1), 'MetaAconC': (1.6, 1.2)}
DETECTOR_TARGET = 1.15
# the table's ``impl`` column -> the acon_impl name it runs under ('-': nn.ReLU /
# nn.SiLU, which ignore it)
_IMPL_OF = {'fused': FUSED_IMPL, 'naive': 'naive', '-': 'naive'}


# --------------------------------------------------------------------------
# part 1: activations
# --------------------------------------------------------------------------
def bench_activations(opts: BenchmarkOptions) -> dict:
    """Part 1 on CPU: time and saved bytes of every layer and implementation.

    Args:
        opts (BenchmarkOptions): ``batch``, ``repeats``/``quick``, ``stat``.

    Returns:
        dict: ``(layer, impl) -> {'time': [s per shape], 'saved': [saved / input
        bytes per shape]}``; ``impl`` is ``'fused'``, ``'naive'`` or ``'-'``
        (nn.ReLU, nn.SiLU).
    """
    repeats = opts.repeats or (5 if opts.quick else 15)
    torch.manual_seed(0)
    results = {}  # (layer, impl) -> {'time': [per shape], 'saved': [per shape]}
    rows = []
    for C, S in common.STAGES:
        x = torch.randn(opts.batch, C, S, S)
        gout = torch.randn_like(x)
        in_bytes = x.numel() * x.element_size()
        steps, modules = {}, {}
        for name, m in (('nn.ReLU', nn.ReLU()), ('nn.SiLU', nn.SiLU())):
            modules[(name, '-')] = m
        for name, expr in common.SEARCHED.items():
            modules[(name, '-')] = SearchedActivation(expr, num_channels=C)
        for name, ctor in LAYERS.items():
            m = ctor(C)
            with torch.no_grad():  # a realistic operating point, not the init
                for pname, p in m.named_parameters(recurse=False):
                    if pname == 'beta':
                        p.uniform_(0.5, 1.5)
            for impl in ('fused', 'naive'):
                modules[(name, impl)] = m
        for key, m in modules.items():
            steps[key] = make_step(m, _IMPL_OF[key[1]], x, gout)
        # Two interleaved groups: the naive formulas allocate and free many large
        # temporaries, which leaves the allocator and caches cold for whatever runs
        # next; interleaved with the others they would slow their successor down.
        times = interleaved_times({k: v for k, v in steps.items() if k[1] != 'naive'},
                                  repeats, stat=opts.stat)
        times.update(interleaved_times({k: v for k, v in steps.items() if k[1] == 'naive'},
                                       repeats, stat=opts.stat))
        for key, m in modules.items():
            leaf = x.detach().requires_grad_()
            with acon_impl(_IMPL_OF[key[1]]):
                sb = saved_bytes(m, leaf, module=m)
            res = results.setdefault(key, {'time': [], 'saved': []})
            res['time'].append(times[key])
            res['saved'].append(sb / in_bytes)
        rows.append((C, S, times))
        print(f'  {opts.batch}x{C}x{S}x{S}: SiLU {times[("nn.SiLU", "-")] * 1e3:.2f} ms, '
              f'ACON-C fused {times[("AconC", "fused")] * 1e3:.2f} ms, '
              f'naive {times[("AconC", "naive")] * 1e3:.2f} ms', flush=True)
    return results


def report_activations(results: dict, opts: BenchmarkOptions) -> tuple:
    """Print part 1's table; return its targets and rows.

    Args:
        results (dict): what :func:`bench_activations` returned.
        opts (BenchmarkOptions): ``batch``, ``stat`` (for the header).

    Returns:
        tuple[list, list]: ``[(target text, passed)]`` and the table as dicts
        (``layer``, ``impl``, ``time_ms``, ``ratio_silu``, ``ratio_naive``,
        ``per_shape_ratio_silu``, ``saved_over_input``).
    """
    silu = results[('nn.SiLU', '-')]
    silu_total = sum(silu['time'])
    shapes = ' '.join(f'{C}x{S}x{S}' for C, S in common.STAGES)
    print(f'\nActivations, batch {opts.batch}, shapes {shapes}; time = sum over the '
          f'shapes of the {opts.stat} forward+backward time')
    hdr = (f'{"layer":<12} {"impl":<6} {"time ms":>8} {"/SiLU":>6} {"/naive":>7} '
           f'{"per-shape /SiLU":>24} {"saved/in":>9}  target')
    print(hdr)
    print('-' * len(hdr) + '-' * 24)
    verdicts = []
    table = []
    for key, res in results.items():
        name, impl = key
        total = sum(res['time'])
        r_silu = total / silu_total
        naive = results.get((name, 'naive'))
        r_naive = total / sum(naive['time']) if naive else float('nan')
        per_shape = ' '.join(f'{t / s:.2f}' for t, s in zip(res['time'], silu['time']))
        saved = max(res['saved'])
        target = ''
        if impl == 'fused' and name in TARGETS:
            tt, ts = TARGETS[name]
            ok = r_silu <= tt and saved <= ts
            verdicts.append((f'{name}: time {r_silu:.2f}x SiLU (<= {tt}), saved '
                             f'{saved:.2f}x input (<= {ts})', ok))
            target = f'<= {tt}x, <= {ts}x  {"PASS" if ok else "FAIL"}'
        r_naive_s = f'{r_naive:.2f}' if naive else '-'
        print(f'{name:<12} {impl:<6} {total * 1e3:8.2f} {r_silu:6.2f} {r_naive_s:>7} '
              f'{per_shape:>24} {saved:9.2f}  {target}')
        table.append(dict(layer=name, impl=impl, time_ms=total * 1e3, ratio_silu=r_silu,
                          ratio_naive=r_naive if naive else None,
                          per_shape_ratio_silu=[t / s for t, s in
                                                zip(res['time'], silu['time'])],
                          saved_over_input=saved))
    return verdicts, table


def bench_detector(opts: BenchmarkOptions) -> tuple:
    """Part 2 on CPU: the RetinaNet-R50 train step, meta-ACON vs ReLU; prints it.

    Args:
        opts (BenchmarkOptions): ``det_size``, ``det_batch``, ``det_repeats``,
            ``quick``, ``stat``.

    Returns:
        tuple[list, dict]: ``[(target text, passed)]`` and the report (``size``,
        ``batch``, ``times_ms``, ``saved_mib``, ``ratio``).
    """
    from ...models.backbones import ResNetACON  # noqa: F401  (fails clearly if missing)
    size = opts.det_size or (224 if opts.quick else 320)
    repeats = opts.det_repeats or (3 if opts.quick else 5)
    torch.manual_seed(0)
    models = with_compiled({'ReLU': build_retinanet(dict(type='ReLU')),
                            'MetaAconC': build_retinanet(dict(type='MetaAconC'))},
                           opts.compile)
    data = make_det_batch(opts.det_batch, size)
    steps, saved = {}, {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step(model=model, opt=opt):
            batch = model.data_preprocessor(copy.deepcopy(data), True)
            losses = model(**batch, mode='loss')
            loss, _ = model.parse_losses(losses)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step

        def fwd(model=model):
            batch = model.data_preprocessor(copy.deepcopy(data), True)
            return model.parse_losses(model(**batch, mode='loss'))[0]

        if not name.endswith(' compiled'):  # saved-tensor hooks see eager autograd only
            saved[name] = saved_bytes(fwd, module=model)
    times = interleaved_times(steps, repeats, warmup=2 if opts.compile else 1, stat=opts.stat)
    ratio = times['MetaAconC'] / times['ReLU']
    print(f'\nRetinaNet-R50 train step (batch {opts.det_batch}, {size}x{size}, '
          f'ResNetACON backbone, same code; {opts.stat} of {repeats} interleaved steps):')
    for name in models:
        mem = f'   saved tensors {saved[name] / 2**20:8.1f} MiB' if name in saved else ''
        print(f'  {name:<19} {times[name] * 1e3:9.1f} ms{mem}')
    compiled = compile_ratios(times)
    for name, r in compiled.items():
        print(f'  {name}: compiled / eager {r:.3f}x')
    ok = ratio <= DETECTOR_TARGET
    print(f'  meta-ACON / ReLU: {ratio:.3f}x (target <= {DETECTOR_TARGET})  '
          f'{"PASS" if ok else "FAIL"}')
    return ([(f'RetinaNet-R50 meta-ACON train step: {ratio:.3f}x ReLU '
              f'(<= {DETECTOR_TARGET})', ok)],
            dict(size=size, batch=opts.det_batch, times_ms={k: v * 1e3
                                                            for k, v in times.items()},
                 saved_mib={k: v / 2**20 for k, v in saved.items()}, ratio=ratio,
                 compiled_over_eager=compiled or None))


def benchmark_cpu(opts: BenchmarkOptions) -> int:
    """The CPU benchmark (the default): activations, then the detector.

    Args:
        opts (BenchmarkOptions): the options (``batch`` resolved).

    Returns:
        int: the exit status of :func:`finish_report`.
    """
    ext = load_cpu_ext()
    print(f'machine: {machine_name()}')
    if ext is None:
        detail = f' (no C++ extension: {cpu_ext_error()})'
    else:
        detail = (f' (C++ extension {osp.basename(osp.dirname(ext.__file__))}, '
                  f'{ext.VECTOR_WIDTH} floats per vector)')
    print(f'fused backend on CPU: {acon_backend(torch.zeros(1, 1, 1, 1), FUSED_IMPL)}'
          f'{detail}')
    print('Note: ratios are measured in one run; a shared, busy machine makes them noisy '
          '(there, --threads 1 avoids waiting on descheduled OpenMP workers).')
    results = bench_activations(opts)
    verdicts, table = report_activations(results, opts)
    det = None
    if not opts.skip_detector:
        v, det = bench_detector(opts)
        verdicts += v
    return finish_report(opts, verdicts, dict(device='cpu', machine=machine_name(),
                                              batch=opts.batch, activations=table,
                                              detector=det))
