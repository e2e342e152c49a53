"""Fused ACON CPU kernels: a small C++/OpenMP library compiled on first use.

The kernels compute, for an input viewed as ``(N, C, L)`` (``L`` = H*W),

* forward: ``y = u * s + q * x`` with ``d = p1 - p2``, ``q = p2``, ``u = d x``,
  ``s = sigmoid(beta u)``, in one pass over ``x``;
* backward: ``dx = g_out (d g + q)`` with ``g = s + beta u s (1 - s)``, and in the
  same pass the per-(sample, channel) sums ``sum g_out x g``, ``sum g_out x`` and
  ``sum g_out u^2 s (1 - s)`` (or, for a per-pixel beta, the per-(sample, pixel)
  sum over channels of the last term) from which the parameter gradients follow.

Why not ``torch.utils.cpp_extension``: the library needs no torch headers (it is
called through :mod:`ctypes` with raw pointers), so it compiles in about a second
with the system C++ compiler instead of the ~1 min that ``torch/extension.h`` takes
on a small CI machine. Threads come from OpenMP (``libgomp``, the runtime torch's
wheels use, so both share one pool; the thread count follows
``torch.get_num_threads()``), vectorisation from GCC/Clang vector extensions (8 floats, AVX2 with
``-march=native``) with a Cephes-accurate ``expf`` (about 1 ulp); the float64
entry points (used by ``gradcheck``) are plain loops with ``std::exp``.

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

// float32: explicit 8-wide vectors (GCC/Clang vector extensions; AVX2 with
// -march=native, two SSE halves otherwise); a row's tail is one masked vector.  Written with
// vector types rather than left to the auto-vectoriser: from scalar code gcc
// turns the exp clamps into branches and duplicates the division per branch,
// which made the kernels ~3x slower.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f vbc(float a) { return v8f{a, a, a, a, a, a, a, a}; }

static inline v8f vload(const float* p) {
  v8f v;
  std::memcpy(&v, p, 32);
  return v;
}

static inline void vstore(float* p, v8f v) { std::memcpy(p, &v, 32); }

// The first m < 8 lanes (zero-filled beyond): a row's tail as one vector.
static inline v8f vload_part(const float* p, i64 m) {
#if defined(__AVX2__)
  const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const v8i mask = lane < (int32_t)m;
  return (v8f)_mm256_maskload_ps(p, (__m256i)mask);
#else
  float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (i64 i = 0; i < m; ++i) t[i] = p[i];
  return vload(t);
#endif
}

static inline void vstore_part(float* p, v8f v, i64 m) {
#if defined(__AVX2__)
  const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const v8i mask = lane < (int32_t)m;
  _mm256_maskstore_ps(p, (__m256i)mask, (__m256)v);
#else
  for (i64 i = 0; i < m; ++i) p[i] = v[i];
#endif
}

static inline v8f vexp(v8f x) {
  const v8f lo = vbc(-87.3f), hi = vbc(88.0f), magic = vbc(12582912.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  v8f n = (x * 1.44269504088896341f + magic) - magic;
  v8f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = r * 1.9875691500E-4f + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &e, 32);
  return p * scale;
}

static inline v8f vsigmoid(v8f z) { return 1.0f / (1.0f + vexp(-z)); }

static inline float vsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

template <>
inline void seg_fwd<float>(const float* __restrict x, float* __restrict y, i64 len, float d,
                           float q, float b, const float* __restrict bp) {
  i64 l = 0;
  if (bp) {
    for (; l + 8 <= len; l += 8) {
      v8f xv = vload(x + l);
      v8f u = d * xv;
      vstore(y + l, u * vsigmoid(vload(bp + l) * u) + q * xv);
    }
  } else {
    for (; l + 8 <= len; l += 8) {
      v8f xv = vload(x + l);
      v8f u = d * xv;
      vstore(y + l, u * vsigmoid(b * u) + q * xv);
    }
  }
  if (l < len) {
    const i64 m = len - l;
    v8f xv = vload_part(x + l, m);
    v8f bv = bp ? vload_part(bp + l, m) : vbc(b);
    v8f u = d * xv;
    vstore_part(y + l, u * vsigmoid(bv * u) + q * xv, m);
  }
}

template <>
inline void seg_bwd<float>(const float* __restrict go, const float* __restrict x,
                           float* __restrict dx, i64 len, float d, float q, float b,
                           const float* __restrict bp, float* __restrict dbp,
                           double* sums) {
  v8f va = vbc(0), vb = vbc(0), vc = vbc(0);
  i64 l = 0;
  if (bp) {
    for (; l + 8 <= len; l += 8) {
      v8f xv = vload(x + l), gv = vload(go + l), bv = vload(bp + l);
      v8f u = d * xv;
      v8f s = vsigmoid(bv * u);
      v8f ss = s * (1.0f - s);
      v8f gate = s + bv * u * ss;
      vstore(dx + l, gv * (d * gate + q));
      v8f gx = gv * xv;
      va += gx * gate;
      vb += gx;
      vstore(dbp + l, vload(dbp + l) + gv * u * u * ss);
    }
  } else {
    for (; l + 8 <= len; l += 8) {
      v8f xv = vload(x + l), gv = vload(go + l);
      v8f u = d * xv;
      v8f s = vsigmoid(b * u);
      v8f ss = s * (1.0f - s);
      v8f gate = s + b * u * ss;
      vstore(dx + l, gv * (d * gate + q));
      v8f gx = gv * xv;
      va += gx * gate;
      vb += gx;
      vc += gv * u * u * ss;
    }
  }
  if (l < len) {  // the tail, zero-filled: the padding lanes add nothing
    const i64 m = len - l;
    v8f xv = vload_part(x + l, m), gv = vload_part(go + l, m);
    v8f bv = bp ? vload_part(bp + l, m) : vbc(b);
    v8f u = d * xv;
    v8f s = vsigmoid(bv * u);
    v8f ss = s * (1.0f - s);
    v8f gate = s + bv * u * ss;
    vstore_part(dx + l, gv * (d * gate + q), m);
    v8f gx = gv * xv;
    va += gx * gate;
    vb += gx;
    v8f t = gv * u * u * ss;
    if (dbp)
      vstore_part(dbp + l, vload_part(dbp + l, m) + t, m);
    else
      vc += t;
  }
  sums[0] = vsum(va);
  sums[1] = vsum(vb);
  sums[2] = dbp ? 0 : vsum(vc);
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

template <typename T>
static void acon_fwd(const T* x, T* y, const T* d, const T* q, const T* beta, i64 N, i64 C,
                     i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, int nthreads) {
  const i64 nseg = (L + seg - 1) / seg;
  const i64 total = N * C * nseg;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (go_parallel(total, N * C * L))
  for (i64 t = 0; t < total; ++t) {
    const i64 row = t / nseg, k = t % nseg;
    const i64 n = row / C, c = row % C;
    const i64 l0 = k * seg, len = std::min(seg, L - l0);
    const T* b0 = beta + n * bsn + c * bsc;
    seg_fwd<T>(x + row * L + l0, y + row * L + l0, len, d[c], q[c], *b0,
               bsl ? b0 + l0 : nullptr);
  }
}

// sums: (N, C, 3) doubles, written: per (n, c) the sums of g x gate, g x and (for
// a per-row beta) g u^2 s (1 - s).  dbeta_pix (only for bsl == 1): (N, L), zeroed
// by the caller; the work is then split over (n, segment) with the channel loop
// inside, so no two threads write the same element.
template <typename T>
static void acon_bwd(const T* go, const T* x, T* dx, const T* d, const T* q, const T* beta,
                     i64 N, i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, double* sums,
                     T* dbeta_pix, int nthreads) {
  const i64 nseg = std::max<i64>(1, (L + seg - 1) / seg);
  std::vector<double> scratch;
  double* part = sums;  // (N, C, nseg, 3)
  if (nseg > 1) {
    scratch.assign(N * C * nseg * 3, 0.0);
    part = scratch.data();
  }
  if (!bsl) {
    const i64 total = N * C * nseg;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (go_parallel(total, N * C * L))
    for (i64 t = 0; t < total; ++t) {
      const i64 row = t / nseg, k = t % nseg;
      const i64 n = row / C, c = row % C;
      const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
      const i64 off = row * L + l0;
      seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c], beta[n * bsn + c * bsc],
                 nullptr, nullptr, part + 3 * t);
    }
  } else {
    const i64 total = N * nseg;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (go_parallel(total, N * C * L))
    for (i64 t = 0; t < total; ++t) {
      const i64 n = t / nseg, k = t % nseg;
      const i64 l0 = k * seg, len = std::max<i64>(0, std::min(seg, L - l0));
      T* db = dbeta_pix + n * L + l0;
      for (i64 c = 0; c < C; ++c) {
        const i64 row = n * C + c;
        const i64 off = row * L + l0;
        seg_bwd<T>(go + off, x + off, dx + off, len, d[c], q[c], T(0),
                   beta + n * bsn + l0, db, part + 3 * (row * nseg + k));
      }
    }
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
}

extern "C" {
int acon_abi_version() { return 4; }

#define ACON_EXPORT(T, SUF)                                                               \
  void acon_fwd_##SUF(const T* x, T* y, const T* d, const T* q, const T* beta, i64 N,     \
                      i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl, i64 seg, int nthreads) {  \
    acon_fwd<T>(x, y, d, q, beta, N, C, L, bsn, bsc, bsl, seg, nthreads);                  \
  }                                                                                       \
  void acon_bwd_##SUF(const T* go, const T* x, T* dx, const T* d, const T* q,             \
                      const T* beta, i64 N, i64 C, i64 L, i64 bsn, i64 bsc, i64 bsl,      \
                      i64 seg, double* sums, T* dbeta_pix, int nthreads) {                \
    acon_bwd<T>(go, x, dx, d, q, beta, N, C, L, bsn, bsc, bsl, seg, sums, dbeta_pix,      \
                nthreads);                                                                \
  }

ACON_EXPORT(float, f32)
ACON_EXPORT(double, f64)
}
'''

_ABI_VERSION = 4
_BASE_FLAGS = ['-O3', '-std=c++14', '-fPIC', '-shared', '-fno-trapping-math', '-Wno-psabi']
# Tried in order: the first that compiles is used.
_FLAG_SETS = (['-march=native', '-fopenmp'], ['-fopenmp'], [])

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
        P, I, Int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        self.fwd = {}
        self.bwd = {}
        for suf in ('f32', 'f64'):
            f = getattr(lib, f'acon_fwd_{suf}')
            f.argtypes = [P, P, P, P, P, I, I, I, I, I, I, I, Int]
            f.restype = None
            b = getattr(lib, f'acon_bwd_{suf}')
            b.argtypes = [P, P, P, P, P, P, I, I, I, I, I, I, I, P, P, Int]
            b.restype = None
            self.fwd[suf] = f
            self.bwd[suf] = b
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
