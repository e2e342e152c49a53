"""Benchmark the fused ACON implementation against nn.SiLU, nn.ReLU and the naive formula.

Part 1, the activations of every ACON layer (fused and naive), nn.ReLU and nn.SiLU on
ResNet-50's stage shapes: forward+backward time (ratios to nn.SiLU and to the naive
formula) and saved-tensor bytes; part 2, a RetinaNet-R50 train step with a meta-ACON
vs a ReLU ``ResNetACON`` backbone. On CPU by default; ``--device cuda`` runs the GPU
benchmark (fp32/bf16, contiguous/channels_last, CUDA-event timing, achieved bandwidth
against the GPU's peak, the detector step with AMP). Each part has targets (PASS /
FAIL). What is measured and the targets: :mod:`acon_mm.analysis.benchmark`
(docs/kernels.md, "Benchmark"); this script only parses the arguments.

Usage::

    python tools/analysis_tools/benchmark_acon.py               # full run
    python tools/analysis_tools/benchmark_acon.py --quick       # fewer repeats, smaller
    python tools/analysis_tools/benchmark_acon.py --skip-detector --batch 4
    python tools/analysis_tools/benchmark_acon.py --device cuda --json cuda.json

``--json FILE`` (or ``--out FILE``) writes the results, with every target's text and
PASS (``ok``), as JSON. The exit status is 0 when all targets pass, 1 otherwise (2 for
a wrong option, e.g. ``--device cuda`` without CUDA).
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from acon_mm.analysis.benchmark import (  # noqa: E402
    DEFAULT_BATCH,
    DTYPES,
    BenchmarkOptions,
    run_benchmark,
)


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
    p.add_argument('--compile', action='store_true',
                   help='also time the detector under torch.compile (inductor) beside eager')
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
        args.batch = DEFAULT_BATCH[args.device]
    return args


def main(argv=None):
    return run_benchmark(BenchmarkOptions(**vars(parse_args(argv))))


if __name__ == '__main__':
    sys.exit(main())
