"""Fused ACON Triton kernels for contiguous (NCHW) inputs.

``x`` contiguous is viewed as ``(R, L)`` rows, ``R = N C``, ``L = H W`` (element
``(n, c, l)`` at ``(n C + c) L + l``); ``d = p1 - p2``, ``q = p2`` are per row's channel
and beta is per ``(n, c)`` (row mode, ``beta[n bsn + c bsc]``) or per pixel (pixel mode,
``beta[n bsn + l]``); see :mod:`acon_mm.ops.layout`. With ``u = d x``,
``s = sigmoid(beta u)`` and ``g = s + beta u s (1 - s)``:

* forward, ``ROWS x BLOCK_L`` tiles: ``y = u s + q x``;
* backward, row mode, the same tiles: ``dx = gout (d g + q)`` and each tile's per-row
  partial sums ``(sum gout x g, sum gout x, sum gout u^2 s (1 - s))`` to a small
  ``(R, n_lblocks, 3)`` float32 buffer, reduced by torch;
* backward, pixel mode: programs over ``(n, l-block, channel chunk)`` loop over their
  channels and accumulate ``dbeta`` per pixel in registers (deterministic, no atomics)
  into an ``(n_chunks, N, L)`` buffer.

Only ``L`` is specialised (a row start ``r L`` is 16-aligned when ``L`` is, which
enables vector loads); ``R, C`` and beta's strides are ``do_not_specialize`` and
``BLOCK_L`` comes from :data:`BLOCK_L_BUCKETS` (``ROWS = 2048 / BLOCK_L``, at most 64).
"""
from typing import Tuple

import torch
from torch import Tensor

from ..layout import BETA_PIX, BETA_ROW, KernelLayout
from . import utils as _tu  # launch / device_guard / sm_count via the module
from .utils import HAS_TRITON, tl, triton

__all__ = ['acon_fwd_nchw', 'acon_bwd_nchw', 'BLOCK_L_BUCKETS']

#: The BLOCK_L tile widths of the NCHW kernels (ROWS = 2048 // BLOCK_L, at most 64).
BLOCK_L_BUCKETS = (16, 64, 256, 1024)


if HAS_TRITON:
    from .utils import acon_bwd_elem

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
        else:
            b = tl.load(b_ptr + (n * bsn)[:, None] + cols64[None, :], mask=mask, other=0.0)
        u = d * x
        y = u * tl.sigmoid(b * u) + q * x
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=['R', 'C', 'NLB', 'bsn', 'bsc'])
    def _acon_bwd_row_kernel(go_ptr, x_ptr, dx_ptr, d_ptr, q_ptr, b_ptr, part_ptr,
                             R, C, L, NLB, bsn, bsc, ROWS: tl.constexpr,
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
        b = tl.load(b_ptr + n * bsn + c * bsc, mask=rmask, other=0.0)[:, None]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dx, g, dbt = acon_bwd_elem(x, go, d, q, b)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        gx = go * x
        pbase = (rows64 * NLB + pid_l) * 3
        tl.store(part_ptr + pbase, tl.sum(gx * g, axis=1), mask=rmask)
        tl.store(part_ptr + pbase + 1, tl.sum(gx, axis=1), mask=rmask)
        tl.store(part_ptr + pbase + 2, tl.sum(dbt, axis=1), mask=rmask)

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


def acon_fwd_nchw(x: Tensor, lay: KernelLayout) -> Tensor:
    """Forward of a contiguous ``x``; the output is contiguous, ``x``'s dtype."""
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


def acon_bwd_nchw(go: Tensor, x: Tensor, lay: KernelLayout):
    """Backward of a contiguous ``x`` (``go`` contiguous, ``x``'s dtype):
    ``(dx, A, B, Db)`` as :func:`acon_mm.ops.triton.acon_bwd_triton`, ``dx``
    contiguous."""
    N, C, L = lay.N, lay.C, lay.L
    R = N * C
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows, block_l = _tiles(L)
    nlb = triton.cdiv(max(L, 1), block_l)
    part = torch.zeros(R, nlb, 3, dtype=torch.float32, device=x.device)
    db = None
    if lay.bmode == BETA_PIX:
        db = torch.zeros(N, L, dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        sums = part.view(N, C, nlb, 3).sum(2)
        return dx, sums[..., 0], sums[..., 1], (sums[..., 2] if db is None else db)
    if lay.bmode == BETA_ROW:
        grid = (triton.cdiv(R, rows), nlb)
        with _tu.device_guard(x):
            _tu.launch(_acon_bwd_row_kernel, grid,
                   (go, x, dx, lay.d, lay.q, lay.beta, part, R, C, L, nlb, lay.bsn,
                    lay.bsc),
                   dict(ROWS=rows, BLOCK_L=block_l, num_warps=_num_warps(rows * block_l)))
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
