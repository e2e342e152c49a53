"""Benchmark the fused ACON implementation against nn.SiLU, nn.ReLU and the naive
formula: the logic of ``tools/analysis_tools/benchmark_acon.py``.

Part 1, activations: for every layer (AconA, AconB, AconC, MetaAconC with its switch
generator, SwishBeta) with the fused (``acon_impl('auto')``) and the naive
implementation, and for nn.ReLU / nn.SiLU, on the activation shapes of ResNet-50's
four stages (bottleneck widths, batch 8 by default: 64x56x56, 128x28x28, 256x14x14,
512x7x7), it measures

* forward+backward time: median (``stat='min'``: minimum) over interleaved repeats
  (every candidate runs once per round, in a rotating order, so machine noise hits
  all alike; nn.ReLU, nn.SiLU and the fused layers form one group, the naive
  formulas a second one run right after it, because their many large temporaries
  leave the allocator and caches cold for whichever candidate runs next);
* saved-tensor bytes: the distinct storages autograd keeps for backward
  (``torch.autograd.graph.saved_tensors_hooks``), as a multiple of the input's bytes.

On CPU the fused layers run the C++ extension (``acon_mm/ops/csrc``, built on first
use; without a compiler, the PyTorch fused function). Times are summed over the four
shapes (each shape weighs as it does in a network) and printed as ratios to nn.SiLU
and to the naive formula, with PASS/FAIL per target (:data:`TARGETS`): ACON-C and
SwishBeta <= 1.5x SiLU and saved <= 1.1x the input; meta-ACON-C <= 1.6x SiLU (switch
generator included) and saved <= 1.2x.

Part 2, a whole RetinaNet-R50 train step (mmdet's ``retinanet_r50_fpn_1x_coco.py``,
small random images, CPU, forward+backward+SGD step) with the backbone ``ResNetACON``
built by the same code with ``acon_cfg=dict(type='MetaAconC')`` vs
``dict(type='ReLU')``; target <= 1.15x (:data:`DETECTOR_TARGET`).

On a GPU (``device='cuda'``), per layer (fused AconC, SwishBeta, MetaAconC, AconA,
AconB; nn.SiLU, nn.ReLU), for float32 and bfloat16 (``dtypes``; bfloat16 runs under
``torch.autocast``) and contiguous and channels_last inputs, on the same four shapes
(batch 64 by default):

* forward+backward time, timed with ``torch.cuda.Event`` (warm-up, then the median
  over interleaved rounds of ``inner`` steps each), summed over the shapes, and its
  ratio to nn.SiLU;
* achieved bandwidth: the bytes of the minimal fused pass, ``5 |x|``
  (:func:`fused_pass_bytes`) summed over the shapes, divided by the time, in GB/s and
  as a fraction of the GPU's peak bandwidth (:func:`peak_bandwidth_gbs`);
* targets (:data:`CUDA_TARGETS`): ACON-C and SwishBeta <= 1.2x SiLU and >= 70 % of
  the peak bandwidth, meta-ACON-C <= 1.5x SiLU; the RetinaNet-R50 train step (as
  above, on the GPU with AMP: float16 autocast and a gradient scaler) meta-ACON /
  ReLU <= 1.10.

:func:`run_benchmark` runs it all from :class:`BenchmarkOptions` (the tool's
options), prints the tables and the targets, writes the JSON report (``out``) and
returns the exit status: 0 when every target passes, 1 otherwise.

The CPU benchmark is :mod:`.cpu`'s, the GPU one :mod:`.cuda`'s, what they share
(options, layers, shapes, timing, the detector, the report) :mod:`.common`'s.
"""
from dataclasses import replace

import torch

from .common import *  # noqa: F401,F403
from .common import DEFAULT_BATCH, DTYPES, BenchmarkOptions
from .common import __all__ as _common
from .cpu import *  # noqa: F401,F403
from .cpu import __all__ as _cpu
from .cpu import benchmark_cpu
from .cuda import *  # noqa: F401,F403
from .cuda import __all__ as _cuda
from .cuda import benchmark_cuda

__all__ = ['run_benchmark'] + _common + _cpu + _cuda


def run_benchmark(opts: BenchmarkOptions) -> int:
    """Run the benchmark as ``tools/analysis_tools/benchmark_acon.py`` does.

    Sets ``torch.set_num_threads(opts.threads)`` if given, then runs
    :func:`benchmark_cuda` (``device='cuda'``) or :func:`benchmark_cpu`.

    Args:
        opts (BenchmarkOptions): the options; ``batch=None`` becomes
            :data:`DEFAULT_BATCH` of the device.

    Returns:
        int: 0 when every target passes, 1 otherwise.

    Raises:
        RuntimeError: ``device='cuda'`` without CUDA.
        ValueError: an unknown device or dtype.
    """
    if opts.device not in DEFAULT_BATCH:
        raise ValueError(f'device {opts.device!r}: expected one of {list(DEFAULT_BATCH)}')
    if opts.device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(
                f'CUDA is not available here (torch {torch.__version__}, built with '
                f'CUDA {torch.version.cuda})')
        bad = [d for d in opts.dtypes.split(',') if d not in DTYPES]
        if bad:
            raise ValueError(f'dtypes: unknown {bad}; valid: {list(DTYPES)}')
    if opts.batch is None:
        opts = replace(opts, batch=DEFAULT_BATCH[opts.device])
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.device == 'cuda':
        return benchmark_cuda(opts)
    return benchmark_cpu(opts)
