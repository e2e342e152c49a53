// Fused ACON kernels (CPU): forward and backward of
//
//   f(x) = d x sigmoid(beta d x) + q x,   d = p1 - p2,  q = p2,
//
// for an input viewed as (N, C, L) (L = H * W).  Forward is one pass over x;
// backward computes dx = g_out (d g + q) with g = s + beta u s (1 - s) (u = d x,
// s = sigmoid(beta u)) and, in the same pass, the per-(sample, channel) sums
// sum g_out x g, sum g_out x and sum g_out u^2 s (1 - s), from which the parameter
// gradients follow (or, for a beta varying over the pixels, the per-pixel beta
// term).
//
// float32 rows are walked row by row (longer rows in segments of kSeg), except rows
// of ACON_VW <= L < kFlatMaxRow values that are not a multiple of the vector width
// (7x7, 14x14), which are walked as one flat array of vectors (see flat_rows).
// Threads come from OpenMP (libgomp, the runtime of torch's wheels: one pool).
#pragma once

#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "acon_vec.h"

namespace acon {

template <typename T>
constexpr bool kIsFloat = std::is_same_v<T, float>;

// ---------------------------------------------------------------------------
// Element functions (float64, and float32 where no vector code applies).
// ---------------------------------------------------------------------------
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
// beta[n*bsn + c*bsc + l*bsl] with bsl in {0, 1}: bsl == 0 is a beta constant over
// each row (bsn, bsc in {0, 1 or C}), bsl == 1 a beta varying over the pixels and
// constant over the channels, laid out (Nb, L) (bsn in {0, L}, bsc == 0).  Rows are
// cut into segments of at most `seg` elements, the unit of parallel work.
// ---------------------------------------------------------------------------
static inline bool go_parallel(i64 work_items, i64 numel) {
  return work_items > 1 && numel > kParallelMinNumel;
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
static inline bool bwd_channel_major(const float* go, const float* x, float* dx,
                                     const float* d, const float* q, const float* beta,
                                     i64 N, i64 C, i64 L, i64 bsn, i64 bsc,
                                     double* sums, float* dp1, float* dp2,
                                     double* dbeta_acc, int nthreads) {
  // Longer rows go row-major: a channel's rows lie N * C * L apart, so channel order
  // restarts the hardware prefetcher at every row; measured on 8x128x28x28 (rows of
  // 784), row order with a horizontal sum per row is 0.1-0.2x SiLU faster.
  if (!dp1 || !dp2 || L > kChannelMajorMaxRow) return false;
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

// Flat layout for short rows (float32): rows of L elements, ACON_VW <= L < 256
// (kFlatMaxRow) and
// L not a multiple of the vector width (7x7 = 49 = 3 x 16 + 1), are walked as one
// contiguous array of vectors instead of row by row, so no lanes are wasted on each
// row's tail (a 7x7 row otherwise costs four vectors' work for 49 values, 31% more).
// A vector spans at most two rows: its lanes from k on take the next row's
// parameters (a blend), and in backward its contributions are split between the two
// rows' sums with the same lane mask.  Each thread takes whole rows [r0, r1) (the
// split of the pooling and of the row-split passes), so every row's sums are made by
// one thread in a fixed order.
static inline bool flat_rows(i64 L) {
  return L >= ACON_VW && L < kFlatMaxRow && L % ACON_VW != 0;
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

template <typename T>
static void acon_fwd(const T* x, T* y, const T* d, const T* q, const T* beta, i64 N, i64 C,
                     i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, int nthreads) {
  if constexpr (kIsFloat<T>) {  // the flat kernels are float32 only
    if (!bsl && flat_rows(L)) {
      flat_fwd(x, y, d, q, beta, N, C, L, bsn, bsc, nthreads);
      return;
    }
  }
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
// (N, L), zeroed by the caller: the beta term per (sample, pixel), summed over the
// channels (and over the samples by the caller where beta is shared by them); the
// work is then split over (n, segment) with the channel loop inside, so no two
// threads write the same element.  dp1, dp2 (C,) and, for a per-row beta,
// dbeta (indexed like beta) are optional outputs: the parameter gradients reduced
// over the samples (in a fixed order: deterministic).
template <typename T>
static void acon_bwd(const T* go, const T* x, T* dx, const T* d, const T* q, const T* beta,
                     i64 N, i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, double* sums,
                     T* dbeta_pix, T* dp1, T* dp2, T* dbeta, int nthreads) {
  const i64 nseg = std::max<i64>(1, (L + seg - 1) / seg);
  const bool flat = kIsFloat<T> && !bsl && flat_rows(L);
  if constexpr (kIsFloat<T>) {
    if (!bsl && nseg == 1 && dp1 && dp2 && !flat) {
      // per row (bsn != 0) or per channel; reduced to beta's layout below
      std::vector<double> dbacc(bsn ? N * C : C, 0.0);
      if (bwd_channel_major(go, x, dx, d, q, beta, N, C, L, bsn, bsc, sums, dp1, dp2,
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
    if constexpr (kIsFloat<T>)
      flat_bwd(go, x, dx, d, q, beta, N, C, L, bsn, bsc, sums, nthreads);
  } else if (!bsl) {
    for_items(N * C, C, nseg, nthreads, go_parallel(N * C * nseg, N * C * L),
              [&](i64 row, i64 n, i64 c, i64 k) {
                const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
                const i64 off = row * L + l0;
                seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c],
                           beta[n * bsn + c * bsc], nullptr, nullptr,
                           part + 3 * (row * nseg + k));
              });
  } else {  // beta per pixel (bsc == 0): the beta term summed over the channels
    for_items(N, 1, nseg, nthreads, go_parallel(N * nseg, N * C * L),
              [&](i64 n, i64, i64, i64 k) {
                const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
                const T* bp = beta + n * bsn + l0;
                T* db = dbeta_pix + n * L + l0;
                for (i64 c = 0; c < C; ++c) {
                  const i64 row = n * C + c;
                  const i64 off = row * L + l0;
                  seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c], T(0), bp, db,
                             part + 3 * (row * nseg + k));
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

}  // namespace acon
