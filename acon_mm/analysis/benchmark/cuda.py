"""The GPU benchmark (``benchmark_acon.py --device cuda``; see
:mod:`acon_mm.analysis.benchmark`): the activations in float32 and bfloat16,
contiguous and channels_last, timed with CUDA events, with their achieved
bandwidth; the RetinaNet-R50 train step with AMP."""
import copy
import statistics
from typing import Callable, Optional

import torch
import torch.nn as nn

from ...ops import acon_backend
from . import common
from .common import (
    DTYPES,
    FUSED_IMPL,
    LAYERS,
    BenchmarkOptions,
    build_retinanet,
    compile_ratios,
    finish_report,
    make_det_batch,
    make_step,
    with_compiled,
)

__all__ = [
    'benchmark_cuda', 'fused_pass_bytes', 'peak_bandwidth_gbs', 'cuda_times',
    'make_cuda_step', 'bench_activations_cuda', 'bench_detector_cuda',
    'CUDA_TARGETS', 'CUDA_BW_TARGET', 'CUDA_BW_LAYERS', 'CUDA_DETECTOR_TARGET',
    'PEAK_GBS_BY_NAME'
]

#: CUDA: layer -> max time ratio to nn.SiLU; min fraction of the peak bandwidth
CUDA_TARGETS = {'AconC': 1.2, 'SwishBeta': 1.2, 'MetaAconC': 1.5}
CUDA_BW_TARGET = 0.7
CUDA_BW_LAYERS = ('AconC', 'SwishBeta')
CUDA_DETECTOR_TARGET = 1.10
#: peak memory bandwidth (GB/s) of GPUs whose properties do not give it
PEAK_GBS_BY_NAME = {'H200': 4800.0, 'H100': 3350.0}


def fused_pass_bytes(x: torch.Tensor) -> int:
    """Bytes moved by the minimal fused forward+backward pass over ``x``: forward reads
    ``x`` and writes ``y``, backward reads ``x`` and ``gout`` and writes ``dx``, i.e.
    ``5 x.numel() x.element_size()`` (parameters and per-channel sums are negligible).

    Args:
        x (Tensor): the activation.

    Returns:
        int: the bytes.
    """
    return 5 * x.numel() * x.element_size()


def peak_bandwidth_gbs(props, override: Optional[float] = None) -> Optional[float]:
    """Peak memory bandwidth in GB/s: ``override`` (``--peak-gbs``), else
    ``2 x memory clock (kHz) x bus width (bits) / 8`` from the device properties where
    torch exposes them, else :data:`PEAK_GBS_BY_NAME` by device name, else ``None``.

    Args:
        props: ``torch.cuda.get_device_properties()`` (or anything with its
            ``memory_clock_rate``, ``memory_bus_width``, ``name``).
        override (float, optional): the bandwidth to use.

    Returns:
        float | None: GB/s, ``None`` if unknown.
    """
    if override:
        return float(override)
    clock = getattr(props, 'memory_clock_rate', None)
    bus = getattr(props, 'memory_bus_width', None)
    if clock and bus:
        return 2 * clock * 1e3 * bus / 8 / 1e9
    name = getattr(props, 'name', '') or ''
    for key, gbs in PEAK_GBS_BY_NAME.items():
        if key in name:
            return gbs
    return None


def cuda_times(steps: dict, repeats: int, inner: int, warmup: int = 3) -> dict:
    """Median seconds per step of each candidate, from ``torch.cuda.Event`` pairs
    around ``inner`` consecutive steps, the candidates interleaved in rotating order.

    Args:
        steps (dict): name -> callable (with an optional ``reset`` run before
            each step).
        repeats (int): timed rounds.
        inner (int): steps per round.
        warmup (int): untimed rounds first.

    Returns:
        dict: name -> seconds per step.
    """
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    torch.cuda.synchronize()
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            reset = getattr(steps[n], 'reset', None)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                if reset is not None:
                    reset()
                steps[n]()
            end.record()
            end.synchronize()
            times[n].append(start.elapsed_time(end) / 1e3 / inner)
    return {n: statistics.median(v) for n, v in times.items()}


def make_cuda_step(module: nn.Module, x: torch.Tensor,
                   gout: torch.Tensor) -> Callable[[], None]:
    """Like :func:`make_step` with the fused implementation; half-precision inputs run
    under ``torch.autocast`` (the parameters stay float32, as in AMP training)."""
    step = make_step(module, FUSED_IMPL, x, gout)
    if x.dtype == torch.float32:
        return step

    def amp_step():
        with torch.autocast('cuda', dtype=x.dtype):
            step()

    amp_step.reset = step.reset
    return amp_step


def bench_activations_cuda(opts: BenchmarkOptions, peak: Optional[float]) -> tuple:
    """Part 1 on CUDA, per dtype and layout; prints each table.

    Args:
        opts (BenchmarkOptions): ``device``, ``batch``, ``dtypes``, ``inner``,
            ``repeats``/``quick``.
        peak (float, optional): the peak bandwidth in GB/s.

    Returns:
        tuple[list, list]: ``[(target text, passed)]`` and the table as dicts.
    """
    repeats = opts.repeats or (5 if opts.quick else 15)
    dev = torch.device(opts.device)
    verdicts, table = [], []
    for dname in opts.dtypes.split(','):
        dtype = DTYPES[dname]
        for layout in ('contiguous', 'channels_last'):
            res = {}  # name -> per-shape seconds
            nbytes = 0
            backend = None
            for C, S in common.STAGES:
                torch.manual_seed(0)
                x = torch.randn(opts.batch, C, S, S, device=dev).to(dtype)
                gout = torch.randn_like(x)
                if layout == 'channels_last':
                    x = x.contiguous(memory_format=torch.channels_last)
                    gout = gout.contiguous(memory_format=torch.channels_last)
                nbytes += fused_pass_bytes(x)
                backend = acon_backend(x, FUSED_IMPL)
                modules = {'nn.ReLU': nn.ReLU(), 'nn.SiLU': nn.SiLU()}
                for name, ctor in LAYERS.items():
                    m = ctor(C).to(dev)
                    with torch.no_grad():
                        for pname, p in m.named_parameters(recurse=False):
                            if pname == 'beta':
                                p.uniform_(0.5, 1.5)
                    modules[name] = m
                steps = {k: make_cuda_step(m, x, gout) for k, m in modules.items()}
                times = cuda_times(steps, repeats, opts.inner)
                for k, t in times.items():
                    res.setdefault(k, []).append(t)
                del steps, modules, x, gout
            silu = sum(res['nn.SiLU'])
            print(f'\nCUDA activations {dname} {layout}, batch {opts.batch} (fused backend: '
                  f'{backend}); time = sum over the shapes of the median fwd+bwd time')
            print(f'{"layer":<10} {"time ms":>8} {"/SiLU":>6} {"GB/s":>8} {"of peak":>8}  '
                  'target')
            for name, ts in res.items():
                total = sum(ts)
                ratio = total / silu
                gbs = nbytes / total / 1e9
                frac = gbs / peak if peak else None
                target = ''
                if name in CUDA_TARGETS:
                    tt = CUDA_TARGETS[name]
                    ok = ratio <= tt
                    text = f'CUDA {dname} {layout} {name}: {ratio:.2f}x SiLU (<= {tt})'
                    if name in CUDA_BW_LAYERS:
                        ok_bw = frac is not None and frac >= CUDA_BW_TARGET
                        text += (f', {gbs:.0f} GB/s = ' +
                                 (f'{frac:.0%}' if frac is not None else 'unknown') +
                                 f' of peak (>= {CUDA_BW_TARGET:.0%})')
                        ok = ok and ok_bw
                    verdicts.append((text, ok))
                    target = 'PASS' if ok else 'FAIL'
                frac_s = f'{frac:8.1%}' if frac is not None else f'{"-":>8}'
                print(f'{name:<10} {total * 1e3:8.3f} {ratio:6.2f} {gbs:8.1f} {frac_s}  '
                      f'{target}')
                table.append(dict(dtype=dname, layout=layout, layer=name, backend=backend
                                  if name not in ('nn.ReLU', 'nn.SiLU') else 'torch',
                                  time_ms=total * 1e3, ratio_silu=ratio, gbs=gbs,
                                  bw_fraction=frac, bytes=nbytes,
                                  per_shape_ms=[t * 1e3 for t in ts]))
    return verdicts, table


def bench_detector_cuda(opts: BenchmarkOptions) -> tuple:
    """Part 2 on CUDA with AMP (float16 autocast, gradient scaler); prints it.

    Args:
        opts (BenchmarkOptions): ``det_size``, ``det_batch``, ``det_repeats``,
            ``quick``.

    Returns:
        tuple[list, dict]: ``[(target text, passed)]`` and the report.
    """
    from ...models.backbones import ResNetACON  # noqa: F401
    size = opts.det_size or (320 if opts.quick else 512)
    repeats = opts.det_repeats or (5 if opts.quick else 15)
    torch.manual_seed(0)
    models = with_compiled({'ReLU': build_retinanet(dict(type='ReLU')).cuda(),
                            'MetaAconC': build_retinanet(dict(type='MetaAconC')).cuda()},
                           opts.compile)
    data = make_det_batch(opts.det_batch, size)
    steps = {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        scaler = torch.amp.GradScaler('cuda')

        def step(model=model, opt=opt, scaler=scaler):
            batch = model.data_preprocessor(copy.deepcopy(data), True)
            with torch.autocast('cuda', dtype=torch.float16):
                losses = model(**batch, mode='loss')
                loss, _ = model.parse_losses(losses)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        steps[name] = step
    times = cuda_times(steps, repeats, inner=1, warmup=3)
    ratio = times['MetaAconC'] / times['ReLU']
    ok = ratio <= CUDA_DETECTOR_TARGET
    print(f'\nRetinaNet-R50 AMP train step on CUDA (batch {opts.det_batch}, {size}x{size}; '
          f'median of {repeats} interleaved steps):')
    for name in models:
        print(f'  {name:<19} {times[name] * 1e3:9.2f} ms')
    compiled = compile_ratios(times)
    for name, r in compiled.items():
        print(f'  {name}: compiled / eager {r:.3f}x')
    print(f'  meta-ACON / ReLU: {ratio:.3f}x (target <= {CUDA_DETECTOR_TARGET})  '
          f'{"PASS" if ok else "FAIL"}')
    return ([(f'CUDA RetinaNet-R50 meta-ACON AMP train step: {ratio:.3f}x ReLU '
              f'(<= {CUDA_DETECTOR_TARGET})', ok)],
            dict(size=size, batch=opts.det_batch, amp='float16',
                 times_ms={k: v * 1e3 for k, v in times.items()}, ratio=ratio,
                 compiled_over_eager=compiled or None))


def benchmark_cuda(opts: BenchmarkOptions) -> int:
    """The GPU benchmark (``--device cuda``): activations, then the detector.

    Args:
        opts (BenchmarkOptions): the options (``batch`` resolved).

    Returns:
        int: the exit status of :func:`finish_report`.
    """
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    peak = peak_bandwidth_gbs(props, opts.peak_gbs)
    peak_s = f'{peak:.0f} GB/s' if peak else 'unknown (pass --peak-gbs)'
    print(f'GPU: {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}; '
          f'peak memory bandwidth {peak_s}')
    verdicts, table = bench_activations_cuda(opts, peak)
    det = None
    if not opts.skip_detector:
        v, det = bench_detector_cuda(opts)
        verdicts += v
    return finish_report(opts, verdicts, dict(device='cuda', gpu=props.name,
                                              torch=torch.__version__, peak_gbs=peak,
                                              batch=opts.batch, activations=table,
                                              detector=det))
