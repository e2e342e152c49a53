#!/usr/bin/env python
"""Draw the ACON family and its first derivatives, as the paper's figures.

    python tools/analysis_tools/plot_acon_curves.py [--out-dir DIR]

Writes ``acon_curves.png`` (ACON-A, ACON-B, ACON-C at several beta and ACON-C at
several p1/p2; top row f(x), bottom row df/dx) and ``acon_curves.csv`` (every
plotted point) to ``--out-dir`` (default ``work_dirs/analysis/curves``).
"""
import argparse
import math
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from acon_mm.analysis import DEFAULT_OUT_ROOT, plot_acon_curves  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out-dir', default=osp.join(DEFAULT_OUT_ROOT, 'curves'),
                        help='output directory (default: %(default)s)')
    parser.add_argument('--betas', type=float, nargs='+',
                        default=[0.0, 0.5, 1.0, 2.0, 10.0, math.inf],
                        help='switching factors to draw; "inf" draws the max '
                        '(default: %(default)s)')
    parser.add_argument('--x-range', type=float, nargs=2, default=[-6.0, 6.0],
                        metavar=('XMIN', 'XMAX'),
                        help='the x axis of every plot (default: %(default)s)')
    parser.add_argument('--dpi', type=int, default=120,
                        help='resolution of the PNG files (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.x_range[0] >= args.x_range[1]:
        parser.error(f'--x-range: XMIN must be < XMAX, got {args.x_range}')
    if any(b < 0 or math.isnan(b) for b in args.betas):
        parser.error(f'--betas must be >= 0, got {args.betas}')
    return args


def main(argv=None):
    args = parse_args(argv)
    files = plot_acon_curves(args.out_dir, betas=args.betas,
                             x_range=tuple(args.x_range), dpi=args.dpi)
    print(f'ACON curves: {files["png"]}\npoints:      {files["csv"]}')
    return files


if __name__ == '__main__':
    main()
