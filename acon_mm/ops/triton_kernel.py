"""Fused ACON kernels for CUDA, written in Triton.

Used by :class:`acon_mm.ops.AconFunction` for CUDA inputs when Triton is
importable (never on the CPU path). The input is viewed as ``(R, L)`` rows,
``R = N * C``, ``L = H * W``; the per-channel ``d = p1 - p2`` and ``q = p2`` and the
beta tensor (strides ``bsn, bsc, bsl`` over ``(n, c, l)``) come from
:func:`acon_mm.ops.acon_func._layout` in float32. Inputs may be float16, bfloat16
or float32: they are loaded in their own dtype and computed in float32.

* forward: 2-D tiles of ``ROWS x BLOCK_L`` elements, one pass.
* backward, per-row beta (scalar, per channel, per sample, per sample-and-channel):
  the same tiles; each writes ``dx`` and its rows' partial sums
  ``(sum gout x g, sum gout x, sum gout u^2 s (1 - s))`` to a small
  ``(R, n_lblocks, 3)`` float32 buffer, reduced by torch afterwards.
* backward, per-pixel beta ``(N, 1, H, W)``: programs over ``(n, l-block,
  channel chunk)`` loop over their channels, accumulating ``dbeta`` per pixel in
  registers (deterministic, no atomics) into a ``(n_chunks, N, L)`` buffer.

Note: written without access to a GPU; on CPU its logic can be checked with
Triton's interpreter (``TRITON_INTERPRET=1``), see
``tests/test_ops/test_acon_func.py::test_triton_kernels_in_interpreter``.
"""
import os

import torch

try:  # Triton is optional: only CUDA builds of torch ship it
    import triton
    import triton.language as tl
    _HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _HAS_TRITON = False

__all__ = ['triton_available', 'acon_fwd_triton', 'acon_bwd_triton']


def triton_available() -> bool:
    """Triton importable, a CUDA device present, not disabled by
    ``ACON_MM_DISABLE_TRITON=1``."""
    if not _HAS_TRITON or os.environ.get('ACON_MM_DISABLE_TRITON', '0') not in ('', '0'):
        return False
    return torch.cuda.is_available()


if _HAS_TRITON:

    @triton.jit
    def _acon_fwd_kernel(x_ptr, y_ptr, d_ptr, q_ptr, b_ptr, R, C, L, bsn, bsc, bsl,
                         ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
        rmask = rows < R
        mask = rmask[:, None] & (cols < L)[None, :]
        rows64 = rows.to(tl.int64)
        cols64 = cols.to(tl.int64)
        n = rows64 // C
        c = rows64 % C
        d = tl.load(d_ptr + c, mask=rmask, other=0.0)
        q = tl.load(q_ptr + c, mask=rmask, other=0.0)
        offs = rows64[:, None] * L + cols64[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + (n * bsn + c * bsc)[:, None] + cols64[None, :] * bsl,
                    mask=mask, other=0.0)
        u = d[:, None] * x
        y = u * tl.sigmoid(b * u) + q[:, None] * x
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _acon_bwd_row_kernel(go_ptr, x_ptr, dx_ptr, d_ptr, q_ptr, b_ptr, part_ptr, R, C, L,
                             NLB, bsn, bsc, ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
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
        b = tl.load(b_ptr + n * bsn + c * bsc, mask=rmask, other=0.0)[:, None]
        offs = rows64[:, None] * L + cols.to(tl.int64)[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        u = d * x
        s = tl.sigmoid(b * u)
        ss = s * (1.0 - s)
        g = s + b * u * ss
        tl.store(dx_ptr + offs, (go * (d * g + q)).to(dx_ptr.dtype.element_ty), mask=mask)
        gx = go * x
        pbase = (rows64 * NLB + pid_l) * 3
        tl.store(part_ptr + pbase, tl.sum(gx * g, axis=1), mask=rmask)
        tl.store(part_ptr + pbase + 1, tl.sum(gx, axis=1), mask=rmask)
        tl.store(part_ptr + pbase + 2, tl.sum(go * u * u * ss, axis=1), mask=rmask)

    @triton.jit
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
            u = d * x
            s = tl.sigmoid(b * u)
            ss = s * (1.0 - s)
            g = s + b * u * ss
            tl.store(dx_ptr + offs, (go * (d * g + q)).to(dx_ptr.dtype.element_ty),
                     mask=cmask)
            gx = go * x
            acc += go * u * u * ss
            pbase = (row * NLB + pid_l) * 3
            tl.store(part_ptr + pbase, tl.sum(gx * g, axis=0))
            tl.store(part_ptr + pbase + 1, tl.sum(gx, axis=0))
        tl.store(dbp_ptr + (pid_c * N + n) * L + cols64, acc, mask=cmask)


def _tiles(L: int):
    block_l = min(1024, triton.next_power_of_2(max(L, 1)))
    rows = max(1, min(64, 2048 // block_l))
    return rows, block_l


def _num_warps(rows: int, block_l: int) -> int:
    return 8 if rows * block_l >= 2048 else 4


def acon_fwd_triton(xc: torch.Tensor, lay) -> torch.Tensor:
    """Forward on a contiguous ``(N, C, *)`` CUDA input; the output has ``xc``'s dtype."""
    y = torch.empty_like(xc, memory_format=torch.contiguous_format)
    R = lay.N * lay.C
    if xc.numel() == 0:
        return y
    rows, block_l = _tiles(lay.L)
    grid = (triton.cdiv(R, rows), triton.cdiv(lay.L, block_l))
    _acon_fwd_kernel[grid](xc, y, lay.d, lay.q, lay.beta, R, lay.C, lay.L, lay.bsn, lay.bsc,
                           lay.bsl, ROWS=rows, BLOCK_L=block_l,
                           num_warps=_num_warps(rows, block_l))
    return y


def acon_bwd_triton(go: torch.Tensor, xc: torch.Tensor, lay):
    """Backward: ``dx`` (dtype of ``xc``) and the per-(n, c) sums ``A, B`` plus
    ``Db`` per (n, c) or, for a per-pixel beta, dbeta per (n, l)."""
    N, C, L = lay.N, lay.C, lay.L
    R = N * C
    dx = torch.empty_like(xc, memory_format=torch.contiguous_format)
    go = go.to(xc.dtype) if go.dtype != xc.dtype else go
    rows, block_l = _tiles(L)
    nlb = triton.cdiv(max(L, 1), block_l)
    part = torch.zeros(R, nlb, 3, dtype=torch.float32, device=xc.device)
    dbp = None
    if xc.numel() == 0:
        sums = part.view(N, C, nlb, 3).sum(2)
        dbp = torch.zeros(N, L, device=xc.device) if lay.bsl else sums[..., 2]
        return dx, sums[..., 0], sums[..., 1], dbp
    if not lay.bsl:
        grid = (triton.cdiv(R, rows), nlb)
        _acon_bwd_row_kernel[grid](go, xc, dx, lay.d, lay.q, lay.beta, part, R, C, L, nlb,
                                   lay.bsn, lay.bsc, ROWS=rows, BLOCK_L=block_l,
                                   num_warps=_num_warps(rows, block_l))
    else:
        try:
            sms = torch.cuda.get_device_properties(xc.device).multi_processor_count
        except (RuntimeError, AssertionError, AttributeError):  # interpreter / CPU
            sms = 1
        target = 4 * sms
        nchunks = max(1, min(C, triton.cdiv(target, N * nlb)))
        cb = triton.cdiv(C, nchunks)
        nchunks = triton.cdiv(C, cb)
        dbp_part = torch.zeros(nchunks, N, L, dtype=torch.float32, device=xc.device)
        grid = (N, nlb, nchunks)
        _acon_bwd_pix_kernel[grid](go, xc, dx, lay.d, lay.q, lay.beta, part, dbp_part, N, C,
                                   L, nlb, lay.bsn, cb, BLOCK_L=block_l,
                                   num_warps=4 if block_l <= 256 else 8)
        dbp = dbp_part.sum(0)
    sums = part.view(N, C, nlb, 3).sum(2)
    return dx, sums[..., 0], sums[..., 1], (dbp if lay.bsl else sums[..., 2])
