"""Fused ACON CPU kernels: a small C++/OpenMP library compiled on first use.

The kernels compute, for an input viewed as ``(N, C, L)`` (``L`` = H*W),

* forward: ``y = u * s + q * x`` with ``d = p1 - p2``, ``q = p2``, ``u = d x``,
  ``s = sigmoid(beta u)``, in one pass over ``x``;
* backward: ``dx = g_out (d g + q)`` with ``g = s + beta u s (1 - s)``, and in the
  same pass the per-(sample, channel) sums ``sum g_out x g``, ``sum g_out x`` and
  ``sum g_out u^2 s (1 - s)`` (or, for a per-pixel beta, the per-(sample, pixel)
  sum over channels of the last term) from which the parameter gradients follow.

float32 rows are walked row by row (longer rows in segments), except rows of
16 <= L < 256 values that are not a multiple of the vector width (7x7, 14x14), which
are walked as one flat array of vectors (see ``flat_rows`` in the source).

Why not ``torch.utils.cpp_extension``: the library needs no torch headers (it is
called through :mod:`ctypes` with raw pointers), so it compiles in about a second
with the system C++ compiler instead of the ~30 s that ``torch/extension.h`` takes
on a small CI machine; it is the fallback of :mod:`acon_mm.ops.cpu_ext`, which
compiles this same source into C++ autograd functions. Threads come from OpenMP
(``libgomp``, the runtime torch's wheels use, so both share one pool; the thread count
follows ``torch.get_num_threads()``), vectorisation from GCC/Clang vector extensions (16
floats with AVX-512, 8 with AVX2, built with ``-march=native``) with a Cephes-accurate
``expf`` (about 1 ulp); the float64 entry points (used by ``gradcheck``) are plain loops
with ``std::exp``.

The library is cached under ``$ACON_MM_CACHE_DIR`` (default ``~/.cache/acon_mm``),
keyed by source, flags, compiler and CPU flags (it is built with
``-march=native``). If no compiler works, :func:`load_cpu_kernels` returns ``None``
and :mod:`acon_mm.ops.acon_func` falls back to the pure-PyTorch fused function.
"""
import ctypes
import hashlib
import os
import os.path as osp
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Optional

__all__ = ['load_cpu_kernels', 'cpu_kernel_error', 'CpuKernels', 'kernel_cache_dir']

_SOURCE = r'''
// acon-mm fused ACON CPU kernels (see acon_mm/ops/cpu_kernel.py).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef int64_t i64;

// ---------------------------------------------------------------------------
// Scalar element functions (float64 entry points, float32 tails).
// ---------------------------------------------------------------------------
static inline float acon_exp(float x) {
  // Cephes expf (about 1 ulp).
  x = std::max(x, -87.3f);
  x = std::min(x, 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: rounds to the nearest integer
  float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = r * 1.9875691500E-4f + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

static inline double acon_exp(double x) { return std::exp(x); }

template <typename T>
static inline T acon_sigmoid(T z) { return T(1) / (T(1) + acon_exp(-z)); }

// y = u s + q x with u = d x, s = sigmoid(b u)
template <typename T>
static inline T elem_fwd(T x, T d, T q, T b) {
  T u = d * x;
  return u * acon_sigmoid(b * u) + q * x;
}

// dx = g (d gate + q), gate = s + b u s (1 - s); accumulates g x gate, g x and
// g u^2 s (1 - s) (the last one is returned for a per-pixel beta).
template <typename T>
static inline T elem_bwd(T gv, T xv, T d, T q, T b, T* dx, T& sa, T& sb, T& sc) {
  T u = d * xv;
  T s = acon_sigmoid(b * u);
  T ss = s * (T(1) - s);
  T gate = s + b * u * ss;
  *dx = gv * (d * gate + q);
  T gx = gv * xv;
  T t = gv * u * u * ss;
  sa += gx * gate;
  sb += gx;
  sc += t;
  return t;
}

// ---------------------------------------------------------------------------
// Segment functions: one contiguous run of a (n, c) row.
// ---------------------------------------------------------------------------
template <typename T>
static inline void seg_fwd(const T* __restrict x, T* __restrict y, i64 len, T d, T q, T b,
                           const T* __restrict bp) {
  for (i64 l = 0; l < len; ++l) y[l] = elem_fwd<T>(x[l], d, q, bp ? bp[l] : b);
}

template <typename T>
static inline void seg_bwd(const T* __restrict go, const T* __restrict x, T* __restrict dx,
                           i64 len, T d, T q, T b, const T* __restrict bp, T* __restrict dbp,
                           double* sums) {
  T sa = 0, sb = 0, sc = 0;
  for (i64 l = 0; l < len; ++l) {
    T t = elem_bwd<T>(go[l], x[l], d, q, bp ? bp[l] : b, dx + l, sa, sb, sc);
    if (dbp) dbp[l] += t;
  }
  sums[0] = sa;
  sums[1] = sb;
  sums[2] = dbp ? 0 : sc;
}

// float32: explicit vectors (GCC/Clang vector extensions): 16 floats with
// AVX-512 (-march=native on a CPU that has it), 8 otherwise (AVX2, or two SSE
// halves); a row's tail is one masked vector.  Written with vector types rather
// than left to the auto-vectoriser: from scalar code gcc turns the exp clamps into
// branches and duplicates the division per branch, which made the kernels ~3x
// slower.  The sigmoid's division is a hardware reciprocal estimate refined by
// one Newton step where AVX-512 has one (rcp14: 14 bits -> ~24 bits, about 1 ulp).
#if defined(__AVX512F__)
#define ACON_VW 16
#else
#define ACON_VW 8
#endif
typedef float vf __attribute__((vector_size(ACON_VW * 4)));
typedef int32_t vi __attribute__((vector_size(ACON_VW * 4)));

static inline vf vbc(float a) { return (vf){} + a; }

static inline vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(vf));
  return v;
}

static inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof(vf)); }

// The first m < ACON_VW lanes (zero-filled beyond): a row's tail as one vector.
static inline vf vload_part(const float* p, i64 m) {
#if defined(__AVX512F__)
  return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1u), p);
#elif defined(__AVX2__)
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const vi mask = lane < (int32_t)m;
  return (vf)_mm256_maskload_ps(p, (__m256i)mask);
#else
  float t[ACON_VW] = {0};
  for (i64 i = 0; i < m; ++i) t[i] = p[i];
  return vload(t);
#endif
}

static inline void vstore_part(float* p, vf v, i64 m) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << m) - 1u), (__m512)v);
#elif defined(__AVX2__)
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const vi mask = lane < (int32_t)m;
  _mm256_maskstore_ps(p, (__m256i)mask, (__m256)v);
#else
  for (i64 i = 0; i < m; ++i) p[i] = v[i];
#endif
}

// always inlined: an out-of-line call in a row loop spills the vector registers
__attribute__((always_inline)) static inline vf vexp(vf x) {
  const vf lo = vbc(-87.3f), hi = vbc(88.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
#if defined(__AVX512F__)
  const vf n = (vf)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const vf magic = vbc(12582912.0f);
  const vf n = (x * 1.44269504088896341f + magic) - magic;
#endif
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = r * 1.9875691500E-4f + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + (r + 1.0f);
#if defined(__AVX512F__)
  return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);  // p * 2^n in one instruction
#else
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof(vf));
  return p * scale;
#endif
}

// 1 / a for a in [1, 1 + e^87.3]
__attribute__((always_inline)) static inline vf vrecip(vf a) {
#if defined(__AVX512F__)
  vf r = (vf)_mm512_rcp14_ps((__m512)a);
  return r * (2.0f - a * r);
#else
  return 1.0f / a;
#endif
}

__attribute__((always_inline)) static inline vf vsigmoid(vf z) { return vrecip(1.0f + vexp(-z)); }

static inline float vsum(vf v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)v);
#else
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
#endif
}

template <>
inline void seg_fwd<float>(const float* __restrict x, float* __restrict y, i64 len, float d,
                           float q, float b, const float* __restrict bp) {
  i64 l = 0;
  if (bp) {
    for (; l + ACON_VW <= len; l += ACON_VW) {
      vf xv = vload(x + l);
      vf u = d * xv;
      vstore(y + l, u * vsigmoid(vload(bp + l) * u) + q * xv);
    }
  } else {
    const float bd = b * d;
    for (; l + ACON_VW <= len; l += ACON_VW) {
      vf xv = vload(x + l);
      vstore(y + l, (d * xv) * vsigmoid(bd * xv) + q * xv);
    }
  }
  if (l < len) {
    const i64 m = len - l;
    vf xv = vload_part(x + l, m);
    vf bv = bp ? vload_part(bp + l, m) : vbc(b);
    vf u = d * xv;
    vstore_part(y + l, u * vsigmoid(bv * u) + q * xv, m);
  }
}

// One vector of the backward with beta given per lane (u = d x, s = sigmoid(beta u)):
// returns dx and sets gate = s + beta u s (1 - s), gx = g x and the beta term
// bt = g u^2 s (1 - s).  Zero-filled padding lanes give zeros.
__attribute__((always_inline)) static inline vf bwd_lanes(vf xv, vf gv, vf bv, float d,
                                                          float q, vf& gate, vf& gx,
                                                          vf& bt) {
  const vf u = d * xv;
  const vf s = vsigmoid(bv * u);
  const vf ss = s * (1.0f - s);
  gate = s + bv * u * ss;
  gx = gv * xv;
  bt = gv * u * u * ss;
  return gv * (d * gate + q);
}

// The backward of one row (or segment) with a beta constant over it, accumulating (no
// horizontal sums): va += g x gate, vb += g x, vc += g x u s (1 - s) (times d: the beta
// term), vt += the beta term of the masked tail.  seg_bwd<float> sums them per segment;
// bwd_channel_major calls it channel by channel, so the sums over the samples stay in
// registers and a channel needs one horizontal sum instead of one per row.
// Always inlined, and the sums kept in locals until the end: called out of line (g++
// did so in the torch extension), the accumulators behind the references were loaded
// and stored on every vector (dx may alias them), which made the backward 1.4x slower.
__attribute__((always_inline)) static inline void row_bwd_acc(
    const float* __restrict go, const float* __restrict x, float* __restrict dx, i64 len,
    float d, float q, float b, vf& va_out, vf& vb_out, vf& vc_out, vf& vt_out) {
  vf va = va_out, vb = vb_out, vc = vc_out, vt = vt_out;
  const float bd = b * d;
  i64 l = 0;
  for (; l + ACON_VW <= len; l += ACON_VW) {
    vf xv = vload(x + l), gv = vload(go + l);
    vf z = bd * xv;
    vf s = vsigmoid(z);
    vf ss = s - s * s;
    vf gate = s + z * ss;
    vstore(dx + l, gv * (d * gate + q));
    vf gx = gv * xv;
    va += gx * gate;
    vb += gx;
    vc += gx * ((d * xv) * ss);
  }
  if (l < len) {
    const i64 m = len - l;
    vf gate, gx, bt;
    vstore_part(dx + l,
                bwd_lanes(vload_part(x + l, m), vload_part(go + l, m), vbc(b), d, q, gate,
                          gx, bt),
                m);
    va += gx * gate;
    vb += gx;
    vt += bt;
  }
  va_out = va;
  vb_out = vb;
  vc_out = vc;
  vt_out = vt;
}

template <>
inline void seg_bwd<float>(const float* __restrict go, const float* __restrict x,
                           float* __restrict dx, i64 len, float d, float q, float b,
                           const float* __restrict bp, float* __restrict dbp,
                           double* sums) {
  vf va = vbc(0), vb = vbc(0), vc = vbc(0), vt = vbc(0);
  if (!bp) {  // beta constant over the row (bp and dbp are given together)
    row_bwd_acc(go, x, dx, len, d, q, b, va, vb, vc, vt);
    sums[0] = vsum(va);
    sums[1] = vsum(vb);
    sums[2] = double(d) * vsum(vc) + vsum(vt);
    return;
  }
  i64 l = 0;
  vf gate, gx, bt;
  for (; l + ACON_VW <= len; l += ACON_VW) {
    vstore(dx + l,
           bwd_lanes(vload(x + l), vload(go + l), vload(bp + l), d, q, gate, gx, bt));
    va += gx * gate;
    vb += gx;
    vstore(dbp + l, vload(dbp + l) + bt);
  }
  if (l < len) {  // the tail, zero-filled: the padding lanes add nothing
    const i64 m = len - l;
    vstore_part(dx + l,
                bwd_lanes(vload_part(x + l, m), vload_part(go + l, m), vload_part(bp + l, m),
                          d, q, gate, gx, bt),
                m);
    va += gx * gate;
    vb += gx;
    vstore_part(dbp + l, vload_part(dbp + l, m) + bt, m);
  }
  sums[0] = vsum(va);
  sums[1] = vsum(vb);
  sums[2] = 0;
}

// ---------------------------------------------------------------------------
// Drivers.  x, y, go, dx: (N, C, L) contiguous; d, q: (C,); beta(n, c, l) =
// beta[n*bsn + c*bsc + l*bsl] with bsl in {0, 1} (bsl == 1 needs bsc == 0: a
// per-pixel beta shared by the channels).  Rows are cut into segments of at
// most `seg` elements, the unit of parallel work.
// ---------------------------------------------------------------------------
static inline bool go_parallel(i64 work_items, i64 numel) {
  return work_items > 1 && numel > 32768;
}

// Calls f(row, n, c, k) for the work items t = row * nseg + k of a (R, nseg) grid,
// row = n * C + c, split statically over the threads; indices are stepped, not
// divided (integer divisions per row cost as much as a 7x7 row's arithmetic).
template <typename F>
static inline void for_items(i64 R, i64 C, i64 nseg, int nthreads, bool par, F f) {
  const i64 total = R * nseg;
#pragma omp parallel num_threads(nthreads) if (par)
  {
    i64 nt = 1, id = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    id = omp_get_thread_num();
#endif
    const i64 t0 = total * id / nt, t1 = total * (id + 1) / nt;
    if (t0 < t1) {
      i64 row = t0 / nseg, k = t0 % nseg;
      i64 n = row / C, c = row % C;
      for (i64 t = t0; t < t1; ++t) {
        f(row, n, c, k);
        if (++k == nseg) {
          k = 0;
          ++row;
          if (++c == C) {
            c = 0;
            ++n;
          }
        }
      }
    }
  }
}

// Channel-major backward for float32, rows of at most one segment and a per-row
// beta: dp1, dp2 per channel, and the beta term per row (written to sums[3 r + 2]
// when beta varies over the samples) or per channel.  dbeta_acc (doubles, indexed
// like beta) receives the beta term.  Returns false where it does not apply.
template <typename T>
static inline bool bwd_channel_major(const T*, const T*, T*, const T*, const T*, const T*,
                                     i64, i64, i64, i64, i64, double*, T*, T*, double*,
                                     int) {
  return false;
}

template <>
inline bool bwd_channel_major<float>(const float* go, const float* x, float* dx,
                                     const float* d, const float* q, const float* beta,
                                     i64 N, i64 C, i64 L, i64 bsn, i64 bsc, double* sums,
                                     float* dp1, float* dp2, double* dbeta_acc,
                                     int nthreads) {
  // Longer rows go row-major: a channel's rows lie N * C * L apart, so channel order
  // restarts the hardware prefetcher at every row; measured on 8x128x28x28 (rows of
  // 784), row order with a horizontal sum per row is 0.1-0.2x SiLU faster.
  if (!dp1 || !dp2 || L > 512) return false;
  for_items(C, C, 1, nthreads, go_parallel(C, N * C * L), [&](i64 c, i64, i64, i64) {
    const vf zero = vbc(0);
    vf va = zero, vb = zero, vc = zero, vt = zero;
    double db_ch = 0;
    for (i64 n = 0; n < N; ++n) {
      const i64 row = n * C + c, off = row * L;
      if (bsn) {  // beta per sample: the beta term per row
        vf rc = zero, rt = zero;
        row_bwd_acc(go + off, x + off, dx + off, L, d[c], q[c], beta[n * bsn + c * bsc],
                    va, vb, rc, rt);
        const double t = double(d[c]) * vsum(rc) + vsum(rt);
        if (sums) sums[3 * row + 2] = t;
        if (dbeta_acc) dbeta_acc[row] = t;  // filled per (n, c); reduced by the caller
      } else {
        row_bwd_acc(go + off, x + off, dx + off, L, d[c], q[c], beta[c * bsc], va, vb, vc,
                    vt);
      }
    }
    const double A = vsum(va), B = vsum(vb);
    dp1[c] = float(A);
    dp2[c] = float(B - A);
    if (!bsn) {
      db_ch = double(d[c]) * vsum(vc) + vsum(vt);
      if (dbeta_acc) dbeta_acc[c] = db_ch;
    }
  });
  return true;
}

// Flat layout for short rows (float32): rows of L elements, ACON_VW <= L < 256 and
// L not a multiple of the vector width (7x7 = 49 = 3 x 16 + 1), are walked as one
// contiguous array of vectors instead of row by row, so no lanes are wasted on each
// row's tail (a 7x7 row otherwise costs four vectors' work for 49 values, 31% more).
// A vector spans at most two rows: its lanes from k on take the next row's
// parameters (a blend), and in backward its contributions are split between the two
// rows' sums with the same lane mask.  Each thread takes whole rows [r0, r1) (the
// split of the pooling and of the row-split passes), so every row's sums are made by
// one thread in a fixed order.
static inline bool flat_rows(i64 L) {
  return L >= ACON_VW && L < 256 && L % ACON_VW != 0;
}

// ... for the element type T (the flat kernels are float32 only)
template <typename T>
static inline bool flat_layout(i64 L) {
  return sizeof(T) == 4 && flat_rows(L);
}

// Calls f(r0, r1) once per thread with its share of R rows.
template <typename F>
static inline void for_ranges(i64 R, int nthreads, bool par, F f) {
#pragma omp parallel num_threads(nthreads) if (par)
  {
    i64 nt = 1, id = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    id = omp_get_thread_num();
#endif
    const i64 r0 = R * id / nt, r1 = R * (id + 1) / nt;
    if (r0 < r1) f(r0, r1);
  }
}

// The parameters of one row as vectors: d, q and beta * d.
struct RowParams {
  vf d, q, bd;
  float ds;
};

static inline RowParams row_params(const float* d, const float* q, const float* beta,
                                   i64 n, i64 c, i64 bsn, i64 bsc) {
  const float dc = d[c];
  return {vbc(dc), vbc(q[c]), vbc(beta[n * bsn + c * bsc] * dc), dc};
}

static inline vi lane_index() {
#if defined(__AVX512F__)
  return (vi){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#else
  return (vi){0, 1, 2, 3, 4, 5, 6, 7};
#endif
}

static void flat_fwd(const float* x, float* y, const float* d, const float* q,
                     const float* beta, i64 N, i64 C, i64 L, i64 bsn, i64 bsc,
                     int nthreads) {
  for_ranges(N * C, nthreads, go_parallel(N * C, N * C * L), [&](i64 r0, i64 r1) {
    const vi lane = lane_index();
    i64 n = r0 / C, c = r0 % C;
    i64 e = r0 * L, rowend = e + L;
    const i64 end = r1 * L;
    RowParams cur = row_params(d, q, beta, n, c, bsn, bsc);
    while (e < end) {
      const i64 m = std::min<i64>(ACON_VW, end - e), k = rowend - e;
      vf dv = cur.d, qv = cur.q, bv = cur.bd;
      if (k <= m) {  // the row ends in this vector: lanes from k on are the next row's
        if (++c == C) {
          c = 0;
          ++n;
        }
        rowend += L;
        if (rowend - L < end) {
          cur = row_params(d, q, beta, n, c, bsn, bsc);
          const vi hi = lane >= (int32_t)k;
          dv = hi ? cur.d : dv;
          qv = hi ? cur.q : qv;
          bv = hi ? cur.bd : bv;
        }
      }
      const vf xv = m == ACON_VW ? vload(x + e) : vload_part(x + e, m);
      const vf r = (dv * xv) * vsigmoid(bv * xv) + qv * xv;
      if (m == ACON_VW)
        vstore(y + e, r);
      else
        vstore_part(y + e, r, m);
      e += ACON_VW;
    }
  });
}

// sums: (N, C, 3) doubles, per row the sums of g x gate, g x and g u^2 s (1 - s).
static void flat_bwd(const float* go, const float* x, float* dx, const float* d,
                     const float* q, const float* beta, i64 N, i64 C, i64 L, i64 bsn,
                     i64 bsc, double* sums, int nthreads) {
  for_ranges(N * C, nthreads, go_parallel(N * C, N * C * L), [&](i64 r0, i64 r1) {
    const vi lane = lane_index();
    const vf zero = vbc(0);
    i64 n = r0 / C, c = r0 % C, row = r0;
    i64 e = r0 * L, rowend = e + L;
    const i64 end = r1 * L;
    RowParams cur = row_params(d, q, beta, n, c, bsn, bsc);
    vf va = zero, vb = zero, vc = zero;  // the current row's partial sums
    auto flush = [&](float ds) {  // vc holds g x^2 s (1 - s): times d^2
      sums[3 * row] = vsum(va);
      sums[3 * row + 1] = vsum(vb);
      sums[3 * row + 2] = double(ds) * ds * vsum(vc);
      ++row;
    };
    while (e < end) {
      const i64 m = std::min<i64>(ACON_VW, end - e), k = rowend - e;
      const bool last = k <= m;  // the row ends in this vector
      const float ds = cur.ds;
      vf dv = cur.d, qv = cur.q, bv = cur.bd;
      vi hi = lane < 0;  // all false
      if (last) {
        if (++c == C) {
          c = 0;
          ++n;
        }
        rowend += L;
        if (k < m) {  // and the next one starts in it
          cur = row_params(d, q, beta, n, c, bsn, bsc);
          hi = lane >= (int32_t)k;
          dv = hi ? cur.d : dv;
          qv = hi ? cur.q : qv;
          bv = hi ? cur.bd : bv;
        } else if (rowend - L < end) {
          cur = row_params(d, q, beta, n, c, bsn, bsc);
        }
      }
      vf xv, gv;
      if (m == ACON_VW) {
        xv = vload(x + e);
        gv = vload(go + e);
      } else {  // zero-filled: the padding lanes add nothing
        xv = vload_part(x + e, m);
        gv = vload_part(go + e, m);
      }
      const vf z = bv * xv;
      const vf s = vsigmoid(z);
      const vf ss = s - s * s;
      const vf gate = s + z * ss;
      const vf r = gv * (dv * gate + qv);
      if (m == ACON_VW)
        vstore(dx + e, r);
      else
        vstore_part(dx + e, r, m);
      const vf gx = gv * xv;
      const vf ca = gx * gate, cc = gx * (xv * ss);
      if (!last) {
        va += ca;
        vb += gx;
        vc += cc;
      } else {
        va += hi ? zero : ca;
        vb += hi ? zero : gx;
        vc += hi ? zero : cc;
        flush(ds);
        va = hi ? ca : zero;
        vb = hi ? gx : zero;
        vc = hi ? cc : zero;
      }
      e += ACON_VW;
    }
  });
}

// dx[row, :] += v[row] for rows of the flat layout (meta-ACON's pooled gradient), with
// flat_bwd's split of the rows over the threads.
static void flat_add_rows(float* dx, const float* v, i64 R, i64 L, int nthreads) {
  for_ranges(R, nthreads, go_parallel(R, R * L), [&](i64 r0, i64 r1) {
    const vi lane = lane_index();
    i64 row = r0, e = r0 * L, rowend = e + L;
    const i64 end = r1 * L;
    while (e < end) {
      const i64 m = std::min<i64>(ACON_VW, end - e), k = rowend - e;
      vf vv = vbc(v[row]);
      if (k <= m) {
        ++row;
        rowend += L;
        if (k < m) vv = lane >= (int32_t)k ? vbc(v[row]) : vv;
      }
      if (m == ACON_VW)
        vstore(dx + e, vload(dx + e) + vv);
      else
        vstore_part(dx + e, vload_part(dx + e, m) + vv, m);
      e += ACON_VW;
    }
  });
}

// m[row] = mean of x[row, :L] for rows of the flat layout (meta-ACON's pooling), with
// flat_fwd's split of the rows over the threads.
static void flat_row_means(const float* x, float* mean, i64 R, i64 L, int nthreads) {
  for_ranges(R, nthreads, go_parallel(R, R * L), [&](i64 r0, i64 r1) {
    const vi lane = lane_index();
    const vf zero = vbc(0);
    i64 row = r0, e = r0 * L, rowend = e + L;
    const i64 end = r1 * L;
    vf acc = zero;
    while (e < end) {
      const i64 m = std::min<i64>(ACON_VW, end - e), k = rowend - e;
      const vf xv = m == ACON_VW ? vload(x + e) : vload_part(x + e, m);
      if (k <= m) {  // the row ends in this vector
        const vi hi = lane >= (int32_t)k;
        acc += hi ? zero : xv;
        mean[row] = float(double(vsum(acc)) / L);
        acc = hi ? xv : zero;
        ++row;
        rowend += L;
      } else {
        acc += xv;
      }
      e += ACON_VW;
    }
  });
}

// float32 only (the double kernels keep the row layout)
template <typename T>
static inline bool flat_fwd_t(const T*, T*, const T*, const T*, const T*, i64, i64, i64,
                              i64, i64, int) {
  return false;
}
template <>
inline bool flat_fwd_t<float>(const float* x, float* y, const float* d, const float* q,
                              const float* beta, i64 N, i64 C, i64 L, i64 bsn, i64 bsc,
                              int nthreads) {
  flat_fwd(x, y, d, q, beta, N, C, L, bsn, bsc, nthreads);
  return true;
}
template <typename T>
static inline bool flat_bwd_t(const T*, const T*, T*, const T*, const T*, const T*, i64, i64,
                              i64, i64, i64, double*, int) {
  return false;
}
template <>
inline bool flat_bwd_t<float>(const float* go, const float* x, float* dx, const float* d,
                              const float* q, const float* beta, i64 N, i64 C, i64 L,
                              i64 bsn, i64 bsc, double* sums, int nthreads) {
  flat_bwd(go, x, dx, d, q, beta, N, C, L, bsn, bsc, sums, nthreads);
  return true;
}

template <typename T>
static void acon_fwd(const T* x, T* y, const T* d, const T* q, const T* beta, i64 N, i64 C,
                     i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, int nthreads) {
  if (!bsl && flat_rows(L) && flat_fwd_t(x, y, d, q, beta, N, C, L, bsn, bsc, nthreads))
    return;
  const i64 nseg = std::max<i64>(1, (L + seg - 1) / seg);
  for_items(N * C, C, nseg, nthreads, go_parallel(N * C * nseg, N * C * L),
            [&](i64 row, i64 n, i64 c, i64 k) {
              const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
              const T* b0 = beta + n * bsn + c * bsc;
              seg_fwd<T>(x + row * L + l0, y + row * L + l0, len, d[c], q[c], *b0,
                         bsl ? b0 + l0 : nullptr);
            });
}

// sums (optional): (N, C, 3) doubles, written: per (n, c) the sums of g x gate,
// g x and (for a per-row beta) g u^2 s (1 - s).  dbeta_pix (only for bsl == 1):
// (N, L), zeroed by the caller; the work is then split over (n, segment) with the
// channel loop inside, so no two threads write the same element.  dp1, dp2 (C,)
// and, for a per-row beta, dbeta (indexed like beta) are optional outputs: the
// parameter gradients reduced over the samples (in a fixed order: deterministic).
template <typename T>
static void acon_bwd(const T* go, const T* x, T* dx, const T* d, const T* q, const T* beta,
                     i64 N, i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, double* sums,
                     T* dbeta_pix, T* dp1, T* dp2, T* dbeta, int nthreads) {
  const i64 nseg = std::max<i64>(1, (L + seg - 1) / seg);
  const bool flat = !bsl && flat_layout<T>(L);
  if (!bsl && nseg == 1 && dp1 && dp2 && !flat) {
    // per row (bsn != 0) or per channel; reduced to beta's layout below
    std::vector<double> dbacc(bsn ? N * C : C, 0.0);
    if (bwd_channel_major<T>(go, x, dx, d, q, beta, N, C, L, bsn, bsc, sums, dp1, dp2,
                             dbacc.data(), nthreads)) {
      if (dbeta) {
        const i64 nb = (N - 1) * bsn + (C - 1) * bsc + 1;
        std::vector<double> acc(nb, 0.0);
        if (bsn) {
          for (i64 n = 0; n < N; ++n)
            for (i64 c = 0; c < C; ++c) acc[n * bsn + c * bsc] += dbacc[n * C + c];
        } else {
          for (i64 c = 0; c < C; ++c) acc[c * bsc] += dbacc[c];
        }
        for (i64 i = 0; i < nb; ++i) dbeta[i] = T(acc[i]);
      }
      return;
    }
  }
  std::vector<double> scratch, own;
  if (!sums) {
    own.assign(N * C * 3, 0.0);
    sums = own.data();
  }
  double* part = sums;  // (N, C, nseg, 3)
  if (nseg > 1) {
    scratch.assign(N * C * nseg * 3, 0.0);
    part = scratch.data();
  }
  if (flat) {  // nseg == 1: the sums per row directly
    flat_bwd_t<T>(go, x, dx, d, q, beta, N, C, L, bsn, bsc, sums, nthreads);
  } else if (!bsl) {
    for_items(N * C, C, nseg, nthreads, go_parallel(N * C * nseg, N * C * L),
              [&](i64 row, i64 n, i64 c, i64 k) {
                const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
                const i64 off = row * L + l0;
                seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c],
                           beta[n * bsn + c * bsc], nullptr, nullptr,
                           part + 3 * (row * nseg + k));
              });
  } else {
    for_items(N, 1, nseg, nthreads, go_parallel(N * nseg, N * C * L),
              [&](i64 n, i64, i64, i64 k) {
                const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
                T* db = dbeta_pix + n * L + l0;
                for (i64 c = 0; c < C; ++c) {
                  const i64 row = n * C + c;
                  const i64 off = row * L + l0;
                  seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c], T(0),
                             beta + n * bsn + l0, db, part + 3 * (row * nseg + k));
                }
              });
  }
  if (nseg > 1) {
    for (i64 row = 0; row < N * C; ++row) {
      double a = 0, b = 0, c = 0;
      for (i64 k = 0; k < nseg; ++k) {
        const double* p = part + 3 * (row * nseg + k);
        a += p[0];
        b += p[1];
        c += p[2];
      }
      sums[3 * row] = a;
      sums[3 * row + 1] = b;
      sums[3 * row + 2] = c;
    }
  }
  if (dp1 || dp2) {
    for (i64 c = 0; c < C; ++c) {
      double a = 0, b = 0;
      for (i64 n = 0; n < N; ++n) {
        a += sums[3 * (n * C + c)];
        b += sums[3 * (n * C + c) + 1];
      }
      if (dp1) dp1[c] = T(a);
      if (dp2) dp2[c] = T(b - a);
    }
  }
  if (dbeta && !bsl) {
    const i64 nb = (N - 1) * bsn + (C - 1) * bsc + 1;
    std::vector<double> acc(nb, 0.0);
    for (i64 n = 0; n < N; ++n)
      for (i64 c = 0; c < C; ++c) acc[n * bsn + c * bsc] += sums[3 * (n * C + c) + 2];
    for (i64 i = 0; i < nb; ++i) dbeta[i] = T(acc[i]);
  }
}

// ---------------------------------------------------------------------------
// meta-ACON-C with the channel switch, fused: GAP -> fc1 -> bn1 -> fc2 -> bn2 ->
// sigmoid -> ACON in one call forward and one backward (the switch network is a
// few (N, C) x (C, H) products: computed here in the input's precision, as the
// modules compute it, with no per-op overhead).
//
// A norm is given as (mode, weight, bias, running_mean, running_var, eps, factor):
// mode 0: none (identity); 1: batch statistics (training), running statistics
// updated with `factor` when running_mean is given; 2: running statistics (eval,
// and the batch-1 fallback of AconSwitchBN).
// ---------------------------------------------------------------------------
template <typename T>
struct NormSpec {
  int mode;
  const T* w;
  const T* b;
  T* rm;
  T* rv;
  double eps, factor;
};

typedef double vd __attribute__((vector_size(64)));

// sum_i a[i] b[i] with two vector-wide partial sums
static inline double dotd(const double* a, const double* b, i64 n) {
  vd s0 = (vd){} + 0.0, s1 = (vd){} + 0.0;
  i64 i = 0;
  for (; i + 16 <= n; i += 16) {
    vd a0, a1, b0, b1;
    std::memcpy(&a0, a + i, 64);
    std::memcpy(&a1, a + i + 8, 64);
    std::memcpy(&b0, b + i, 64);
    std::memcpy(&b1, b + i + 8, 64);
    s0 += a0 * b0;
    s1 += a1 * b1;
  }
  s0 += s1;
  double t = ((s0[0] + s0[4]) + (s0[1] + s0[5])) + ((s0[2] + s0[6]) + (s0[3] + s0[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

static inline double dot(const double* a, const double* b, i64 n) { return dotd(a, b, n); }

static inline float dot(const float* a, const float* b, i64 n) {
  vf s0 = vbc(0), s1 = vbc(0);
  i64 i = 0;
  for (; i + 2 * ACON_VW <= n; i += 2 * ACON_VW) {
    s0 += vload(a + i) * vload(b + i);
    s1 += vload(a + i + ACON_VW) * vload(b + i + ACON_VW);
  }
  if (i + ACON_VW <= n) {
    s0 += vload(a + i) * vload(b + i);
    i += ACON_VW;
  }
  if (i < n) s1 += vload_part(a + i, n - i) * vload_part(b + i, n - i);
  return vsum(s0 + s1);
}

// out[:K] = sum_{i < n} coef[i * cs] rows[i, :K] (rows: (n, K) contiguous): a small
// matrix product as a sum of scaled rows, the accumulators of a tile of up to four
// vectors in registers (two sets, even and odd i, so the adds do not wait on each
// other) and stored once.  Generic (float64) version first.
template <typename T>
static inline void comb_rows(T* out, const T* coef, i64 cs, const T* rows, i64 n, i64 K) {
  for (i64 k = 0; k < K; ++k) out[k] = T(0);
  for (i64 i = 0; i < n; ++i) {
    const T c = coef[i * cs];
    const T* r = rows + i * K;
    for (i64 k = 0; k < K; ++k) out[k] += c * r[k];
  }
}

template <int W>
static inline void comb_tile(float* out, const float* coef, i64 cs, const float* rows, i64 n,
                             i64 K, i64 k0) {
  vf a[W], b[W];
  for (int t = 0; t < W; ++t) a[t] = b[t] = vbc(0);
  i64 i = 0;
  for (; i + 2 <= n; i += 2) {
    const vf c0 = vbc(coef[i * cs]), c1 = vbc(coef[(i + 1) * cs]);
    const float* r0 = rows + i * K + k0;
    const float* r1 = r0 + K;
    for (int t = 0; t < W; ++t) {
      a[t] += c0 * vload(r0 + t * ACON_VW);
      b[t] += c1 * vload(r1 + t * ACON_VW);
    }
  }
  if (i < n) {
    const vf c0 = vbc(coef[i * cs]);
    const float* r0 = rows + i * K + k0;
    for (int t = 0; t < W; ++t) a[t] += c0 * vload(r0 + t * ACON_VW);
  }
  for (int t = 0; t < W; ++t) vstore(out + k0 + t * ACON_VW, a[t] + b[t]);
}

static inline void comb_rows(float* out, const float* coef, i64 cs, const float* rows, i64 n,
                             i64 K) {
  i64 k0 = 0;
  for (; k0 + 4 * ACON_VW <= K; k0 += 4 * ACON_VW) comb_tile<4>(out, coef, cs, rows, n, K, k0);
  if (k0 + 2 * ACON_VW <= K) {
    comb_tile<2>(out, coef, cs, rows, n, K, k0);
    k0 += 2 * ACON_VW;
  }
  if (k0 + ACON_VW <= K) {
    comb_tile<1>(out, coef, cs, rows, n, K, k0);
    k0 += ACON_VW;
  }
  if (k0 < K) {  // the last K - k0 < ACON_VW columns, masked
    const i64 m = K - k0;
    vf a = vbc(0);
    for (i64 i = 0; i < n; ++i) a += vbc(coef[i * cs]) * vload_part(rows + i * K + k0, m);
    vstore_part(out + k0, a, m);
  }
}

// v: (N, K) in, out: (N, K), hn: (N, K) normalised values, inv: (K,) 1 / std.
// Loops run over k innermost (contiguous).
template <typename T>
static void norm_fwd(const NormSpec<T>& s, const T* v, i64 N, i64 K, T* out, T* hn,
                     T* inv) {
  std::vector<T> mu(K, T(0)), w(K, T(1)), b(K, T(0));
  if (s.mode == 1) {
    std::vector<T> var(K, T(0));
    for (i64 n = 0; n < N; ++n)
      for (i64 k = 0; k < K; ++k) mu[k] += v[n * K + k];
    for (i64 k = 0; k < K; ++k) mu[k] /= N;
    for (i64 n = 0; n < N; ++n)
      for (i64 k = 0; k < K; ++k) {
        const T t = v[n * K + k] - mu[k];
        var[k] += t * t;
      }
    for (i64 k = 0; k < K; ++k) {
      var[k] /= N;
      inv[k] = T(1.0 / std::sqrt(double(var[k]) + s.eps));
      if (s.rm) {
        s.rm[k] = T((1 - s.factor) * s.rm[k] + s.factor * mu[k]);
        s.rv[k] = T((1 - s.factor) * s.rv[k] + s.factor * double(var[k]) * N / (N - 1));
      }
    }
  } else if (s.mode == 2) {
    for (i64 k = 0; k < K; ++k) {
      mu[k] = s.rm[k];
      inv[k] = T(1.0 / std::sqrt(double(s.rv[k]) + s.eps));
    }
  } else {
    for (i64 k = 0; k < K; ++k) inv[k] = T(1);
  }
  if (s.mode) {
    for (i64 k = 0; k < K; ++k) {
      if (s.w) w[k] = s.w[k];
      if (s.b) b[k] = s.b[k];
    }
  }
  for (i64 n = 0; n < N; ++n)
    for (i64 k = 0; k < K; ++k) {
      const T h = (v[n * K + k] - mu[k]) * inv[k];
      hn[n * K + k] = h;
      out[n * K + k] = w[k] * h + b[k];
    }
}

// go: (N, K) gradient of the output; gi: (N, K) gradient of the input; dw, db:
// (K,) (written when not null).
template <typename T>
static void norm_bwd(const NormSpec<T>& s, const T* go, const T* hn, const T* inv, i64 N,
                     i64 K, T* gi, T* dw, T* db) {
  std::vector<T> sg(K, T(0)), sgh(K, T(0)), a(K, T(1));
  for (i64 n = 0; n < N; ++n)
    for (i64 k = 0; k < K; ++k) {
      sg[k] += go[n * K + k];
      sgh[k] += go[n * K + k] * hn[n * K + k];
    }
  for (i64 k = 0; k < K; ++k) {
    if (dw) dw[k] = sgh[k];
    if (db) db[k] = sg[k];
    if (s.mode) a[k] = (s.w ? s.w[k] : T(1)) * inv[k];
  }
  for (i64 n = 0; n < N; ++n)
    for (i64 k = 0; k < K; ++k) {
      const i64 i = n * K + k;
      if (s.mode == 1)
        gi[i] = a[k] * (go[i] - sg[k] / N - hn[i] * sgh[k] / N);
      else
        gi[i] = a[k] * go[i];  // mode 0: a = 1
    }
}

// beta = sigmoid(z): vectorised for float32 (thousands of values per call), std::exp
// for float64.
static inline void sigmoid_to(const double* z, double* out, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = 1.0 / (1.0 + std::exp(-z[i]));
}

static inline void sigmoid_to(const float* z, float* out, i64 n) {
  i64 i = 0;
  for (; i + ACON_VW <= n; i += ACON_VW) vstore(out + i, vsigmoid(vload(z + i)));
  if (i < n) vstore_part(out + i, vsigmoid(vload_part(z + i, n - i)), n - i);
}

// Saved (in T, in a buffer of meta_saved_size doubles): m (N, C) pooled input, a (N, H)
// bn1 output, hn1 (N, H), zn2 (N, C), inv1 (H), inv2 (C); beta (N, C) in `beta`.
static inline i64 meta_saved_size(i64 N, i64 C, i64 H) {
  return 2 * N * C + 2 * N * H + H + C;
}

template <typename T>
static void meta_fwd(const T* x, T* y, i64 N, i64 C, i64 L, i64 H, const T* d, const T* q,
                     const T* w1, const T* b1, const NormSpec<T>& n1, const T* w2,
                     const T* b2, const NormSpec<T>& n2, double* saved, T* beta,
                     i64 seg, int nthreads) {
  T* m = reinterpret_cast<T*>(saved);
  T* a = m + N * C;
  T* hn1 = a + N * H;
  T* zn2 = hn1 + N * H;
  T* inv1 = zn2 + N * C;
  T* inv2 = inv1 + H;
  // global average pooling, one row per item (or flat, see flat_rows)
  if (flat_layout<T>(L)) {
    flat_row_means((const float*)x, (float*)m, N * C, L, nthreads);
  } else {
    for_items(N * C, C, 1, nthreads, go_parallel(N * C, N * C * L),
              [&](i64 row, i64, i64, i64) {
                const T* xr = x + row * L;
                double acc = 0;
                i64 l = 0;
                if (sizeof(T) == 4) {
                  vf v0 = vbc(0), v1 = vbc(0);
                  const float* xf = (const float*)xr;
                  for (; l + 2 * ACON_VW <= L; l += 2 * ACON_VW) {
                    v0 += vload(xf + l);
                    v1 += vload(xf + l + ACON_VW);
                  }
                  if (l + ACON_VW <= L) {
                    v0 += vload(xf + l);
                    l += ACON_VW;
                  }
                  if (l < L) {  // the tail as one masked vector
                    v1 += vload_part(xf + l, L - l);
                    l = L;
                  }
                  acc = vsum(v0 + v1);
                }
                for (; l < L; ++l) acc += xr[l];
                m[row] = T(acc / L);
              });
  }
  // The small products: dot products of contiguous rows (vectorised, independent
  // partial sums).
  std::vector<T> h(N * H), z(N * C), zz(N * C);
  for (i64 n = 0; n < N; ++n)
    for (i64 j = 0; j < H; ++j)
      h[n * H + j] = (b1 ? b1[j] : T(0)) + T(dot(w1 + j * C, m + n * C, C));
  norm_fwd<T>(n1, h.data(), N, H, a, hn1, inv1);
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < C; ++c)
      z[n * C + c] = (b2 ? b2[c] : T(0)) + T(dot(w2 + c * H, a + n * H, H));
  norm_fwd<T>(n2, z.data(), N, C, zz.data(), zn2, inv2);
  sigmoid_to(zz.data(), beta, N * C);
  acon_fwd<T>(x, y, d, q, beta, N, C, L, C, 1, 0, seg, nthreads);
}

// grads (T): dw1 (H, C), db1 (H), dn1w (H), dn1b (H), dw2 (C, H), db2 (C), dn2w (C),
// dn2b (C); entries of absent parameters are left alone.
template <typename T>
static void meta_bwd(const T* go, const T* x, T* dx, i64 N, i64 C, i64 L, i64 H,
                     const T* d, const T* q, const T* w1, const NormSpec<T>& n1,
                     const T* w2, const NormSpec<T>& n2, const double* saved,
                     const T* beta, T* dp1, T* dp2, T* grads, i64 seg, int nthreads) {
  const T* m = reinterpret_cast<const T*>(saved);
  const T* a = m + N * C;
  const T* hn1 = a + N * H;
  const T* zn2 = hn1 + N * H;
  const T* inv1 = zn2 + N * C;
  const T* inv2 = inv1 + H;
  T* dw1 = grads;
  T* db1 = dw1 + H * C;
  T* dn1w = db1 + H;
  T* dn1b = dn1w + H;
  T* dw2 = dn1b + H;
  T* db2 = dw2 + C * H;
  T* dn2w = db2 + C;
  T* dn2b = dn2w + C;
  std::vector<double> sums(N * C * 3);
  acon_bwd<T>(go, x, dx, d, q, beta, N, C, L, C, 1, 0, seg, sums.data(), nullptr, dp1, dp2,
              nullptr, nthreads);
  std::vector<T> g(N * C), dz(N * C), da(N * H), dh(N * H), dm(N * C);  // written whole
  for (i64 i = 0; i < N * C; ++i) {
    const double b = beta[i];
    g[i] = T(sums[3 * i + 2] * b * (1 - b));  // d loss / d (bn2 output)
  }
  norm_bwd<T>(n2, g.data(), zn2, inv2, N, C, dz.data(), n2.mode ? dn2w : nullptr,
              n2.mode ? dn2b : nullptr);
  // dW2[c, :] = sum_n dz[n, c] a[n, :], da[n, :] = sum_c dz[n, c] W2[c, :], and the same
  // for fc1: sums of scaled rows (comb_rows), each output row finished in registers
  for (i64 c = 0; c < C; ++c) {
    comb_rows(dw2 + c * H, dz.data() + c, C, a, N, H);
    T sb = 0;
    for (i64 n = 0; n < N; ++n) sb += dz[n * C + c];
    db2[c] = sb;
  }
  for (i64 n = 0; n < N; ++n) comb_rows(da.data() + n * H, dz.data() + n * C, 1, w2, C, H);
  norm_bwd<T>(n1, da.data(), hn1, inv1, N, H, dh.data(), n1.mode ? dn1w : nullptr,
              n1.mode ? dn1b : nullptr);
  for (i64 j = 0; j < H; ++j) {
    comb_rows(dw1 + j * C, dh.data() + j, H, m, N, C);
    T sb = 0;
    for (i64 n = 0; n < N; ++n) sb += dh[n * H + j];
    db1[j] = sb;
  }
  for (i64 n = 0; n < N; ++n) comb_rows(dm.data() + n * C, dh.data() + n * H, 1, w1, H, C);
  for (i64 i = 0; i < N * C; ++i) dm[i] /= T(L);
  // the pooling's gradient: dx += dm / L, one (cache-warm) pass, split over the threads
  // as the ACON pass was (by channel for rows of one segment, see bwd_channel_major; by
  // rows, walked flat, for the flat layout), so each thread adds to the rows still in its
  // own cache
  auto add_row = [&](i64 row) {
    T* r = dx + row * L;
    const T v = dm[row];
    i64 l = 0;
    if (sizeof(T) == 4) {
      float* rf = (float*)r;
      const vf vv = vbc(float(v));
      for (; l + ACON_VW <= L; l += ACON_VW) vstore(rf + l, vload(rf + l) + vv);
      if (l < L) {
        vstore_part(rf + l, vload_part(rf + l, L - l) + vv, L - l);
        l = L;
      }
    }
    for (; l < L; ++l) r[l] += v;
  };
  if (flat_layout<T>(L))
    flat_add_rows((float*)dx, (const float*)dm.data(), N * C, L, nthreads);
  else if (L <= seg && L <= 512)
    for_items(C, C, 1, nthreads, go_parallel(C, N * C * L), [&](i64 c, i64, i64, i64) {
      for (i64 n = 0; n < N; ++n) add_row(n * C + c);
    });
  else
    for_items(N * C, C, 1, nthreads, go_parallel(N * C, N * C * L),
              [&](i64 row, i64, i64, i64) { add_row(row); });
}

extern "C" {
int acon_abi_version() { return 6; }

#define ACON_NORM_ARGS(T, P) \
  int P##mode, const T *P##w, const T *P##b, T *P##rm, T *P##rv, double P##eps, double P##f
#define ACON_NORM(P) {P##mode, P##w, P##b, P##rm, P##rv, P##eps, P##f}

#define ACON_EXPORT(T, SUF)                                                               \
  void acon_fwd_##SUF(const T* x, T* y, const T* d, const T* q, const T* beta, i64 N,     \
                      i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, int nthreads) {  \
    acon_fwd<T>(x, y, d, q, beta, N, C, L, bsn, bsc, bsl, seg, nthreads);                  \
  }                                                                                       \
  void acon_bwd_##SUF(const T* go, const T* x, T* dx, const T* d, const T* q,             \
                      const T* beta, i64 N, i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl,      \
                      i64 seg, double* sums, T* dbeta_pix, T* dp1, T* dp2, T* dbeta,      \
                      int nthreads) {                                                     \
    acon_bwd<T>(go, x, dx, d, q, beta, N, C, L, bsn, bsc, bsl, seg, sums, dbeta_pix, dp1, \
                dp2, dbeta, nthreads);                                                    \
  }                                                                                       \
  void acon_meta_fwd_##SUF(const T* x, T* y, i64 N, i64 C, i64 L, i64 H, const T* d,      \
                           const T* q, const T* w1, const T* b1, ACON_NORM_ARGS(T, a_),   \
                           const T* w2, const T* b2, ACON_NORM_ARGS(T, b_), double* saved,\
                           T* beta, i64 seg, int nthreads) {                              \
    const NormSpec<T> n1 = ACON_NORM(a_), n2 = ACON_NORM(b_);                             \
    meta_fwd<T>(x, y, N, C, L, H, d, q, w1, b1, n1, w2, b2, n2, saved, beta, seg,         \
                nthreads);                                                                \
  }                                                                                       \
  void acon_meta_bwd_##SUF(const T* go, const T* x, T* dx, i64 N, i64 C, i64 L, i64 H,    \
                           const T* d, const T* q, const T* w1, ACON_NORM_ARGS(T, a_),    \
                           const T* w2, ACON_NORM_ARGS(T, b_), const double* saved,       \
                           const T* beta, T* dp1, T* dp2, T* grads, i64 seg,              \
                           int nthreads) {                                                \
    const NormSpec<T> n1 = ACON_NORM(a_), n2 = ACON_NORM(b_);                             \
    meta_bwd<T>(go, x, dx, N, C, L, H, d, q, w1, n1, w2, n2, saved, beta, dp1, dp2,       \
                grads, seg, nthreads);                                                    \
  }

ACON_EXPORT(float, f32)
ACON_EXPORT(double, f64)

i64 acon_meta_saved_size(i64 N, i64 C, i64 H) { return meta_saved_size(N, C, H); }
}
'''

_ABI_VERSION = 6
_BASE_FLAGS = ['-O3', '-std=c++14', '-fPIC', '-shared', '-fno-trapping-math', '-Wno-psabi']
# Tried in order: the first that compiles is used.
# x86: let the auto-vectorised loops (the meta-ACON switch network) use full-width
# AVX-512 registers where the CPU has them (GCC's tuning often prefers 256 bits).
_X86 = platform.machine().lower() in ('x86_64', 'amd64', 'i686', 'x86')
_NATIVE = ['-march=native'] + (['-mprefer-vector-width=512'] if _X86 else [])
_FLAG_SETS = (_NATIVE + ['-fopenmp'], ['-fopenmp'], [])

_lock = threading.Lock()
_cached: Optional['CpuKernels'] = None
_tried = False
_error: Optional[str] = None


def kernel_cache_dir() -> str:
    """Directory of the compiled kernels (``$ACON_MM_CACHE_DIR`` or ``~/.cache/acon_mm``)."""
    env = os.environ.get('ACON_MM_CACHE_DIR')
    if env:
        return env
    return osp.join(osp.expanduser('~'), '.cache', 'acon_mm')


def _cpu_signature() -> str:
    flags = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    flags = line
                    break
    except OSError:
        pass
    return platform.machine() + flags


def _compiler() -> Optional[str]:
    for name in (os.environ.get('CXX'), 'g++', 'c++', 'clang++'):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, '--version'], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ''


class CpuKernels:
    """ctypes handle of the compiled library (float32 and float64 entry points)."""

    def __init__(self, path: str, flags: list):
        self.path = path
        self.flags = flags
        lib = ctypes.CDLL(path)
        if lib.acon_abi_version() != _ABI_VERSION:
            raise RuntimeError(f'{path}: ABI version {lib.acon_abi_version()}, '
                               f'expected {_ABI_VERSION}')
        P, I, Int, D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
        self.fwd = {}
        self.bwd = {}
        self.meta_fwd = {}
        self.meta_bwd = {}
        for suf in ('f32', 'f64'):
            f = getattr(lib, f'acon_fwd_{suf}')
            f.argtypes = [P, P, P, P, P, I, I, I, I, I, I, I, Int]
            f.restype = None
            b = getattr(lib, f'acon_bwd_{suf}')
            b.argtypes = [P, P, P, P, P, P, I, I, I, I, I, I, I, P, P, P, P, P, Int]
            b.restype = None
            self.fwd[suf] = f
            self.bwd[suf] = b
            norm = [Int, P, P, P, P, D, D]
            mf = getattr(lib, f'acon_meta_fwd_{suf}')
            mf.argtypes = [P, P, I, I, I, I, P, P, P, P, *norm, P, P, *norm, P, P, I, Int]
            mf.restype = None
            mb = getattr(lib, f'acon_meta_bwd_{suf}')
            mb.argtypes = [P, P, P, I, I, I, I, P, P, P, *norm, P, *norm, P, P, P, P, P,
                           I, Int]
            mb.restype = None
            self.meta_fwd[suf] = mf
            self.meta_bwd[suf] = mb
        self.meta_saved_size = lib.acon_meta_saved_size
        self.meta_saved_size.argtypes = [I, I, I]
        self.meta_saved_size.restype = I
        self._lib = lib

    def __repr__(self) -> str:
        return f'CpuKernels({self.path!r}, flags={self.flags})'


def _build(cxx: str) -> CpuKernels:
    cache = kernel_cache_dir()
    try:
        os.makedirs(cache, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=cache, delete=True)
        probe.close()
    except OSError:
        cache = osp.join(tempfile.gettempdir(), f'acon_mm_{os.getuid()}')
        os.makedirs(cache, exist_ok=True)
    version = _compiler_version(cxx)
    errors = []
    for extra in _FLAG_SETS:
        flags = _BASE_FLAGS + extra
        key = hashlib.sha256('\0'.join(
            [_SOURCE, ' '.join(flags), cxx, version, _cpu_signature()]).encode()).hexdigest()[:20]
        path = osp.join(cache, f'acon_cpu_{key}.so')
        if not osp.exists(path):
            src = osp.join(cache, f'acon_cpu_{key}.{os.getpid()}.cpp')
            tmp = path + f'.{os.getpid()}.tmp'
            with open(src, 'w') as f:
                f.write(_SOURCE)
            try:
                proc = subprocess.run([cxx, *flags, src, '-o', tmp], capture_output=True,
                                      text=True, timeout=300)
            finally:
                os.remove(src)
            if proc.returncode != 0:
                errors.append(f'{cxx} {" ".join(flags)}: {proc.stderr.strip()[-400:]}')
                if osp.exists(tmp):
                    os.remove(tmp)
                continue
            os.replace(tmp, path)  # atomic: concurrent builders agree on one file
        try:
            return CpuKernels(path, flags)
        except (OSError, RuntimeError, AttributeError) as e:
            errors.append(f'loading {path}: {e}')
    raise RuntimeError('; '.join(errors) or 'no flag set worked')


def load_cpu_kernels(warn: bool = True) -> Optional[CpuKernels]:
    """The compiled CPU kernels, building them on first use; ``None`` if impossible.

    Set ``ACON_MM_DISABLE_CPU_KERNEL=1`` to skip them (the pure-PyTorch fused
    function is then used). The reason of a failure is in :func:`cpu_kernel_error`.
    """
    global _cached, _tried, _error
    if _tried:
        return _cached
    with _lock:
        if _tried:
            return _cached
        if os.environ.get('ACON_MM_DISABLE_CPU_KERNEL', '0') not in ('', '0'):
            _error = 'disabled by ACON_MM_DISABLE_CPU_KERNEL'
        else:
            cxx = _compiler()
            if cxx is None:
                _error = 'no C++ compiler found (tried $CXX, g++, c++, clang++)'
            else:
                try:
                    _cached = _build(cxx)
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    _error = str(e)
        _tried = True
        if _cached is None and warn and _error != 'disabled by ACON_MM_DISABLE_CPU_KERNEL':
            warnings.warn(
                'acon_mm: the fused ACON CPU kernel could not be built, using the '
                f'pure-PyTorch fused function (same memory, slower). Reason: {_error}')
        return _cached


def cpu_kernel_error() -> Optional[str]:
    """Why :func:`load_cpu_kernels` returned ``None`` (``None`` if it did not)."""
    return _error
