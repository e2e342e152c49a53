"""Helpers shared by the ops."""
import torch

__all__ = ['is_compiling']


def is_compiling() -> bool:
    """Under ``torch.compile``, ``torch.jit.trace`` or scripting.

    The fused autograd functions step aside there: the plain formula is traced
    (and inductor fuses it itself).
    """
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling') and compiler.is_compiling():
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting()
