"""Deployment: ONNX export of the toolkit's models (see :mod:`.onnx_export`)."""
from .onnx_export import TensorMode, compare_outputs, export_onnx, run_onnxruntime

__all__ = ['TensorMode', 'compare_outputs', 'export_onnx', 'run_onnxruntime']
