#!/usr/bin/env python
"""Export an acon-mm detector, segmentor or classifier to ONNX and check it
against ONNX Runtime.

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --out model.onnx \\
        [--images DIR | --data-root DIR] [--exporter dynamo|torchscript] \\
        [--opset 18] [--dynamic-batch] [--verify] [--cfg-options KEY=VALUE ...]

The example input is a real image through the config's own test pipeline and
data preprocessor: the first file of ``--images DIR``, else the first test
image of the config's dataset (``--data-root`` to point at it). The graph takes
that preprocessed tensor and returns the model's tensor mode (the head's raw
outputs; see acon_mm.deployment.onnx_export and docs/deployment.md).
``--verify`` runs the file with ONNX Runtime on the same input and fails
(exit status 1) when an output differs from PyTorch's by more than ``--atol``
(relative to the output's largest magnitude). Without CHECKPOINT the model's
initial weights are exported (a warning says so).
"""
import argparse
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a model of an acon-mm config to ONNX')
    p.add_argument('config', help='the config file')
    p.add_argument('checkpoint', nargs='?', help='the trained checkpoint (.pth)')
    p.add_argument('--out', required=True, help='the .onnx file to write')
    p.add_argument('--images', help='a folder of images: the first is the example input')
    p.add_argument('--data-root', help="the config's data (its first test image is the "
                   'example input when --images is not given)')
    p.add_argument('--exporter', choices=('dynamo', 'torchscript'), default='dynamo',
                   help='torch.onnx exporter (default: %(default)s)')
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (default: %(default)s)')
    p.add_argument('--dynamic-batch', action='store_true',
                   help='a symbolic batch dimension')
    p.add_argument('--verify', action='store_true',
                   help="compare ONNX Runtime's outputs with PyTorch's")
    p.add_argument('--atol', type=float, default=1e-4,
                   help='--verify tolerance, relative to each output\'s largest magnitude '
                   '(default: %(default)s)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help="override the config's settings")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from acon_mm.analysis.model_loading import image_batches, load_model
    from acon_mm.deployment import compare_outputs, export_onnx, run_onnxruntime
    from acon_mm.engine.runner_utils import set_data_root
    try:
        from mmengine.config import Config
        if not osp.isfile(args.config):
            raise FileNotFoundError(f'config file not found: {args.config}')
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        if args.data_root:
            set_data_root(cfg, args.data_root)
        if args.checkpoint is None:
            warnings.warn('no CHECKPOINT: exporting the initial weights of the config')
        elif not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
        model, cfg = load_model(cfg, args.checkpoint)
        data, name = next(iter(image_batches(cfg, args.images, num_images=1)))
    except (FileNotFoundError, KeyError, ValueError) as err:
        sys.exit(f'error: {err}')
    with torch.no_grad():
        inputs = model.data_preprocessor(data, False)['inputs'].float()
    info = export_onnx(model, inputs, args.out, exporter=args.exporter, opset=args.opset,
                       dynamic_batch=args.dynamic_batch)
    print(f'exported {args.out} ({args.exporter}, opset {args.opset}): input inputs '
          f'{tuple(inputs.shape)} (from {name}), outputs {", ".join(info["output_names"])}')
    if args.verify:
        diffs = compare_outputs(info['outputs'], info['output_names'],
                                run_onnxruntime(args.out, inputs))
        worst = max(diffs, key=diffs.get)
        print(f'onnxruntime vs PyTorch: largest relative difference {diffs[worst]:.3g} '
              f'({worst}); tolerance {args.atol:g}')
        if diffs[worst] > args.atol:
            sys.exit(f'error: {worst} differs by {diffs[worst]:.3g} > --atol {args.atol:g}')


if __name__ == '__main__':
    main()
