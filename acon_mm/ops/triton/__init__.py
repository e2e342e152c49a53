"""Fused ACON kernels for CUDA, written in Triton (optional: CUDA builds of torch ship
Triton; :mod:`acon_mm.ops.dispatch` imports this package on first CUDA use only).

Modules
    :mod:`.nchw` (contiguous inputs), :mod:`.nhwc` (channels_last inputs), :mod:`.utils`
    (the optional Triton import, launch helpers, the element-wise backward shared by
    both). This package's functions are the entry points: :func:`acon_fwd_triton` and
    :func:`acon_bwd_triton` pick the layout's kernels, :func:`probe` is the first-use
    check.

What runs where
    :class:`acon_mm.ops.AconFunction` runs these kernels for CUDA inputs (float32,
    float16, bfloat16) when :func:`acon_mm.ops.acon_backend` says ``'triton'``: the
    ``'auto'`` setting, Triton importable, a CUDA device present and the first-use
    probe passed on that device (below); never on the CPU path (the C++ extension).
    Inputs are loaded in their own dtype and computed in float32; ``d = p1 - p2``,
    ``q = p2`` and beta come from :func:`acon_mm.ops.layout.kernel_layout` in float32
    (a beta constant over the pixels, or over the channels; anything else, e.g. a beta
    of the input's full shape, runs the PyTorch fused function). Every launch runs
    under ``torch.cuda.device(x.device)``: a tensor on ``cuda:1`` launches on ``cuda:1``
    whatever the current device is.

First-use probe
    :func:`probe` compiles and launches the forward and per-row backward kernels of
    both layouts on a tiny problem and compares them with the PyTorch formula. The
    dispatch runs it once per (device, dtype); if it raises (no compiler, an
    unsupported GPU or dtype, a wrong result) a warning naming the exception is issued
    once and that device and dtype use the PyTorch fused function for the rest of the
    process.

Layouts (see :mod:`acon_mm.ops.layout`)
    * NCHW, ``x`` contiguous as ``(R, L)`` rows (:mod:`.nchw`).
    * NHWC, a channels_last ``x`` as ``(N H W, C)`` rows, channel fastest
      (:mod:`.nhwc`). ``y`` and ``dx`` are written channels_last and nothing else
      full-size is (no ``.contiguous()`` of ``x``, ``y`` or ``dx``; ``gout`` is copied
      only if it does not arrive channels_last).
    * A non-dense input (a slice) is made contiguous once per pass (forward and
      backward) by the caller and handled as NCHW; its output is contiguous.

Specialisation (no recompilation per image size)
    Triton compiles one variant per dtype signature, constexpr values and, for
    integer arguments, the flags "== 1" and "divisible by 16". Sizes and strides that
    do not affect vectorisation are ``do_not_specialize``: ``R, C`` and beta's strides
    in NCHW (only ``L`` is specialised), ``N, L, P`` and beta's strides in NHWC (only
    ``C`` is specialised, constant for a layer). The tile sizes come from fixed
    buckets: ``BLOCK_L`` in {16, 64, 256, 1024} (``ROWS = 2048 / BLOCK_L``, at most 64)
    and ``BLOCK_C`` in {16, 32, 64, 128}. So per kernel, dtype and beta mode there are
    at most 4 x 3 = 12 NCHW variants and 4 x 3 NHWC variants (bucket x the ``L`` or
    ``C`` flags), whatever the number of image sizes seen in multi-scale training;
    ``tests/test_ops/test_triton/test_triton_kernels.py`` counts them.

Note: written without access to a GPU; on CPU the kernels are checked with Triton's
interpreter (``TRITON_INTERPRET=1``, ``tests/test_ops/test_triton/`` and
``tests/test_ops/test_all_implementations.py``).
"""
import torch
from torch import Tensor

from ..layout import KernelLayout, kernel_layout
from . import utils
from .nchw import acon_bwd_nchw, acon_fwd_nchw
from .nhwc import acon_bwd_nhwc, acon_fwd_nhwc
from .utils import triton_available

__all__ = ['triton_available', 'acon_fwd_triton', 'acon_bwd_triton', 'probe']


def acon_fwd_triton(x: Tensor, lay: KernelLayout) -> Tensor:
    """Forward.

    Args:
        x (Tensor): the input, contiguous (NCHW kernels) or channels_last
            (``lay.nhwc``: NHWC kernels).
        lay (KernelLayout): :func:`~acon_mm.ops.layout.kernel_layout` of the call.

    Returns:
        Tensor: ``y`` with ``x``'s dtype, shape and memory format.
    """
    if lay.nhwc:
        return acon_fwd_nhwc(x, lay)
    return acon_fwd_nchw(x, lay)


def acon_bwd_triton(go: Tensor, x: Tensor, lay: KernelLayout):
    """Backward.

    Args:
        go (Tensor): the output gradient (converted to ``x``'s dtype and memory format
            if it is not in them).
        x (Tensor): the input, as given to :func:`acon_fwd_triton`.
        lay (KernelLayout): the forward's layout.

    Returns:
        tuple: ``(dx, A, B, Db)``: ``dx`` in ``x``'s dtype and memory format, the
        per-(n, c) sums ``A = sum gout x g``, ``B = sum gout x`` (float32, (N, C)) and
        ``Db = sum gout u^2 s (1 - s)`` per (n, c) (row mode) or per (n, l) (pixel
        mode), float32.
    """
    if go.dtype != x.dtype:
        go = go.to(x.dtype)
    if lay.nhwc:
        return acon_bwd_nhwc(go.contiguous(memory_format=torch.channels_last), x, lay)
    return acon_bwd_nchw(go.contiguous(), x, lay)


# --------------------------------------------------------------------------
# First-use probe
# --------------------------------------------------------------------------
def _reference(go: Tensor, x: Tensor, d: Tensor, q: Tensor, b: Tensor):
    """y, dx and the per-(n, c) sums A, B, Db in float32 with PyTorch ops."""
    x, go = x.float(), go.float()
    d, q = d.view(1, -1, 1, 1), q.view(1, -1, 1, 1)
    u = d * x
    s = torch.sigmoid(b * u)
    ss = s * (1 - s)
    g = s + b * u * ss
    gx = go * x
    return (u * s + q * x, go * (d * g + q), (gx * g).sum((2, 3)), gx.sum((2, 3)),
            (go * u * u * ss).sum((2, 3)))


def probe(device: torch.device, dtype: torch.dtype) -> None:
    """Compile and launch the forward and per-row backward kernels (NCHW and NHWC)
    on a tiny ``(2, 16, 4, 4)`` problem on ``device`` in ``dtype`` and compare with
    the PyTorch formula.

    Args:
        device (torch.device): where to run (a CUDA device; the CPU under Triton's
            interpreter).
        dtype (torch.dtype): the input dtype to check.

    Raises:
        Exception: whatever compiling or launching raised, or ``RuntimeError`` for a
        wrong result (naming the output, the layout and the dtype).
    """
    if not utils.HAS_TRITON:
        raise RuntimeError('triton is not importable')
    g = torch.Generator().manual_seed(0)
    shape = (2, 16, 4, 4)
    x = (torch.randn(shape, generator=g) * 2).to(device=device, dtype=dtype)
    go = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    p1 = torch.randn(1, 16, 1, 1, generator=g).to(device)
    p2 = torch.randn(1, 16, 1, 1, generator=g).to(device)
    beta = (torch.rand(1, 16, 1, 1, generator=g) + 0.5).to(device)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    with torch.no_grad():
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            lay = kernel_layout(xx, p1, p2, beta, torch.float32)
            got = (acon_fwd_triton(xx, lay), ) + tuple(acon_bwd_triton(go, xx, lay))
            ref = _reference(go, xx, lay.d, lay.q, beta)
            for name, a, r in zip(('y', 'dx', 'A', 'B', 'Db'), got, ref):
                err = (a.float() - r).abs().max().item()
                scale = max(1.0, r.abs().max().item())
                if not err <= tol * scale:  # also catches NaN
                    layout = 'channels_last' if lay.nhwc else 'contiguous'
                    raise RuntimeError(f'wrong result from the Triton kernels ({name}, '
                                       f'{layout}, {dtype}): max error {err:.3g}')
