"""Benchmark the fused ACON implementation against nn.SiLU, nn.ReLU and the naive formula.

Part 1, activations: for every layer (AconA, AconB, AconC, MetaAconC with its switch
generator, SwishBeta) with the fused and the naive implementation, and for nn.ReLU /
nn.SiLU, on the activation shapes of ResNet-50's four stages (bottleneck widths,
batch 8 by default: 64x56x56, 128x28x28, 256x14x14, 512x7x7), it measures

* forward+backward time: median (``--stat min``: minimum) over interleaved repeats
  (every candidate runs once per round, in a rotating order, so machine noise hits
  all alike; nn.ReLU, nn.SiLU and the fused layers form one group, the naive
  formulas a second one run right after it, because their many large temporaries
  leave the allocator and caches cold for whichever candidate runs next);
* saved-tensor bytes: the distinct storages autograd keeps for backward
  (``torch.autograd.graph.saved_tensors_hooks``), as a multiple of the input's bytes.

On CPU the fused layers run the C++ extension (``acon_mm/ops/csrc``, built on first
use; without a compiler, the PyTorch fused function). Times are summed over the four shapes (each shape weighs as it does in a network) and
printed as ratios to nn.SiLU and to the naive formula, with PASS/FAIL per target:
ACON-C and SwishBeta <= 1.5x SiLU and saved <= 1.1x the input; meta-ACON-C
<= 1.6x SiLU (switch generator included) and saved <= 1.2x.

Part 2, a whole RetinaNet-R50 train step (mmdet's ``retinanet_r50_fpn_1x_coco.py``,
small random images, CPU, forward+backward+SGD step) with the backbone ``ResNetACON``
built by the same code with ``acon_cfg=dict(type='MetaAconC')`` vs
``dict(type='ReLU')``; target <= 1.15x.

On a GPU (``--device cuda``; the CPU run above is the default and unchanged), per
layer (fused AconC, SwishBeta, MetaAconC, AconA, AconB; nn.SiLU, nn.ReLU), for float32
and bfloat16 (``--dtypes``; bfloat16 runs under ``torch.autocast``) and contiguous and
channels_last inputs, on the same four shapes (batch 64 by default):

* forward+backward time, timed with ``torch.cuda.Event`` (warm-up, then the median
  over interleaved rounds of ``--inner`` steps each), summed over the shapes, and its
  ratio to nn.SiLU;
* achieved bandwidth: the bytes of the minimal fused pass, ``5 |x|`` (forward reads
  ``x`` and writes ``y``, backward reads ``x`` and ``gout`` and writes ``dx``; ``|x|``
  the input's bytes) summed over the shapes, divided by the time, in GB/s and as a
  fraction of the GPU's peak bandwidth (``--peak-gbs``, else ``2 x memory clock x bus
  width`` from ``torch.cuda.get_device_properties()`` where torch exposes them, else
  a table of known GPUs, H200: 4800 GB/s);
* targets: ACON-C and SwishBeta <= 1.2x SiLU and >= 70 % of the peak bandwidth,
  meta-ACON-C <= 1.5x SiLU; the RetinaNet-R50 train step (as above, on the GPU with
  AMP: float16 autocast and a gradient scaler) meta-ACON / ReLU <= 1.10.

Usage::

    python tools/analysis_tools/benchmark_acon.py               # full run
    python tools/analysis_tools/benchmark_acon.py --quick       # fewer repeats, smaller
    python tools/analysis_tools/benchmark_acon.py --skip-detector --batch 4
    python tools/analysis_tools/benchmark_acon.py --device cuda --json cuda.json

``--json FILE`` (or ``--out FILE``) writes the results, with every target's text and
PASS (``ok``), as JSON. The exit status is 0 when all targets pass, 1 otherwise.
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import acon_mm  # noqa: E402,F401
from acon_mm.models.layers import AconA, AconB, AconC, MetaAconC, SwishBeta  # noqa: E402
from acon_mm.ops import acon_backend, acon_impl, cpu_ext_error, load_cpu_ext  # noqa: E402

STAGES = ((64, 56), (128, 28), (256, 14), (512, 7))
LAYERS = {
    'AconA': lambda c: AconA(c),
    'AconB': lambda c: AconB(c),
    'AconC': lambda c: AconC(c),
    'MetaAconC': lambda c: MetaAconC(c),
    'SwishBeta': lambda c: SwishBeta(),
}
# layer -> (max time ratio to nn.SiLU, max saved bytes / input bytes)
TARGETS = {'AconC': (1.5, 1.1), 'SwishBeta': (1.5, 1.1), 'MetaAconC': (1.6, 1.2)}
DETECTOR_TARGET = 1.15
# CUDA: layer -> max time ratio to nn.SiLU; min fraction of the peak bandwidth
CUDA_TARGETS = {'AconC': 1.2, 'SwishBeta': 1.2, 'MetaAconC': 1.5}
CUDA_BW_TARGET = 0.7
CUDA_BW_LAYERS = ('AconC', 'SwishBeta')
CUDA_DETECTOR_TARGET = 1.10
#: peak memory bandwidth (GB/s) of GPUs whose properties do not give it
PEAK_GBS_BY_NAME = {'H200': 4800.0, 'H100': 3350.0}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                   help='cpu (default) or cuda (the GPU benchmark)')
    p.add_argument('--batch', type=int, default=None,
                   help='batch size of the activations (default 8, on CUDA 64)')
    p.add_argument('--repeats', type=int, default=None,
                   help='timed rounds per shape (default 15, --quick 5)')
    p.add_argument('--quick', action='store_true',
                   help='fewer repeats, smaller detector images (a quick check)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--skip-detector', action='store_true', help='activations only')
    p.add_argument('--det-size', type=int, default=None,
                   help='detector image size (default 320, --quick 224)')
    p.add_argument('--det-batch', type=int, default=2, help='detector batch size')
    p.add_argument('--det-repeats', type=int, default=None,
                   help='timed detector steps per model (default 5, --quick 3)')
    p.add_argument('--stat', choices=('median', 'min'), default='median',
                   help='statistic over the interleaved repeats (min: the least '
                   'disturbed run, for a busy shared machine)')
    p.add_argument('--out', '--json', dest='out', default=None, metavar='FILE',
                   help='write the results as JSON here')
    p.add_argument('--peak-gbs', type=float, default=None,
                   help='CUDA: peak memory bandwidth in GB/s (default: from the device '
                   'properties, else known GPUs)')
    p.add_argument('--dtypes', default='fp32,bf16',
                   help='CUDA: comma-separated dtypes among fp32, bf16, fp16')
    p.add_argument('--inner', type=int, default=10,
                   help='CUDA: steps per timed round (one pair of CUDA events)')
    args = p.parse_args(argv)
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            p.error('--device cuda: CUDA is not available here (torch '
                    f'{torch.__version__}, built with CUDA {torch.version.cuda}); run it on '
                    'a machine with a GPU and a CUDA build of torch')
        bad = [d for d in args.dtypes.split(',') if d not in DTYPES]
        if bad:
            p.error(f'--dtypes: unknown {bad}; valid: {list(DTYPES)}')
    if args.batch is None:
        args.batch = 64 if args.device == 'cuda' else 8
    return args


# --------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------
def saved_bytes(fn, *args, module: nn.Module = None) -> int:
    """Bytes of the distinct storages autograd saves for backward while running fn.

    Storages of ``module``'s parameters are not counted: they exist anyway and are
    not activation memory.
    """
    storages = {}
    params = set()
    if module is not None:
        params = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[(s.data_ptr(), s.device)] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    del out
    return sum(storages.values())


def make_step(module: nn.Module, impl: str, x: torch.Tensor, gout: torch.Tensor):
    """One forward+backward of ``module``; ``step.reset`` (untimed) drops the gradients
    of the previous step, as ``optimizer.zero_grad()`` (``set_to_none=True``, PyTorch's
    and mmengine's default) does between training iterations."""
    leaf = x.detach().requires_grad_()
    params = list(module.parameters())

    def reset():
        leaf.grad = None
        for p in params:
            p.grad = None

    def step():
        with acon_impl(impl):
            y = module(leaf)
        y.backward(gout)

    step.reset = reset
    return step


def interleaved_times(steps: dict, repeats: int, warmup: int = 2,
                       stat: str = 'median') -> dict:
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            reset = getattr(steps[n], 'reset', None)
            if reset is not None:
                reset()
            t0 = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t0)
    reduce = min if stat == 'min' else statistics.median
    return {n: reduce(v) for n, v in times.items()}


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = ', load average %.1f' % os.getloadavg()[0]
    except (OSError, AttributeError):
        load = ''
    return (f'{cpu}, {os.cpu_count()} logical CPUs{load}, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads)')


# --------------------------------------------------------------------------
# part 1: activations
# --------------------------------------------------------------------------
def bench_activations(args) -> dict:
    repeats = args.repeats or (5 if args.quick else 15)
    torch.manual_seed(0)
    results = {}  # (layer, impl) -> {'time': [per shape], 'saved': [per shape]}
    rows = []
    for C, S in STAGES:
        x = torch.randn(args.batch, C, S, S)
        gout = torch.randn_like(x)
        in_bytes = x.numel() * x.element_size()
        steps, modules = {}, {}
        for name, m in (('nn.ReLU', nn.ReLU()), ('nn.SiLU', nn.SiLU())):
            modules[(name, '-')] = m
        for name, ctor in LAYERS.items():
            m = ctor(C)
            with torch.no_grad():  # a realistic operating point, not the init
                for pname, p in m.named_parameters(recurse=False):
                    if pname == 'beta':
                        p.uniform_(0.5, 1.5)
            for impl in ('fused', 'naive'):
                modules[(name, impl)] = m
        for key, m in modules.items():
            steps[key] = make_step(m, key[1] if key[1] != '-' else 'naive', x, gout)
        # Two interleaved groups: the naive formulas allocate and free many large
        # temporaries, which leaves the allocator and caches cold for whatever runs
        # next; interleaved with the others they would slow their successor down.
        times = interleaved_times({k: v for k, v in steps.items() if k[1] != 'naive'},
                                  repeats, stat=args.stat)
        times.update(interleaved_times({k: v for k, v in steps.items() if k[1] == 'naive'},
                                       repeats, stat=args.stat))
        for key, m in modules.items():
            impl = key[1] if key[1] != '-' else 'naive'
            leaf = x.detach().requires_grad_()
            with acon_impl(impl):
                sb = saved_bytes(m, leaf, module=m)
            res = results.setdefault(key, {'time': [], 'saved': []})
            res['time'].append(times[key])
            res['saved'].append(sb / in_bytes)
        rows.append((C, S, times))
        print(f'  {args.batch}x{C}x{S}x{S}: SiLU {times[("nn.SiLU", "-")] * 1e3:.2f} ms, '
              f'ACON-C fused {times[("AconC", "fused")] * 1e3:.2f} ms, '
              f'naive {times[("AconC", "naive")] * 1e3:.2f} ms', flush=True)
    return results


def report_activations(results: dict, args) -> tuple:
    silu = results[('nn.SiLU', '-')]
    silu_total = sum(silu['time'])
    shapes = ' '.join(f'{C}x{S}x{S}' for C, S in STAGES)
    print(f'\nActivations, batch {args.batch}, shapes {shapes}; time = sum over the '
          f'shapes of the {args.stat} forward+backward time')
    hdr = (f'{"layer":<10} {"impl":<6} {"time ms":>8} {"/SiLU":>6} {"/naive":>7} '
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
        print(f'{name:<10} {impl:<6} {total * 1e3:8.2f} {r_silu:6.2f} {r_naive_s:>7} '
              f'{per_shape:>24} {saved:9.2f}  {target}')
        table.append(dict(layer=name, impl=impl, time_ms=total * 1e3, ratio_silu=r_silu,
                          ratio_naive=r_naive if naive else None,
                          per_shape_ratio_silu=[t / s for t, s in
                                                zip(res['time'], silu['time'])],
                          saved_over_input=saved))
    return verdicts, table


# --------------------------------------------------------------------------
# part 2: RetinaNet-R50 train step
# --------------------------------------------------------------------------
def build_retinanet(acon_cfg: dict):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules(init_default_scope=True)
    import mmdet
    # mmdet's installed config (what 'mmdet::retinanet/...' names in a config's _base_)
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
                    'retinanet_r50_fpn_1x_coco.py')
    cfg = Config.fromfile(path)
    model_cfg = copy.deepcopy(cfg.model)
    backbone = dict(model_cfg.backbone)
    backbone.pop('init_cfg', None)  # no pretrained download
    backbone.update(type='ResNetACON', acon_cfg=acon_cfg)
    model_cfg.backbone = backbone
    model = MODELS.build(model_cfg)
    model.train()
    return model


def make_det_batch(batch: int, size: int, seed: int = 0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append((torch.rand(3, size, size, generator=g) * 255).to(torch.uint8))
        n = 3
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 16
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size), scale_factor=(1., 1.),
                                        batch_input_shape=(size, size)))
        s.gt_instances = InstanceData(bboxes=torch.cat([xy, (xy + wh).clamp(max=size)], 1),
                                      labels=torch.randint(0, 80, (n, ), generator=g))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def bench_detector(args) -> tuple:
    from acon_mm.models.backbones import ResNetACON  # noqa: F401  (fails clearly if missing)
    size = args.det_size or (224 if args.quick else 320)
    repeats = args.det_repeats or (3 if args.quick else 5)
    torch.manual_seed(0)
    models = {'ReLU': build_retinanet(dict(type='ReLU')),
              'MetaAconC': build_retinanet(dict(type='MetaAconC'))}
    data = make_det_batch(args.det_batch, size)
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

        saved[name] = saved_bytes(fwd, module=model)
    times = interleaved_times(steps, repeats, warmup=1, stat=args.stat)
    ratio = times['MetaAconC'] / times['ReLU']
    print(f'\nRetinaNet-R50 train step (batch {args.det_batch}, {size}x{size}, '
          f'ResNetACON backbone, same code; {args.stat} of {repeats} interleaved steps):')
    for name in models:
        print(f'  {name:<10} {times[name] * 1e3:9.1f} ms   saved tensors '
              f'{saved[name] / 2**20:8.1f} MiB')
    ok = ratio <= DETECTOR_TARGET
    print(f'  meta-ACON / ReLU: {ratio:.3f}x (target <= {DETECTOR_TARGET})  '
          f'{"PASS" if ok else "FAIL"}')
    return ([(f'RetinaNet-R50 meta-ACON train step: {ratio:.3f}x ReLU '
              f'(<= {DETECTOR_TARGET})', ok)],
            dict(size=size, batch=args.det_batch, times_ms={k: v * 1e3
                                                            for k, v in times.items()},
                 saved_mib={k: v / 2**20 for k, v in saved.items()}, ratio=ratio))


# --------------------------------------------------------------------------
# CUDA (--device cuda)
# --------------------------------------------------------------------------
def fused_pass_bytes(x: torch.Tensor) -> int:
    """Bytes moved by the minimal fused forward+backward pass over ``x``: forward reads
    ``x`` and writes ``y``, backward reads ``x`` and ``gout`` and writes ``dx``, i.e.
    ``5 x.numel() x.element_size()`` (parameters and per-channel sums are negligible)."""
    return 5 * x.numel() * x.element_size()


def peak_bandwidth_gbs(props, override: float = None):
    """Peak memory bandwidth in GB/s: ``override`` (``--peak-gbs``), else
    ``2 x memory clock (kHz) x bus width (bits) / 8`` from the device properties where
    torch exposes them, else :data:`PEAK_GBS_BY_NAME` by device name, else ``None``."""
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
    around ``inner`` consecutive steps, the candidates interleaved in rotating order."""
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


def make_cuda_step(module: nn.Module, x: torch.Tensor, gout: torch.Tensor):
    """Like :func:`make_step` with the fused implementation; half-precision inputs run
    under ``torch.autocast`` (the parameters stay float32, as in AMP training)."""
    step = make_step(module, 'fused', x, gout)
    if x.dtype == torch.float32:
        return step

    def amp_step():
        with torch.autocast('cuda', dtype=x.dtype):
            step()

    amp_step.reset = step.reset
    return amp_step


def bench_activations_cuda(args, peak) -> tuple:
    repeats = args.repeats or (5 if args.quick else 15)
    dev = torch.device(args.device)
    verdicts, table = [], []
    for dname in args.dtypes.split(','):
        dtype = DTYPES[dname]
        for layout in ('contiguous', 'channels_last'):
            res = {}  # name -> per-shape seconds
            nbytes = 0
            backend = None
            for C, S in STAGES:
                torch.manual_seed(0)
                x = torch.randn(args.batch, C, S, S, device=dev).to(dtype)
                gout = torch.randn_like(x)
                if layout == 'channels_last':
                    x = x.contiguous(memory_format=torch.channels_last)
                    gout = gout.contiguous(memory_format=torch.channels_last)
                nbytes += fused_pass_bytes(x)
                backend = acon_backend(x, 'fused')
                modules = {'nn.ReLU': nn.ReLU(), 'nn.SiLU': nn.SiLU()}
                for name, ctor in LAYERS.items():
                    m = ctor(C).to(dev)
                    with torch.no_grad():
                        for pname, p in m.named_parameters(recurse=False):
                            if pname == 'beta':
                                p.uniform_(0.5, 1.5)
                    modules[name] = m
                steps = {k: make_cuda_step(m, x, gout) for k, m in modules.items()}
                times = cuda_times(steps, repeats, args.inner)
                for k, t in times.items():
                    res.setdefault(k, []).append(t)
                del steps, modules, x, gout
            silu = sum(res['nn.SiLU'])
            print(f'\nCUDA activations {dname} {layout}, batch {args.batch} (fused backend: '
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


def bench_detector_cuda(args) -> tuple:
    from acon_mm.models.backbones import ResNetACON  # noqa: F401
    size = args.det_size or (320 if args.quick else 512)
    repeats = args.det_repeats or (5 if args.quick else 15)
    torch.manual_seed(0)
    models = {'ReLU': build_retinanet(dict(type='ReLU')).cuda(),
              'MetaAconC': build_retinanet(dict(type='MetaAconC')).cuda()}
    data = make_det_batch(args.det_batch, size)
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
    print(f'\nRetinaNet-R50 AMP train step on CUDA (batch {args.det_batch}, {size}x{size}; '
          f'median of {repeats} interleaved steps):')
    for name in models:
        print(f'  {name:<10} {times[name] * 1e3:9.2f} ms')
    print(f'  meta-ACON / ReLU: {ratio:.3f}x (target <= {CUDA_DETECTOR_TARGET})  '
          f'{"PASS" if ok else "FAIL"}')
    return ([(f'CUDA RetinaNet-R50 meta-ACON AMP train step: {ratio:.3f}x ReLU '
              f'(<= {CUDA_DETECTOR_TARGET})', ok)],
            dict(size=size, batch=args.det_batch, amp='float16',
                 times_ms={k: v * 1e3 for k, v in times.items()}, ratio=ratio))


def main_cuda(args) -> int:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    peak = peak_bandwidth_gbs(props, args.peak_gbs)
    peak_s = f'{peak:.0f} GB/s' if peak else 'unknown (pass --peak-gbs)'
    print(f'GPU: {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}; '
          f'peak memory bandwidth {peak_s}')
    verdicts, table = bench_activations_cuda(args, peak)
    det = None
    if not args.skip_detector:
        v, det = bench_detector_cuda(args)
        verdicts += v
    return finish(args, verdicts, dict(device='cuda', gpu=props.name,
                                       torch=torch.__version__, peak_gbs=peak,
                                       batch=args.batch, activations=table, detector=det))


def finish(args, verdicts, report: dict) -> int:
    """Print the targets, write ``report`` (plus the targets) to ``--out`` as
    JSON; the exit status: 0 only if every target passes."""
    print('\nTargets:')
    for text, ok in verdicts:
        print(f'  {"PASS" if ok else "FAIL"}  {text}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(report, targets=[dict(text=t, ok=o) for t, o in verdicts]),
                      f, indent=2)
    return 0 if all(ok for _, ok in verdicts) else 1


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda':
        return main_cuda(args)
    ext = load_cpu_ext()
    print(f'machine: {machine_name()}')
    if ext is None:
        detail = f' (no C++ extension: {cpu_ext_error()})'
    else:
        detail = (f' (C++ extension {osp.basename(osp.dirname(ext.__file__))}, '
                  f'{ext.VECTOR_WIDTH} floats per vector)')
    print(f'fused backend on CPU: {acon_backend(torch.zeros(1, 1, 1, 1), "fused")}{detail}')
    print('Note: ratios are measured in one run; a shared, busy machine makes them noisy '
          '(there, --threads 1 avoids waiting on descheduled OpenMP workers).')
    results = bench_activations(args)
    verdicts, table = report_activations(results, args)
    det = None
    if not args.skip_detector:
        v, det = bench_detector(args)
        verdicts += v
    return finish(args, verdicts, dict(device='cpu', machine=machine_name(),
                                       batch=args.batch, activations=table, detector=det))


if __name__ == '__main__':
    sys.exit(main())
