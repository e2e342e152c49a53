// meta-ACON-C with the channel switch, fused (CPU):
//
//   beta = sigmoid(bn2(fc2(bn1(fc1(GAP(x)))))),
//   f(x) = (p1 - p2) x sigmoid(beta (p1 - p2) x) + p2 x,
//
// in one call forward (meta_fwd) and one backward (meta_bwd).  The switch network
// and the buffers the binding shares with the kernels are described by three
// structs: MetaSwitch (the parameters), MetaSaved (what forward keeps for backward)
// and MetaGrads / MetaGradLayout (the parameter gradients, one buffer).
#pragma once

#include "acon_kernel.h"

namespace acon {

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

// The switch network: fc1 (1x1 conv C -> H) -> n1 -> fc2 (H -> C) -> n2.
template <typename T>
struct MetaSwitch {
  i64 H;        // hidden width
  const T* w1;  // (H, C)
  const T* b1;  // (H,) or null
  NormSpec<T> n1;
  const T* w2;  // (C, H)
  const T* b2;  // (C,) or null
  NormSpec<T> n2;
};

// What forward keeps for backward (in T, inside a buffer of `doubles(N, C, H)`
// doubles, so one allocation serves both precisions): m (N, C) pooled input, a (N, H)
// n1 output, hn1 (N, H) and zn2 (N, C) the normalised values, inv1 (H) and inv2 (C)
// the inverse standard deviations.  beta (N, C) is kept apart (it is the ACON pass's).
template <typename T>
struct MetaSaved {
  T *m, *a, *hn1, *zn2, *inv1, *inv2;

  static i64 doubles(i64 N, i64 C, i64 H) { return 2 * N * C + 2 * N * H + H + C; }

  static MetaSaved view(double* buffer, i64 N, i64 C, i64 H) {
    MetaSaved s;
    s.m = reinterpret_cast<T*>(buffer);
    s.a = s.m + N * C;
    s.hn1 = s.a + N * H;
    s.zn2 = s.hn1 + N * H;
    s.inv1 = s.zn2 + N * C;
    s.inv2 = s.inv1 + H;
    return s;
  }
};

// The gradients of the fused layer's parameters, back to back in one buffer of
// MetaGradLayout::total elements (the binding hands slices of it to autograd):
// dp1 (C), dp2 (C), dw1 (H, C), db1 (H), dn1w (H), dn1b (H), dw2 (C, H), db2 (C),
// dn2w (C), dn2b (C).  Slots of absent parameters are left alone.
enum MetaGradSlot {
  kGradP1, kGradP2, kGradW1, kGradB1, kGradN1W, kGradN1B, kGradW2, kGradB2, kGradN2W,
  kGradN2B, kNumMetaGrads
};

struct MetaGradLayout {
  i64 size[kNumMetaGrads], offset[kNumMetaGrads], total;

  MetaGradLayout(i64 C, i64 H) {
    const i64 sizes[kNumMetaGrads] = {C, C, H * C, H, H, H, C * H, C, C, C};
    total = 0;
    for (int i = 0; i < kNumMetaGrads; ++i) {
      size[i] = sizes[i];
      offset[i] = total;
      total += sizes[i];
    }
  }
};

template <typename T>
struct MetaGrads {
  T* slot[kNumMetaGrads];

  MetaGrads(T* buffer, const MetaGradLayout& layout) {
    for (int i = 0; i < kNumMetaGrads; ++i) slot[i] = buffer + layout.offset[i];
  }
  T* operator[](MetaGradSlot s) const { return slot[s]; }
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

// Forward: y (N, C, L) and beta (N, C) from x (N, C, L), d = p1 - p2 and q = p2 (C,);
// fills `sv` and updates the norms' running statistics (mode 1 with rm given).
template <typename T>
static void meta_fwd(const T* x, T* y, i64 N, i64 C, i64 L, const T* d, const T* q,
                     const MetaSwitch<T>& sw, const MetaSaved<T>& sv, T* beta, i64 seg,
                     int nthreads) {
  const i64 H = sw.H;
  const T *w1 = sw.w1, *b1 = sw.b1, *w2 = sw.w2, *b2 = sw.b2;
  T *m = sv.m, *a = sv.a, *hn1 = sv.hn1, *zn2 = sv.zn2, *inv1 = sv.inv1, *inv2 = sv.inv2;
  // global average pooling, one row per item (or flat, see flat_rows)
  bool pooled = false;
  if constexpr (kIsFloat<T>) {
    if (flat_rows(L)) {
      flat_row_means(x, m, N * C, L, nthreads);
      pooled = true;
    }
  }
  if (!pooled) {
    for_items(N * C, C, 1, nthreads, go_parallel(N * C, N * C * L),
              [&](i64 row, i64, i64, i64) {
                const T* xr = x + row * L;
                double acc = 0;
                i64 l = 0;
                if constexpr (kIsFloat<T>) {
                  vf v0 = vbc(0), v1 = vbc(0);
                  const float* xf = xr;
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
  norm_fwd<T>(sw.n1, h.data(), N, H, a, hn1, inv1);
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < C; ++c)
      z[n * C + c] = (b2 ? b2[c] : T(0)) + T(dot(w2 + c * H, a + n * H, H));
  norm_fwd<T>(sw.n2, z.data(), N, C, zz.data(), zn2, inv2);
  sigmoid_to(zz.data(), beta, N * C);
  acon_fwd<T>(x, y, d, q, beta, N, C, L, C, 1, 0, seg, nthreads);
}

// Backward: dx (N, C, L) and every parameter gradient (into `g`, see MetaGrads) from
// the output gradient go, x and what meta_fwd saved (sv, beta).  Only sw.n1/n2's mode
// and weight are read (running statistics are not updated).
template <typename T>
static void meta_bwd(const T* go, const T* x, T* dx, i64 N, i64 C, i64 L, const T* d,
                     const T* q, const MetaSwitch<T>& sw, const MetaSaved<T>& sv,
                     const T* beta, const MetaGrads<T>& g, i64 seg, int nthreads) {
  const i64 H = sw.H;
  const T *w1 = sw.w1, *w2 = sw.w2;
  const NormSpec<T>&n1 = sw.n1, &n2 = sw.n2;
  const T *m = sv.m, *a = sv.a, *hn1 = sv.hn1, *zn2 = sv.zn2, *inv1 = sv.inv1,
          *inv2 = sv.inv2;
  T *dp1 = g[kGradP1], *dp2 = g[kGradP2];
  T *dw1 = g[kGradW1], *db1 = g[kGradB1], *dn1w = g[kGradN1W], *dn1b = g[kGradN1B];
  T *dw2 = g[kGradW2], *db2 = g[kGradB2], *dn2w = g[kGradN2W], *dn2b = g[kGradN2B];
  std::vector<double> sums(N * C * 3);
  acon_bwd<T>(go, x, dx, d, q, beta, N, C, L, C, 1, 0, seg, sums.data(), nullptr, dp1, dp2,
              nullptr, nthreads);
  std::vector<T> gz(N * C), dz(N * C), da(N * H), dh(N * H), dm(N * C);  // written whole
  for (i64 i = 0; i < N * C; ++i) {
    const double b = beta[i];
    gz[i] = T(sums[3 * i + 2] * b * (1 - b));  // d loss / d (bn2 output)
  }
  norm_bwd<T>(n2, gz.data(), zn2, inv2, N, C, dz.data(), n2.mode ? dn2w : nullptr,
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
    if constexpr (kIsFloat<T>) {
      float* rf = r;
      const vf vv = vbc(float(v));
      for (; l + ACON_VW <= L; l += ACON_VW) vstore(rf + l, vload(rf + l) + vv);
      if (l < L) {
        vstore_part(rf + l, vload_part(rf + l, L - l) + vv, L - l);
        l = L;
      }
    }
    for (; l < L; ++l) r[l] += v;
  };
  bool added = false;
  if constexpr (kIsFloat<T>) {
    if (flat_rows(L)) {
      flat_add_rows(dx, dm.data(), N * C, L, nthreads);
      added = true;
    }
  }
  if (added)
    return;
  if (L <= seg && L <= kChannelMajorMaxRow)
    for_items(C, C, 1, nthreads, go_parallel(C, N * C * L), [&](i64 c, i64, i64, i64) {
      for (i64 n = 0; n < N; ++n) add_row(n * C + c);
    });
  else
    for_items(N * C, C, 1, nthreads, go_parallel(N * C, N * C * L),
              [&](i64 row, i64, i64, i64) { add_row(row); });
}

}  // namespace acon
