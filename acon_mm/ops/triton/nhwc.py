"""Fused ACON Triton kernels for channels_last (NHWC) inputs.

A channels_last ``x`` of shape ``(N, C, H, W)`` is viewed, without a copy, as
``(P, C)`` rows with ``P = N L``, ``L = H W`` and the channel fastest: element
``(n, c, l)`` at ``(n L + l) C + c``. The per-channel ``d = p1 - p2`` and ``q = p2``
vary along a row; beta is per ``(n, c)`` (``beta[n bsn + c bsc]``) or per pixel
(``beta[n bsn + l]``); see :mod:`acon_mm.ops.layout`. With ``u = d x``,
``s = sigmoid(beta u)`` and ``g = s + beta u s (1 - s)``:

* forward, ``ROWS x BLOCK_C`` tiles of (pixels x channels): ``y = u s + q x``, written
  channels_last;
* backward, programs over ``(n, pixel chunk, channel block)`` loop over their chunk
  in ``ROWS``-pixel steps, write ``dx = gout (d g + q)`` (channels_last) and keep the
  per-channel sums ``A = sum gout x g``, ``B = sum gout x`` and, for a per-(n, c) beta,
  ``Db = sum gout u^2 s (1 - s)`` in registers; each program stores them once to a
  small ``(N, n_chunks, 3, C)`` float32 buffer that torch sums over the chunks (no
  atomics, deterministic). A per-pixel beta's gradient is summed over the tile's
  channels in registers into an ``(n_cblocks, N, L)`` buffer.

So the only full-size tensors written are ``y`` (forward) and ``dx`` (backward).
``C`` is the only specialised size (a row start ``p C`` is 16-aligned when ``C`` is);
``N, L, P``, the chunk sizes and beta's strides are ``do_not_specialize``, and
``BLOCK_C`` comes from {16, 32, 64, 128}
(``ROWS = 2048 / BLOCK_C``), so the image size never causes a recompilation.
"""
import torch
from torch import Tensor

from ..layout import BETA_ROW, KernelLayout
from . import utils as _tu  # launch / device_guard / sm_count via the module
from .utils import HAS_TRITON, tl, triton

__all__ = ['acon_fwd_nhwc', 'acon_bwd_nhwc', 'BLOCK_C_BUCKETS']

#: The BLOCK_C tile widths of the NHWC kernels (ROWS = 2048 // BLOCK_C pixels).
BLOCK_C_BUCKETS = (16, 32, 64, 128)

if HAS_TRITON:
    from .utils import acon_bwd_elem

    @triton.jit(do_not_specialize=['P', 'L', 'bsn', 'bsc'])
    def _acon_fwd_nhwc_kernel(x_ptr, y_ptr, d_ptr, q_ptr, b_ptr, P, C, L, bsn, bsc,
                              BETA: tl.constexpr, ROWS: tl.constexpr,
                              BLOCK_C: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        rmask = rows < P
        cmask = cols < C
        mask = rmask[:, None] & cmask[None, :]
        p64 = rows.to(tl.int64)
        c64 = cols.to(tl.int64)
        d = tl.load(d_ptr + c64, mask=cmask, other=0.0)[None, :]
        q = tl.load(q_ptr + c64, mask=cmask, other=0.0)[None, :]
        offs = p64[:, None] * C + c64[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        n = p64 // L
        if BETA == 0:
            b = tl.load(b_ptr + (n * bsn)[:, None] + (c64 * bsc)[None, :], mask=mask,
                        other=0.0)
        else:
            b = tl.load(b_ptr + n * bsn + p64 % L, mask=rmask, other=0.0)[:, None]
        u = d * x
        y = u * tl.sigmoid(b * u) + q * x
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=['N', 'L', 'LPC', 'NCH', 'bsn', 'bsc'])
    def _acon_bwd_nhwc_kernel(go_ptr, x_ptr, dx_ptr, d_ptr, q_ptr, b_ptr, db_ptr, part_ptr,
                              N, C, L, LPC, NCH, bsn, bsc, BETA: tl.constexpr,
                              ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1)
        pid_c = tl.program_id(2)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        c64 = cols.to(tl.int64)
        d = tl.load(d_ptr + c64, mask=cmask, other=0.0)[None, :]
        q = tl.load(q_ptr + c64, mask=cmask, other=0.0)[None, :]
        if BETA == 0:
            b_row = tl.load(b_ptr + n * bsn + c64 * bsc, mask=cmask, other=0.0)[None, :]
        acc_a = tl.zeros([BLOCK_C], dtype=tl.float32)
        acc_b = tl.zeros([BLOCK_C], dtype=tl.float32)
        acc_d = tl.zeros([BLOCK_C], dtype=tl.float32)
        l_start = chunk * LPC
        l_end = tl.minimum(l_start + LPC, L)
        for l0 in range(l_start, l_end, ROWS):
            ls = l0 + tl.arange(0, ROWS)
            lmask = ls < l_end
            mask = lmask[:, None] & cmask[None, :]
            ls64 = ls.to(tl.int64)
            offs = (n * L + ls64)[:, None] * C + c64[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if BETA == 0:
                b = b_row
            else:
                b = tl.load(b_ptr + n * bsn + ls64, mask=lmask, other=0.0)[:, None]
            dx, g, dbt = acon_bwd_elem(x, go, d, q, b)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            gx = go * x
            acc_a += tl.sum(gx * g, axis=0)
            acc_b += tl.sum(gx, axis=0)
            if BETA == 0:
                acc_d += tl.sum(dbt, axis=0)
            else:
                tl.store(db_ptr + (pid_c * N + n) * L + ls64, tl.sum(dbt, axis=1),
                         mask=lmask)
        pbase = (n * NCH + chunk) * 3 * C
        tl.store(part_ptr + pbase + c64, acc_a, mask=cmask)
        tl.store(part_ptr + pbase + C + c64, acc_b, mask=cmask)
        tl.store(part_ptr + pbase + 2 * C + c64, acc_d, mask=cmask)


def _tiles(C: int):
    """(ROWS, BLOCK_C): the smallest channel bucket holding ``C`` (at most 128)."""
    block_c = next((b for b in BLOCK_C_BUCKETS if b >= C), BLOCK_C_BUCKETS[-1])
    return 2048 // block_c, block_c


def acon_fwd_nhwc(x: Tensor, lay: KernelLayout) -> Tensor:
    """Forward of a channels_last ``x``; the output is channels_last, ``x``'s dtype."""
    y = torch.empty_like(x, memory_format=torch.channels_last)
    if x.numel() == 0:
        return y
    P = lay.N * lay.L
    rows, block_c = _tiles(lay.C)
    grid = (triton.cdiv(P, rows), triton.cdiv(lay.C, block_c))
    with _tu.device_guard(x):
        _tu.launch(_acon_fwd_nhwc_kernel, grid,
               (x, y, lay.d, lay.q, lay.beta, P, lay.C, lay.L, lay.bsn, lay.bsc),
               dict(BETA=lay.bmode, ROWS=rows, BLOCK_C=block_c, num_warps=8))
    return y


def _chunks(N: int, L: int, ncb: int, rows: int, sms: int):
    """(pixels per chunk, number of chunks): about 4 programs per multiprocessor."""
    target = 4 * sms
    nch = max(1, min(triton.cdiv(L, rows), triton.cdiv(target, N * ncb)))
    lpc = triton.cdiv(triton.cdiv(L, nch), rows) * rows
    return lpc, triton.cdiv(L, lpc)


def acon_bwd_nhwc(go: Tensor, x: Tensor, lay: KernelLayout):
    """Backward of a channels_last ``x`` (``go`` channels_last, ``x``'s dtype):
    ``(dx, A, B, Db)`` as :func:`acon_mm.ops.triton.acon_bwd_triton`, ``dx``
    channels_last."""
    N, C, L = lay.N, lay.C, lay.L
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    rows, block_c = _tiles(C)
    ncb = triton.cdiv(C, block_c)
    lpc, nch = _chunks(N, max(L, 1), ncb, rows, _tu.sm_count(x))
    part = torch.zeros(N, nch, 3, C, dtype=torch.float32, device=x.device)
    if lay.bmode == BETA_ROW:
        db = part  # not written (the beta sums go to part)
    else:
        db = torch.zeros(ncb, N, L, dtype=torch.float32, device=x.device)
    if x.numel():
        with _tu.device_guard(x):
            _tu.launch(_acon_bwd_nhwc_kernel, (N, nch, ncb),
                   (go, x, dx, lay.d, lay.q, lay.beta, db, part, N, C, L, lpc, nch, lay.bsn,
                    lay.bsc),
                   dict(BETA=lay.bmode, ROWS=rows, BLOCK_C=block_c, num_warps=8))
    sums = part.sum(1)
    db = sums[:, 2] if lay.bmode == BETA_ROW else db.sum(0)
    return dx, sums[:, 0], sums[:, 1], db
