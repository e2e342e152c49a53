#!/usr/bin/env python
"""Parameters and FLOPs of ACON models beside their ReLU baselines.

    python tools/analysis_tools/get_flops.py CONFIG [CONFIG ...] \\
        [--shape H W] [--out-dir DIR]

Counts with mmengine's analyzer (mmengine.analysis), not a hand-written
counter. For every CONFIG it also builds the ReLU baseline: the same config with
every ACON ``acon_cfg``/``act_cfg`` (backbone, neck, head) replaced by
``dict(type='ReLU')``, i.e. the same backbone code with the activation alone
changed. Columns:

* FLOPs: mmengine.analysis.get_model_complexity_info as is (multiply-adds of
  convs, linear, norms, pooling, upsampling). It ignores elementwise ops, so
  ACON-C's cost does not show there; meta-ACON's switch generator (1x1 convs
  and BNs) does.
* FLOPs+ew: mmengine's FlopAnalyzer with op handles for the elementwise ops
  too (1 FLOP per element for add/mul/sub/sigmoid/relu/..., in every layer of
  both models; ACON traced through its plain formula: 6 ops per element, ReLU 1).
* ACON: the share of the ACON modules themselves (parameters and FLOPs).

The model is the network forward (backbone, neck, head; no post-processing)
of one image of --shape (default: the test pipeline's Resize scale, padded to
the data preprocessor's size divisor). Writes flops.md/.csv/.json to --out-dir
(default work_dirs/analysis/flops).
"""
import argparse
import copy
import csv
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import torch  # noqa: E402

import acon_mm  # noqa: E402,F401
from acon_mm.analysis import (  # noqa: E402
    DEFAULT_OUT_ROOT,
    build_model_from_cfg,
    complexity,
    input_shape_from_cfg,
    padded_input_shape,
    swap_acon_for_relu,
)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 2)[2])
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='config files to count (one row each)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the test '
                        "pipeline's Resize scale)")
    parser.add_argument('--no-baseline', action='store_true',
                        help='do not build the ReLU baseline')
    parser.add_argument('--out-dir', default=osp.join(DEFAULT_OUT_ROOT, 'flops'),
                        help='output directory (default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config, key=value')
    args = parser.parse_args(argv)
    if args.shape and min(args.shape) < 32:
        parser.error(f'--shape: H and W must be >= 32, got {args.shape}')
    return args


def measure(cfg, shape, label):
    model = build_model_from_cfg(cfg)
    h, w = padded_input_shape(model, *shape)
    print(f'measuring {label} on a 1x3x{h}x{w} input ...', flush=True)
    torch.manual_seed(0)
    res = complexity(model, torch.randn(1, 3, h, w))
    res['model'] = label
    return res


def _g(v):
    return f'{v / 1e9:.3f}'


def _m(v):
    return f'{v / 1e6:.3f}'


def _delta(a, b):
    d = a - b
    return f'{d:+,d} ({100.0 * d / b:+.2f}%)' if b else f'{d:+,d}'


def _model_key(model_cfg, shape):
    """Identity of a model for sharing baselines: its config without weights
    to initialise from (init_cfg / pretrained), and the input shape."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in sorted(node.items())
                    if k not in ('init_cfg', 'pretrained')}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node if isinstance(node, (int, float, str, bool, type(None))) \
            else repr(node)
    return json.dumps(strip(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict')
                            else dict(model_cfg)), sort_keys=True), tuple(shape)


def main(argv=None):
    from mmengine.config import Config
    args = parse_args(argv)
    rows, baselines, todo = [], {}, []
    for path in args.configs:
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file not found: {path}')
        cfg = Config.fromfile(path)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        try:
            shape = tuple(args.shape) if args.shape else input_shape_from_cfg(cfg)
        except KeyError as err:
            raise KeyError(f'{err.args[0]} (--shape H W)') from None
        name = osp.splitext(osp.basename(path))[0]
        row = measure(cfg, shape, name)
        row['config'] = path
        rows.append(row)
        base_cfg = copy.deepcopy(cfg)
        row['swapped'] = swap_acon_for_relu(base_cfg.model)
        key = _model_key(base_cfg.model, shape)
        if not row['swapped']:
            # a config without ACON (e.g. the -relu one) is its own baseline
            baselines.setdefault(key, row)
        elif not args.no_baseline:
            todo.append((row, base_cfg, key, shape, path, name))
    for row, base_cfg, key, shape, path, name in todo:
        if key not in baselines:
            base = measure(base_cfg, shape, f'{name} → ReLU baseline')
            base['config'] = f'{path} (ACON → ReLU)'
            base['swapped'] = []
            baselines[key] = base
            rows.append(base)
        b = baselines[key]
        row['baseline'] = b['model']
        row['d_params'] = row['params'] - b['params']
        row['d_flops'] = row['flops'] - b['flops']
        row['d_flops_elementwise'] = row['flops_elementwise'] - b['flops_elementwise']
        row['_base'] = b

    shape_txt = ', '.join(sorted({'x'.join(map(str, r['input_shape'])) for r in rows}))
    lines = [f'input {shape_txt}; FLOPs = multiply-adds as mmengine counts them',
             '',
             '| model | params (M) | FLOPs (G) | FLOPs+ew (G) | ACON params | '
             'ACON FLOPs+ew (G) | Δparams vs ReLU | ΔFLOPs vs ReLU | '
             'ΔFLOPs+ew vs ReLU |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        b = r.get('_base')
        lines.append(
            f"| {r['model']} | {_m(r['params'])} | {_g(r['flops'])} | "
            f"{_g(r['flops_elementwise'])} | {r['acon_params']:,d} | "
            f"{_g(r['acon_flops_elementwise'])} | "
            + (f"{_delta(r['params'], b['params'])} | {_delta(r['flops'], b['flops'])} | "
               f"{_delta(r['flops_elementwise'], b['flops_elementwise'])} |"
               if b else '– | – | – |'))
    table = '\n'.join(lines)
    print(table)
    os.makedirs(args.out_dir, exist_ok=True)
    clean = [{k: v for k, v in r.items() if k != '_base'} for r in rows]
    with open(osp.join(args.out_dir, 'flops.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.out_dir, 'flops.json'), 'w') as f:
        json.dump(clean, f, indent=1)
    keys = ['model', 'config', 'input_shape', 'params', 'flops', 'flops_elementwise',
            'acon_layers', 'acon_params', 'acon_flops', 'acon_flops_elementwise',
            'baseline', 'd_params', 'd_flops', 'd_flops_elementwise']
    with open(osp.join(args.out_dir, 'flops.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
        w.writeheader()
        for r in clean:
            w.writerow({k: ('x'.join(map(str, r[k])) if k == 'input_shape' else
                            r.get(k, '')) for k in keys})
    print(f'\nwritten: {args.out_dir}/flops.md, flops.csv, flops.json')
    return clean


if __name__ == '__main__':
    main()
