"""What the CPU and the GPU benchmark share: the options, the layers and shapes,
the timing and saved-memory helpers, the RetinaNet-R50 of part 2 and the report
(see :mod:`acon_mm.analysis.benchmark`)."""
import copy
import json
import os
import os.path as osp
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ...models.layers import AconA, AconB, AconC, MetaAconC, SwishBeta
from ...ops import acon_impl

__all__ = [
    'BenchmarkOptions', 'saved_bytes', 'make_step', 'interleaved_times',
    'machine_name', 'build_retinanet', 'make_det_batch', 'finish_report',
    'with_compiled', 'compile_ratios',
    'STAGES', 'LAYERS', 'SEARCHED', 'DTYPES', 'DEFAULT_BATCH', 'FUSED_IMPL'
]

#: (channels, height = width) of the activations of ResNet-50's four stages
STAGES = ((64, 56), (128, 28), (256, 14), (512, 7))
#: layer name -> constructor from the number of channels
LAYERS: Dict[str, Callable[[int], nn.Module]] = {
    'AconA': lambda c: AconA(c),
    'AconB': lambda c: AconB(c),
    'AconC': lambda c: AconC(c),
    'MetaAconC': lambda c: MetaAconC(c),
    'SwishBeta': lambda c: SwishBeta(),
}
#: searched activations (unfused: their torch ops as the expression compiles) -> expression
SEARCHED = {'max(x,σ(x))': 'max(x, sigmoid(x))', 'xσ(βx)': 'x*sigmoid(beta*x)'}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: batch size of the activations by device
DEFAULT_BATCH = {'cpu': 8, 'cuda': 64}
#: the :func:`acon_mm.ops.acon_impl` name of what the tables call ``fused``
FUSED_IMPL = 'auto'


@dataclass
class BenchmarkOptions:
    """What to measure; the fields are ``benchmark_acon.py``'s options.

    Args:
        device (str): ``'cpu'`` or ``'cuda'`` (the GPU benchmark).
        batch (int, optional): batch size of the activations (default
            :data:`DEFAULT_BATCH`: 8, on CUDA 64).
        repeats (int, optional): timed rounds per shape (default 15, quick 5).
        quick (bool): fewer repeats, smaller detector images.
        threads (int, optional): ``torch.set_num_threads``.
        skip_detector (bool): activations only.
        det_size (int, optional): detector image size (default 320, quick 224;
            on CUDA 512, quick 320).
        det_batch (int): detector batch size.
        det_repeats (int, optional): timed detector steps per model (default 5,
            quick 3; on CUDA 15, quick 5).
        stat (str): ``'median'`` or ``'min'`` over the interleaved repeats (CPU).
        out (str, optional): write the results as JSON here.
        peak_gbs (float, optional): CUDA: peak memory bandwidth in GB/s.
        dtypes (str): CUDA: comma-separated dtypes among :data:`DTYPES`.
        inner (int): CUDA: steps per timed round (one pair of CUDA events).
        compile (bool): the detector also as ``torch.compile`` (inductor) of
            each model, timed beside eager (the first calls, which compile, are
            warm-up).
    """
    device: str = 'cpu'
    batch: Optional[int] = None
    repeats: Optional[int] = None
    quick: bool = False
    threads: Optional[int] = None
    skip_detector: bool = False
    det_size: Optional[int] = None
    det_batch: int = 2
    det_repeats: Optional[int] = None
    stat: str = 'median'
    out: Optional[str] = None
    peak_gbs: Optional[float] = None
    dtypes: str = 'fp32,bf16'
    inner: int = 10
    compile: bool = False


def with_compiled(models: dict, enabled: bool) -> dict:
    """``models`` plus, if ``enabled``, ``'<name> compiled'``: ``torch.compile``
    (inductor) of a copy of each (same weights; attributes such as
    ``data_preprocessor`` and ``parse_losses`` reach the original module)."""
    if not enabled:
        return dict(models)
    out = dict(models)
    for name, model in models.items():
        out[f'{name} compiled'] = torch.compile(copy.deepcopy(model))
    return out


def compile_ratios(times: dict) -> Dict[str, float]:
    """``{name: compiled time / eager time}`` for every name timed both ways."""
    return {n: times[f'{n} compiled'] / t for n, t in times.items()
            if f'{n} compiled' in times}


# --------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------
def saved_bytes(fn: Callable, *args, module: Optional[nn.Module] = None) -> int:
    """Bytes of the distinct storages autograd saves for backward while running fn.

    Storages of ``module``'s parameters are not counted: they exist anyway and are
    not activation memory.

    Args:
        fn (callable): what to run (its output is dropped).
        *args: its arguments.
        module (nn.Module, optional): whose parameters not to count.

    Returns:
        int: the bytes.
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


def make_step(module: nn.Module, impl: str, x: torch.Tensor,
              gout: torch.Tensor) -> Callable[[], None]:
    """One forward+backward of ``module``; ``step.reset`` (untimed) drops the gradients
    of the previous step, as ``optimizer.zero_grad()`` (``set_to_none=True``, PyTorch's
    and mmengine's default) does between training iterations.

    Args:
        module (nn.Module): the layer.
        impl (str): the :func:`acon_mm.ops.acon_impl` it runs under.
        x (Tensor): its input (a leaf copy is taken).
        gout (Tensor): the output gradient.

    Returns:
        callable: the step, with a ``reset`` attribute.
    """
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
    """Seconds per call of each step, the steps interleaved in rotating order.

    Args:
        steps (dict): name -> callable (with an optional untimed ``reset``).
        repeats (int): timed rounds.
        warmup (int): untimed rounds first.
        stat (str): ``'median'`` or ``'min'`` over the rounds.

    Returns:
        dict: name -> seconds.
    """
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
    """CPU model, logical CPUs, load average, torch version and threads."""
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
# part 2: RetinaNet-R50 train step
# --------------------------------------------------------------------------
def build_retinanet(acon_cfg: dict) -> nn.Module:
    """mmdet's RetinaNet-R50 (``retinanet_r50_fpn_1x_coco.py``) with a ``ResNetACON``
    backbone of activation ``acon_cfg``, no pretrained weights, in train mode."""
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


def make_det_batch(batch: int, size: int, seed: int = 0) -> dict:
    """A random detection batch (uint8 images of ``size`` x ``size``, 3 boxes each)
    as the data preprocessor takes it: ``dict(inputs=..., data_samples=...)``."""
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


def finish_report(opts: BenchmarkOptions, verdicts: List[Tuple[str, bool]],
                  report: dict) -> int:
    """Print the targets, write ``report`` (plus the targets) to ``opts.out`` as
    JSON; the exit status: 0 only if every target passes.

    Args:
        opts (BenchmarkOptions): ``out``.
        verdicts (list[tuple[str, bool]]): ``(target text, passed)``.
        report (dict): the results.

    Returns:
        int: 0 if every target passed, else 1.
    """
    print('\nTargets:')
    for text, ok in verdicts:
        print(f'  {"PASS" if ok else "FAIL"}  {text}')
    if opts.out:
        os.makedirs(osp.dirname(osp.abspath(opts.out)), exist_ok=True)
        with open(opts.out, 'w') as f:
            json.dump(dict(report, targets=[dict(text=t, ok=o) for t, o in verdicts]),
                      f, indent=2)
    return 0 if all(ok for _, ok in verdicts) else 1
