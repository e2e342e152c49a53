// Vector and element primitives of the fused ACON CPU kernels.
//
// float32 uses explicit vectors (GCC/Clang vector extensions): ACON_VW = 16 floats
// with AVX-512 (-march=native on a CPU that has it), 8 otherwise (AVX2, or two SSE
// halves), with a Cephes-accurate exp (about 1 ulp) and, on AVX-512, a Newton-refined
// reciprocal.  float64 (used by gradcheck) uses plain loops with std::exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "acon_constants.h"

namespace acon {

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

}  // namespace acon
