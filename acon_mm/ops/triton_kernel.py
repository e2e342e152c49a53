"""Fused ACON kernels for CUDA, written in Triton.

What runs where
    :class:`acon_mm.ops.AconFunction` runs these kernels for CUDA inputs (float32,
    float16, bfloat16) when Triton is importable, a CUDA device exists,
    ``ACON_MM_DISABLE_TRITON`` is unset and the first-use probe passed on that device
    (below); never on the CPU path (the C++ extension). Inputs are loaded in their own
    dtype and computed in float32; ``d = p1 - p2``, ``q = p2`` and beta come from
    :func:`acon_mm.ops.layout.kernel_layout` in float32. Every launch runs under
    ``torch.cuda.device(x.device)``: a tensor on ``cuda:1`` launches on ``cuda:1``
    whatever the current device is.

First-use probe
    :func:`probe` compiles and launches the forward and per-row backward kernels of
    both layouts on a tiny problem and compares them with the PyTorch formula. The
    dispatch (:func:`acon_mm.ops.acon_backend`) runs it once per (device, dtype); if it
    raises (no compiler, an unsupported GPU or dtype, a wrong result) a warning naming
    the exception is issued once and that device and dtype use the PyTorch fused
    function for the rest of the process.

Layouts (see :mod:`acon_mm.ops.layout`)
    * NCHW, ``x`` contiguous as ``(R, L)`` rows, ``R = N C``, ``L = H W``: forward in
      ``ROWS x BLOCK_L`` tiles; backward with beta constant over the pixels (row mode)
      or full in the same tiles, each writing ``dx`` (and a full ``dbeta``) and its
      rows' partial sums ``(sum gout x g, sum gout x, sum gout u^2 s (1 - s))`` to a
      small ``(R, n_lblocks, 3)`` float32 buffer, reduced by torch; backward with a
      per-pixel beta ``(N, 1, H, W)``: programs over ``(n, l-block, channel chunk)``
      loop over their channels and accumulate ``dbeta`` per pixel in registers
      (deterministic, no atomics) into a ``(n_chunks, N, L)`` buffer.
    * NHWC, a channels_last ``x`` as ``(N H W, C)`` rows, channel fastest: the kernels
      of :mod:`acon_mm.ops.triton_nhwc`. ``y`` and ``dx`` are written channels_last
      and nothing else full-size is (no ``.contiguous()`` of ``x``, ``y`` or ``dx``;
      ``gout`` is copied only if it does not arrive channels_last).
    * A non-dense input (a slice) is made contiguous once per pass (forward and
      backward) and handled as NCHW; its output is contiguous.

Specialisation (no recompilation per image size)
    Triton compiles one variant per dtype signature, constexpr values and, for
    integer arguments, the flags "== 1" and "divisible by 16". Sizes and strides that
    do not affect vectorisation are ``do_not_specialize``: ``R, C`` and beta's strides
    in NCHW (only ``L`` is specialised: a row start ``r L`` is 16-aligned when ``L`` is,
    which enables vector loads), ``N, L, P`` and beta's strides in NHWC (only ``C`` is
    specialised, constant for a layer). The tile sizes come from fixed buckets:
    ``BLOCK_L`` in {16, 64, 256, 1024} (``ROWS = 2048 / BLOCK_L``, at most 64) and
    ``BLOCK_C`` in {16, 32, 64, 128}. So per kernel, dtype and beta mode there are at
    most 4 x 3 = 12 NCHW variants and 4 x 3 NHWC variants (bucket x the ``L`` or
    ``C`` flags), whatever the number of image sizes seen in multi-scale training;
    ``tests/test_ops/test_triton_dispatch.py`` counts them.

Note: written without access to a GPU; on CPU the kernels are checked with Triton's
interpreter (``TRITON_INTERPRET=1``, ``tests/test_ops/test_triton_dispatch.py``).
"""
import os
from typing import Tuple

import torch
from torch import Tensor

from .layout import BETA_FULL, BETA_PIX, BETA_ROW, KernelLayout, kernel_layout

from . import triton_utils as _tu
from .triton_utils import _HAS_TRITON, tl, triton

__all__ = ['triton_available', 'acon_fwd_triton', 'acon_bwd_triton', 'probe',
           'BLOCK_L_BUCKETS']

#: The BLOCK_L tile widths of the NCHW kernels (ROWS = 2048 // BLOCK_L, at most 64).
BLOCK_L_BUCKETS = (16, 64, 256, 1024)


def triton_available() -> bool:
    """Triton importable, a CUDA device present, not disabled by
    ``ACON_MM_DISABLE_TRITON=1``."""
    if not _HAS_TRITON or os.environ.get('ACON_MM_DISABLE_TRITON', '0') not in ('', '0'):
        return False
    return torch.cuda.is_available()


if _HAS_TRITON:
    from .triton_utils import acon_bwd_elem

    @triton.jit(do_not_specialize=['R', 'C', 'bsn', 'bsc'])
    def _acon_fwd_kernel(x_ptr, y_ptr, d_ptr, q_ptr, b_ptr, R, C, L, bsn, bsc,
                         BETA: tl.constexpr, ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
        rmask = rows < R
        mask = rmask[:, None] & (cols < L)[None, :]
        rows64 = rows.to(tl.int64)
        cols64 = cols.to(tl.int64)
        n = rows64 // C
        c = rows64 % C
        d = tl.load(d_ptr + c, mask=rmask, other=0.0)[:, None]
        q = tl.load(q_ptr + c, mask=rmask, other=0.0)[:, None]
        offs = rows64[:, None] * L + cols64[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if BETA == 0:
            b = tl.load(b_ptr + n * bsn + c * bsc, mask=rmask, other=0.0)[:, None]
        elif BETA == 1:
            b = tl.load(b_ptr + (n * bsn)[:, None] + cols64[None, :], mask=mask, other=0.0)
        else:
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
        u = d * x
        y = u * tl.sigmoid(b * u) + q * x
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=['R', 'C', 'NLB', 'bsn', 'bsc'])
    def _acon_bwd_row_kernel(go_ptr, x_ptr, dx_ptr, d_ptr, q_ptr, b_ptr, db_ptr, part_ptr,
                             R, C, L, NLB, bsn, bsc, BETA: tl.constexpr, ROWS: tl.constexpr,
                             BLOCK_L: tl.constexpr):
        pid_l = tl.program_id(1)
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        rmask = rows < R
        mask = rmask[:, None] & (cols < L)[None, :]
        rows64 = rows.to(tl.int64)
        n = rows64 // C
        c = rows64 % C
        d = tl.load(d_ptr + c, mask=rmask, other=0.0)[:, None]
        q = tl.load(q_ptr + c, mask=rmask, other=0.0)[:, None]
        offs = rows64[:, None] * L + cols.to(tl.int64)[None, :]
        if BETA == 0:
            b = tl.load(b_ptr + n * bsn + c * bsc, mask=rmask, other=0.0)[:, None]
        else:  # full
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dx, g, dbt = acon_bwd_elem(x, go, d, q, b)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        gx = go * x
        pbase = (rows64 * NLB + pid_l) * 3
        tl.store(part_ptr + pbase, tl.sum(gx * g, axis=1), mask=rmask)
        tl.store(part_ptr + pbase + 1, tl.sum(gx, axis=1), mask=rmask)
        if BETA == 0:
            tl.store(part_ptr + pbase + 2, tl.sum(dbt, axis=1), mask=rmask)
        else:
            tl.store(db_ptr + offs, dbt, mask=mask)

    @triton.jit(do_not_specialize=['N', 'C', 'NLB', 'bsn', 'CB'])
    def _acon_bwd_pix_kernel(go_ptr, x_ptr, dx_ptr, d_ptr, q_ptr, b_ptr, part_ptr, dbp_ptr,
                             N, C, L, NLB, bsn, CB, BLOCK_L: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        pid_l = tl.program_id(1)
        pid_c = tl.program_id(2)
        cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        cmask = cols < L
        cols64 = cols.to(tl.int64)
        b = tl.load(b_ptr + n * bsn + cols64, mask=cmask, other=0.0)
        acc = tl.zeros([BLOCK_L], dtype=tl.float32)
        c0 = pid_c * CB
        c1 = tl.minimum(c0 + CB, C)
        for c in range(c0, c1):
            row = n * C + c
            d = tl.load(d_ptr + c)
            q = tl.load(q_ptr + c)
            offs = row * L + cols64
            x = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            go = tl.load(go_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            dx, g, dbt = acon_bwd_elem(x, go, d, q, b)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=cmask)
            gx = go * x
            acc += dbt
            pbase = (row * NLB + pid_l) * 3
            tl.store(part_ptr + pbase, tl.sum(gx * g, axis=0))
            tl.store(part_ptr + pbase + 1, tl.sum(gx, axis=0))
        tl.store(dbp_ptr + (pid_c * N + n) * L + cols64, acc, mask=cmask)


def _tiles(L: int) -> Tuple[int, int]:
    """(ROWS, BLOCK_L): the smallest bucket holding ``L`` (at most 1024)."""
    block_l = next((b for b in BLOCK_L_BUCKETS if b >= L), BLOCK_L_BUCKETS[-1])
    return min(64, 2048 // block_l), block_l


def _num_warps(tile: int) -> int:
    return 8 if tile >= 2048 else 4


def acon_fwd_triton(x: Tensor, lay: KernelLayout) -> Tensor:
    """Forward. ``x`` is contiguous (NCHW) or channels_last (``lay.nhwc``); the output
    has ``x``'s dtype, shape and memory format."""
    if lay.nhwc:
        from .triton_nhwc import acon_fwd_nhwc
        return acon_fwd_nhwc(x, lay)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    R = lay.N * lay.C
    if x.numel() == 0:
        return y
    rows, block_l = _tiles(lay.L)
    grid = (triton.cdiv(R, rows), triton.cdiv(lay.L, block_l))
    with _tu.device_guard(x):
        _tu.launch(_acon_fwd_kernel, grid,
               (x, y, lay.d, lay.q, lay.beta, R, lay.C, lay.L, lay.bsn, lay.bsc),
               dict(BETA=lay.bmode, ROWS=rows, BLOCK_L=block_l,
                    num_warps=_num_warps(rows * block_l)))
    return y


def acon_bwd_triton(go: Tensor, x: Tensor, lay: KernelLayout):
    """Backward: ``(dx, A, B, Db)`` with ``dx`` in ``x``'s dtype and layout, the
    per-(n, c) sums ``A = sum gout x g``, ``B = sum gout x`` (float32, (N, C)) and
    ``Db``: per (n, c) (row mode), per (n, l) (pixel mode) or ``dbeta`` with ``x``'s
    shape and layout (full mode), in float32."""
    if go.dtype != x.dtype:
        go = go.to(x.dtype)
    if lay.nhwc:
        from .triton_nhwc import acon_bwd_nhwc
        return acon_bwd_nhwc(go.contiguous(memory_format=torch.channels_last), x, lay)
    go = go.contiguous()
    N, C, L = lay.N, lay.C, lay.L
    R = N * C
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows, block_l = _tiles(L)
    nlb = triton.cdiv(max(L, 1), block_l)
    part = torch.zeros(R, nlb, 3, dtype=torch.float32, device=x.device)
    db = None
    if lay.bmode == BETA_FULL:
        db = torch.empty_like(x, dtype=torch.float32, memory_format=torch.contiguous_format)
    elif lay.bmode == BETA_PIX:
        db = torch.zeros(N, L, dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        sums = part.view(N, C, nlb, 3).sum(2)
        return dx, sums[..., 0], sums[..., 1], (sums[..., 2] if db is None else db)
    if lay.bmode != BETA_PIX:
        grid = (triton.cdiv(R, rows), nlb)
        with _tu.device_guard(x):
            _tu.launch(_acon_bwd_row_kernel, grid,
                   (go, x, dx, lay.d, lay.q, lay.beta, part if db is None else db, part, R,
                    C, L, nlb, lay.bsn, lay.bsc),
                   dict(BETA=lay.bmode, ROWS=rows, BLOCK_L=block_l,
                        num_warps=_num_warps(rows * block_l)))
    else:
        target = 4 * _tu.sm_count(x)
        nchunks = max(1, min(C, triton.cdiv(target, N * nlb)))
        cb = triton.cdiv(C, nchunks)
        nchunks = triton.cdiv(C, cb)
        dbp_part = torch.zeros(nchunks, N, L, dtype=torch.float32, device=x.device)
        with _tu.device_guard(x):
            _tu.launch(_acon_bwd_pix_kernel, (N, nlb, nchunks),
                   (go, x, dx, lay.d, lay.q, lay.beta, part, dbp_part, N, C, L, nlb,
                    lay.bsn, cb),
                   dict(BLOCK_L=block_l, num_warps=4 if block_l <= 256 else 8))
        db = dbp_part.sum(0)
    sums = part.view(N, C, nlb, 3).sum(2)
    return dx, sums[..., 0], sums[..., 1], (sums[..., 2] if lay.bmode == BETA_ROW else db)


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

    Raises:
        Exception: whatever compiling or launching raised, or ``RuntimeError`` for a
        wrong result.
    """
    if not _HAS_TRITON:
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
