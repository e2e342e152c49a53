"""Export a trained acon-mm detector, segmentor or classifier to ONNX and check
it with ONNX Runtime.

The OpenMMLab route is mmdeploy; it does not install beside the pinned stack
(mmcv 2.1 / torch 2.13, no wheel), so this is the thin exporter the issue asks
for, over ``torch.onnx``. What is exported is the model's **tensor mode**,
``model._forward(inputs)`` (mmengine's ``mode='tensor'``):

* a detector (mmdet): the head's raw outputs, per FPN level (RetinaNet:
  ``cls_score_0..4``, ``bbox_pred_0..4``); boxes come from them with the
  head's own ``predict_by_feat`` (anchors, decoding, NMS), see
  ``docs/deployment.md``;
* a segmentor (mmseg): the decode head's logits ``seg_logits``
  (``N x classes x H/8 x W/8`` for PSPNet), to be resized and arg-maxed;
* a classifier (mmpretrain): the head's pre-softmax scores.

The graph's input ``inputs`` is what ``model.data_preprocessor`` gives:
normalised, channel-ordered and padded images (``N x 3 x H x W`` float32), as
with mmdeploy's default. The ACON layers export as their plain formula (the
fused kernels step aside under tracing and ``torch.export``), so any ONNX
runtime runs them: sigmoid, mul, add, and meta-ACON's switch as a
ReduceMean + two 1x1 Conv + (folded) BatchNorm.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

__all__ = ['TensorMode', 'export_onnx', 'run_onnxruntime', 'compare_outputs']

EXPORTERS = ('dynamo', 'torchscript')


def _flatten(out, prefix: str, names: List[str], tensors: List[Tensor]) -> None:
    if isinstance(out, Tensor):
        names.append(prefix)
        tensors.append(out)
    elif isinstance(out, (list, tuple)):
        for i, o in enumerate(out):
            _flatten(o, f'{prefix}_{i}' if prefix else str(i), names, tensors)
    elif isinstance(out, dict):
        for k, o in out.items():
            _flatten(o, f'{prefix}_{k}' if prefix else str(k), names, tensors)
    else:
        raise TypeError(f'tensor mode returned a {type(out).__name__} at {prefix!r}: '
                        'only tensors, tuples, lists and dicts of them export')


def _output_names(model: nn.Module, n_groups: int) -> List[str]:
    head = getattr(model, 'bbox_head', None)
    if head is not None and n_groups == 2:
        return ['cls_score', 'bbox_pred']
    if head is not None and n_groups == 3:
        return ['cls_score', 'bbox_pred', 'centerness']
    return [f'output{i}' for i in range(n_groups)]


class TensorMode(nn.Module):
    """``model._forward(inputs)`` as a module returning a flat tuple of tensors.

    Args:
        model (nn.Module): an mmengine ``BaseModel`` (detector, segmentor,
            classifier) in eval mode.

    Attributes:
        output_names (list[str]): one name per returned tensor (set by the
            first call: ``cls_score_0``, ..., or ``seg_logits``).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, '_forward'):
            raise TypeError(f'{type(model).__name__} has no tensor mode (_forward): '
                            'export an mmengine BaseModel (detector, segmentor, classifier)')
        self.model = model
        self.output_names: Optional[List[str]] = None

    def forward(self, inputs: Tensor):
        out = self.model._forward(inputs)
        names: List[str] = []
        tensors: List[Tensor] = []
        if isinstance(out, Tensor):
            kind = 'seg_logits' if hasattr(self.model, 'decode_head') else 'scores'
            names, tensors = [kind], [out]
        else:
            groups = _output_names(self.model, len(out)) \
                if isinstance(out, (list, tuple)) else None
            if groups is None:
                _flatten(out, '', names, tensors)
            else:
                for g, o in zip(groups, out):
                    _flatten(o, g, names, tensors)
        self.output_names = names
        return tuple(tensors)


def export_onnx(model: nn.Module, inputs: Tensor, out_file: str, exporter: str = 'dynamo',
                opset: int = 18, dynamic_batch: bool = False) -> Dict[str, object]:
    """Export ``model``'s tensor mode for ``inputs`` to ``out_file``.

    The file is written to ``out_file + '.part'`` and renamed when complete, so
    a failed export never leaves a truncated ``.onnx`` (nor replaces a good one).

    Args:
        model (nn.Module): the model, eval mode, CPU.
        inputs (Tensor): an example preprocessed batch ``N x 3 x H x W``.
        out_file (str): the ``.onnx`` file.
        exporter (str): ``'dynamo'`` (``torch.export``, the default of torch
            2.13) or ``'torchscript'`` (the tracing exporter).
        opset (int): the ONNX opset. Default: 18.
        dynamic_batch (bool): a symbolic batch dimension.

    Returns:
        dict: ``input_names``, ``output_names``, ``outputs`` (PyTorch's, a tuple
        of tensors for ``inputs``), ``file``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'unknown exporter {exporter!r}; valid: {list(EXPORTERS)}')
    if model.training:
        raise ValueError('export a model in eval mode (model.eval()): BatchNorm and '
                         "meta-ACON's switch norms use their running statistics then")
    wrapped = TensorMode(model).eval()
    with torch.no_grad():
        outputs = wrapped(inputs)
    names = list(wrapped.output_names)
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    part = out_file + '.part'
    kwargs = dict(input_names=['inputs'], output_names=names, opset_version=opset)
    if exporter == 'dynamo':
        if dynamic_batch:
            kwargs['dynamic_shapes'] = ({0: torch.export.Dim('batch')}, )
        kwargs.update(dynamo=True, external_data=False)
    else:
        if dynamic_batch:
            kwargs['dynamic_axes'] = {n: {0: 'batch'} for n in ['inputs'] + names}
        kwargs.update(dynamo=False)
    try:
        with torch.no_grad():
            torch.onnx.export(wrapped, (inputs, ), part, **kwargs)
        os.replace(part, out_file)
    finally:
        if osp.exists(part):
            os.remove(part)
    return dict(input_names=['inputs'], output_names=names, outputs=outputs, file=out_file)


def run_onnxruntime(onnx_file: str, inputs: Tensor) -> Dict[str, np.ndarray]:
    """Run ``onnx_file`` with ONNX Runtime's CPU provider: ``{output name: array}``."""
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: inputs.detach().cpu().numpy()})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def compare_outputs(torch_outputs: Sequence[Tensor], names: Sequence[str],
                    ort_outputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max absolute difference per output, relative to the output's largest
    magnitude (``|a - b|.max() / max(1, |a|.max())``).

    Raises:
        KeyError: an output of PyTorch's missing from the ONNX model's.
        ValueError: an output with another shape.
    """
    diffs = {}
    for name, t in zip(names, torch_outputs):
        if name not in ort_outputs:
            raise KeyError(f'the ONNX model has no output {name!r}; it has '
                           f'{sorted(ort_outputs)}')
        a, b = t.detach().cpu().numpy(), ort_outputs[name]
        if a.shape != b.shape:
            raise ValueError(f'output {name}: PyTorch {a.shape}, ONNX Runtime {b.shape}')
        diffs[name] = float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
    return diffs
