"""Parameters and FLOPs with mmengine's analyzer, ACON's elementwise cost
included (``tools/analysis_tools/get_flops.py``)."""
import warnings
from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..models.layers import ACON_TYPES, iter_acon_layers
from ..ops import acon_impl
from ..utils.config import walk_dicts
from .model_loading import build_model_from_cfg, test_pipeline_cfg

__all__ = [
    'swap_acon_for_relu', 'naive_acon_ops', 'complexity', 'ELEMENTWISE_OPS',
    'input_shape_from_cfg', 'padded_input_shape', 'config_complexity'
]


def swap_acon_for_relu(model_cfg) -> List[str]:
    """Replace, in place, every ``acon_cfg`` / ``act_cfg`` of an ACON type
    (``AconA``, ``AconB``, ``AconC``, ``MetaAconC``, ``SwishBeta``) in a model
    config by ``dict(type='ReLU')``.

    Returns:
        list[str]: the swapped paths, e.g. ``['model.backbone.acon_cfg: AconC']``.
    """
    swapped = []
    for path, node in walk_dicts(model_cfg, 'model'):
        for k in ('acon_cfg', 'act_cfg'):
            v = node.get(k)
            if not isinstance(v, dict):
                continue
            t = v.get('type')
            tname = t if isinstance(t, str) else getattr(t, '__name__', '')
            if tname in ACON_TYPES:
                node[k] = dict(type='ReLU')
                swapped.append(f'{path}.{k}: {tname}')
    return swapped


@contextmanager
def naive_acon_ops():
    """Route the ACON layers through the plain-op formula while tracing, so
    that the analyzer sees its real elementwise ops (a fused autograd Function
    would be one opaque ``prim::PythonOp``)."""
    with acon_impl('naive'):
        yield


def _numel(value) -> int:
    from mmengine.analysis.jit_handles import get_shape
    shape = get_shape(value)
    return int(np.prod(shape)) if shape else 1


def _out_elementwise(inputs, outputs) -> int:
    """One FLOP per output element."""
    return _numel(outputs[0])


def _in_reduction(inputs, outputs) -> int:
    """One FLOP per input element (a sum over the reduced dims)."""
    return _numel(inputs[0])


#: Ops counted at one FLOP per element by ``get_flops.py`` on top of
#: mmengine's defaults (which ignore elementwise ops).
ELEMENTWISE_OPS = {
    **{op: _out_elementwise for op in (
        'aten::add', 'aten::add_', 'aten::sub', 'aten::sub_', 'aten::rsub',
        'aten::mul', 'aten::mul_', 'aten::div', 'aten::div_', 'aten::sigmoid',
        'aten::sigmoid_', 'aten::relu', 'aten::relu_', 'aten::silu',
        'aten::silu_', 'aten::abs', 'aten::neg', 'aten::exp', 'aten::tanh',
        'aten::clamp', 'aten::clamp_', 'aten::hardtanh', 'aten::hardtanh_')},
    **{op: _in_reduction for op in ('aten::mean', 'aten::sum')},
}


def complexity(model: nn.Module, inputs: Tensor) -> dict:
    """Parameters and FLOPs of ``model`` on ``inputs`` with mmengine's analyzer.

    One trace with :class:`mmengine.analysis.FlopAnalyzer` (the counter behind
    :func:`mmengine.analysis.get_model_complexity_info`) with its default op
    handles plus :data:`ELEMENTWISE_OPS`; the counts are then split by op:

    * ``flops``: the default handles only, i.e. exactly what
      ``get_model_complexity_info`` reports — multiply-accumulates of convs,
      linear layers, norms, upsampling and pooling. Elementwise ops (ReLU,
      ACON's sigmoid and products, residual adds) are ignored there, so
      ACON-C's cost is invisible while meta-ACON's switch generator (real 1x1
      convs and BNs) is counted.
    * ``flops_elementwise``: ``flops`` plus one FLOP per element for every
      elementwise op of *every* layer (add, mul, sub, sigmoid, relu, ...) and
      one per input element for means. The ACON layers are traced through the
      plain formula (:func:`naive_acon_ops`): ACON-C is 6 elementwise ops per
      element (2 scalings, the beta product, sigmoid, product, add), ReLU 1.
    * ``params``: :func:`mmengine.analysis.parameter_count`.
    * ``acon_params`` / ``acon_flops`` / ``acon_flops_elementwise``: the part
      that belongs to the ACON modules themselves.
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.logging import MMLogger
    model.eval()
    acon_names = [n for n, _ in iter_acon_layers(model)]
    ew_names = {k.split('::', 1)[-1] for k in ELEMENTWISE_OPS}
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # the analyzer's notes on ignored ops
    try:
        with naive_acon_ops(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            analyzer = FlopAnalyzer(model, (inputs, )).set_op_handle(**ELEMENTWISE_OPS)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counts = analyzer.by_module_and_operator()
    finally:
        logger.setLevel(level)

    def split(name):
        c = counts.get(name, {})
        ew = sum(v for k, v in c.items() if k in ew_names)
        return sum(c.values()) - ew, sum(c.values())

    flops, flops_ew = split('')
    acon = [split(n) for n in acon_names]
    params = parameter_count(model)
    return dict(
        params=int(params['']), flops=int(flops), flops_elementwise=int(flops_ew),
        acon_layers=len(acon_names),
        acon_params=int(sum(params.get(n, 0) for n in acon_names)),
        acon_flops=int(sum(a[0] for a in acon)),
        acon_flops_elementwise=int(sum(a[1] for a in acon)),
        input_shape=list(inputs.shape))


def input_shape_from_cfg(cfg) -> Tuple[int, int]:
    """``(H, W)`` of the test pipeline's ``Resize`` ``scale`` (given as (W, H)).

    Raises:
        KeyError: the test pipeline has no ``Resize`` scale; the message names
            the config.
    """
    try:
        pipeline = test_pipeline_cfg(cfg)
    except KeyError:
        pipeline = []
    for t in pipeline:
        if t.get('type') in ('Resize', 'RandomResize') and t.get('scale'):
            scale = t['scale']
            if isinstance(scale, int):
                return scale, scale
            return int(scale[1]), int(scale[0])
    raise KeyError(f'config {getattr(cfg, "filename", "<in memory>")}: no Resize '
                   'scale in the test pipeline to take the input size from; '
                   'give the input size (H W) explicitly')


def padded_input_shape(model: nn.Module, h: int, w: int) -> Tuple[int, int]:
    """``(h, w)`` padded up to the data preprocessor's ``pad_size_divisor``."""
    div = getattr(getattr(model, 'data_preprocessor', None), 'pad_size_divisor', 1) or 1
    return -(-int(h) // div) * div, -(-int(w) // div) * div


def config_complexity(cfg, shape: Optional[Sequence[int]] = None) -> dict:
    """:func:`complexity` of ``cfg``'s model on one ``1x3xHxW`` input.

    ``shape`` (H, W) defaults to the test pipeline's resize
    (:func:`input_shape_from_cfg`), padded as the data preprocessor pads.
    """
    model = build_model_from_cfg(cfg)
    h, w = padded_input_shape(model, *(shape or input_shape_from_cfg(cfg)))
    torch.manual_seed(0)
    return complexity(model, torch.randn(1, 3, h, w))
