"""Fused ACON on CPU as C++ autograd functions (a torch extension built on first use).

:class:`~acon_mm.ops.acon_func.AconFunction` and
:class:`~acon_mm.ops.meta_func.MetaAconChannelFunction` are Python autograd functions
calling the compiled kernels through :mod:`ctypes`. Their Python bookkeeping (argument
checks, layouts, ``ctx``, the engine calling back into Python) costs 50-120 us per
layer and step — as much as the arithmetic itself on a ResNet-50 stage-4 activation.
This module compiles the same kernels (:data:`acon_mm.ops.cpu_kernel._SOURCE`) into a
torch extension whose autograd functions are C++ (``torch::autograd::Function``): the
whole layer is then one C++ call forward and one C++ node backward.

The extension is built with ``torch.utils.cpp_extension.load_inline`` (``-O3
-march=native -fopenmp``; about a minute on two cores, once) into
``$ACON_MM_CACHE_DIR`` (default ``~/.cache/acon_mm``), keyed by source, torch version,
compiler and CPU flags. If it cannot be built (no compiler, no ninja, no torch
headers), or with ``ACON_MM_DISABLE_EXT=1``, :func:`load_cpu_ext` returns ``None``
and the ctypes path is used: same results, more per-call overhead.

Both functions return an undefined result (``None`` in Python) when the arguments
are outside what they handle (the caller then takes the general path): ``acon_fused``
takes float32/float64 CPU tensors with per-channel (or shared) ``p1``, ``p2`` and a
``beta`` constant over the spatial dimensions; ``meta_channel`` takes meta-ACON-C's
channel switch (see :mod:`acon_mm.ops.meta_func`). Double backward is refused with an
error (as ``once_differentiable`` does).
"""
import hashlib
import os
import os.path as osp
import threading
import warnings
from typing import Optional

import torch

from .cpu_kernel import _NATIVE, _SOURCE, _compiler, _compiler_version, _cpu_signature, \
    kernel_cache_dir

__all__ = ['load_cpu_ext', 'cpu_ext_error']

_GLUE = r'''
#include <torch/extension.h>
#include <ATen/Parallel.h>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

const i64 kSeg = 1024;

// Absent optional tensors travel through Function::apply as 0-element placeholders
// (apply records device and dtype of every tensor input, so undefined ones fail).
inline bool present(const Tensor& t) { return t.defined() && t.numel() > 0; }

inline Tensor or_placeholder(const c10::optional<Tensor>& t, const Tensor& x) {
  return t.has_value() && t->defined() ? *t : at::empty({0}, x.options());
}

bool same_kind(const Tensor& t, const Tensor& x) {
  return !t.defined() || (t.device().is_cpu() && t.scalar_type() == x.scalar_type());
}

// p as a contiguous (C,) vector (p per channel, or one value), undefined if not.
Tensor channel_vector(const Tensor& p, i64 ndim, i64 C) {
  if (p.dim() > ndim) return Tensor();
  const i64 ci = p.dim() - ndim + 1;
  for (i64 i = 0; i < p.dim(); ++i)
    if (p.size(i) != 1 && i != ci) return Tensor();
  Tensor v = p.reshape({-1});
  if (v.numel() != C) v = v.expand({C});
  return v.contiguous();
}

// A contiguous view of `numel(sizes)` elements of `base` (contiguous) at `offset`, made
// without the dispatcher: the gradients handed back by backward are slices of one
// buffer, and ten narrow/view calls would cost ~20 us per backward.
Tensor slice_of(const Tensor& base, i64 offset, at::IntArrayRef sizes) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::Storage(base.storage()),
                                                   base.key_set(), base.dtype());
  impl->set_storage_offset(base.storage_offset() + offset);
  impl->set_sizes_contiguous(sizes);
  return Tensor(std::move(impl));
}

// o[:C] = a[:C] - b[:C] (contiguous, same dtype) without a dispatched op.
template <typename T>
void difference(const Tensor& a, const Tensor& b, Tensor& o, i64 C) {
  const T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
  T* po = o.data_ptr<T>();
  for (i64 c = 0; c < C; ++c) po[c] = pa[c] - pb[c];
}

// The gradient of parameter p from out[offset : offset + n]: (C,) or beta-sized, p per
// channel (or beta-sized) or shared.
Tensor as_param_grad(const Tensor& out, i64 offset, i64 n, const Tensor& p) {
  if (n == p.numel()) return slice_of(out, offset, p.sizes());
  return out.narrow(0, offset, n).sum().reshape(p.sizes());
}

Tensor like_input(Tensor y, const Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() &&
      x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return y.contiguous(at::MemoryFormat::ChannelsLast);
  return y;
}

void no_double_backward() {
  TORCH_CHECK(!at::GradMode::is_enabled(),
              "acon_mm: the fused ACON functions do not support double backward "
              "(create_graph=True); use ACON_MM_IMPL=naive");
}

struct AconFn : public torch::autograd::Function<AconFn> {
  static Tensor forward(AutogradContext* ctx, Tensor x, Tensor p1, Tensor p2, Tensor beta,
                        Tensor d, Tensor q, Tensor bc, i64 bsn, i64 bsc) {
    Tensor xc = x.contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C);
    Tensor y = at::empty_like(xc);
    const int nt = at::get_num_threads();
    if (x.scalar_type() == at::kDouble)
      acon_fwd<double>(xc.data_ptr<double>(), y.data_ptr<double>(), d.data_ptr<double>(),
                       q.data_ptr<double>(), bc.data_ptr<double>(), N, C, L, bsn, bsc, 0,
                       kSeg, nt);
    else
      acon_fwd<float>(xc.data_ptr<float>(), y.data_ptr<float>(), d.data_ptr<float>(),
                      q.data_ptr<float>(), bc.data_ptr<float>(), N, C, L, bsn, bsc, 0,
                      kSeg, nt);
    ctx->save_for_backward({x, p1, p2, beta});
    ctx->saved_data["d"] = d;
    ctx->saved_data["q"] = q;
    ctx->saved_data["bc"] = bc;
    ctx->saved_data["bsn"] = bsn;
    ctx->saved_data["bsc"] = bsc;
    return like_input(y, x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward();
    auto saved = ctx->get_saved_variables();
    Tensor x = saved[0], p1 = saved[1], p2 = saved[2], beta = saved[3];
    Tensor d = ctx->saved_data["d"].toTensor(), q = ctx->saved_data["q"].toTensor();
    Tensor bc = ctx->saved_data["bc"].toTensor();
    const i64 bsn = ctx->saved_data["bsn"].toInt(), bsc = ctx->saved_data["bsc"].toInt();
    Tensor xc = x.contiguous();
    Tensor go = grads[0].to(x.scalar_type()).contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C);
    const i64 nb = bc.numel();
    Tensor dx = at::empty_like(xc);
    Tensor out = at::empty({2 * C + nb}, xc.options());
    const int nt = at::get_num_threads();
    if (x.scalar_type() == at::kDouble) {
      double* o = out.data_ptr<double>();
      acon_bwd<double>(go.data_ptr<double>(), xc.data_ptr<double>(), dx.data_ptr<double>(),
                       d.data_ptr<double>(), q.data_ptr<double>(), bc.data_ptr<double>(), N,
                       C, L, bsn, bsc, 0, kSeg, nullptr, nullptr, o, o + C, o + 2 * C, nt);
    } else {
      float* o = out.data_ptr<float>();
      acon_bwd<float>(go.data_ptr<float>(), xc.data_ptr<float>(), dx.data_ptr<float>(),
                      d.data_ptr<float>(), q.data_ptr<float>(), bc.data_ptr<float>(), N, C,
                      L, bsn, bsc, 0, kSeg, nullptr, nullptr, o, o + C, o + 2 * C, nt);
    }
    Tensor dp1, dp2, dbeta;
    if (present(p1)) dp1 = as_param_grad(out, 0, C, p1);
    if (present(p2)) dp2 = as_param_grad(out, C, C, p2);
    dbeta = slice_of(out, 2 * C, beta.sizes());
    if (!dx.sizes().equals(x.sizes())) dx = dx.reshape(x.sizes());
    return {dx, dp1, dp2, dbeta, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ACON with per-channel p1, p2 (either may be absent) and a spatially constant beta;
// undefined if the arguments need the general path.
Tensor acon_fused(Tensor x, c10::optional<Tensor> p1o, c10::optional<Tensor> p2o,
                  Tensor beta) {
  const auto st = x.scalar_type();
  if (!x.device().is_cpu() || (st != at::kFloat && st != at::kDouble) || x.dim() < 2 ||
      x.numel() == 0)
    return Tensor();
  Tensor p1 = p1o.has_value() ? *p1o : Tensor();
  Tensor p2 = p2o.has_value() ? *p2o : Tensor();
  if (!same_kind(p1, x) || !same_kind(p2, x) || !same_kind(beta, x)) return Tensor();
  const i64 ndim = x.dim(), C = x.size(1);
  if (beta.dim() > ndim) return Tensor();
  // beta padded to ndim: (Nb, Cb, 1, ...) only
  std::vector<i64> bs(ndim, 1);
  for (i64 i = 0; i < beta.dim(); ++i) bs[ndim - beta.dim() + i] = beta.size(i);
  for (i64 i = 2; i < ndim; ++i)
    if (bs[i] != 1) return Tensor();
  const i64 Nb = bs[0], Cb = bs[1];
  if ((Nb != 1 && Nb != x.size(0)) || (Cb != 1 && Cb != C)) return Tensor();
  Tensor d, q;
  {
    at::NoGradGuard ng;
    Tensor v1, v2;
    if (p1.defined() && !(v1 = channel_vector(p1, ndim, C)).defined()) return Tensor();
    if (p2.defined() && !(v2 = channel_vector(p2, ndim, C)).defined()) return Tensor();
    if (v2.defined()) {
      q = v2;
      d = v1.defined() ? v1 - v2 : 1 - v2;
    } else {
      q = at::zeros({C}, x.options());
      d = v1.defined() ? v1 : at::ones({C}, x.options());
    }
  }
  Tensor bc = beta.detach().reshape({Nb * Cb}).contiguous();
  return AconFn::apply(x, p1.defined() ? p1 : at::empty({0}, x.options()),
                       p2.defined() ? p2 : at::empty({0}, x.options()), beta, d, q, bc,
                       Nb > 1 ? Cb : 0, Cb > 1 ? 1 : 0);
}

// ---------------------------------------------------------------------------
// meta-ACON-C, channel switch (see acon_mm/ops/meta_func.py)
// ---------------------------------------------------------------------------
template <typename T>
NormSpec<T> spec_of(i64 mode, const Tensor& w, const Tensor& b, const Tensor& rm,
                    const Tensor& rv, double eps, double factor) {
  NormSpec<T> s;
  s.mode = (int)mode;
  s.w = present(w) ? w.data_ptr<T>() : nullptr;
  s.b = present(b) ? b.data_ptr<T>() : nullptr;
  s.rm = present(rm) ? rm.data_ptr<T>() : nullptr;
  s.rv = present(rv) ? rv.data_ptr<T>() : nullptr;
  s.eps = eps;
  s.factor = factor;
  return s;
}

struct MetaFn : public torch::autograd::Function<MetaFn> {
  static Tensor forward(AutogradContext* ctx, Tensor x, Tensor p1, Tensor p2, Tensor w1,
                        Tensor b1, Tensor g1, Tensor e1, Tensor w2, Tensor b2, Tensor g2,
                        Tensor e2, Tensor rm1, Tensor rv1, Tensor rm2, Tensor rv2,
                        i64 mode1, double eps1, double f1, i64 mode2, double eps2,
                        double f2) {
    Tensor xc = x.contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C), H = w1.size(0);
    // p1, p2: contiguous (1, C, 1, 1) (checked by meta_channel); d = p1 - p2, q = p2
    Tensor d = at::empty({C}, xc.options());
    Tensor q = slice_of(p2, 0, {C});
    if (x.scalar_type() == at::kDouble)
      difference<double>(p1, p2, d, C);
    else
      difference<float>(p1, p2, d, C);
    Tensor saved = at::empty({meta_saved_size(N, C, H)}, xc.options().dtype(at::kDouble));
    Tensor beta = at::empty({N * C}, xc.options());
    Tensor y = at::empty_like(xc);
    const int nt = at::get_num_threads();
    if (x.scalar_type() == at::kDouble) {
      using T = double;
      meta_fwd<T>(xc.data_ptr<T>(), y.data_ptr<T>(), N, C, L, H, d.data_ptr<T>(),
                  q.data_ptr<T>(), w1.data_ptr<T>(), present(b1) ? b1.data_ptr<T>() : nullptr,
                  spec_of<T>(mode1, g1, e1, rm1, rv1, eps1, f1), w2.data_ptr<T>(),
                  present(b2) ? b2.data_ptr<T>() : nullptr,
                  spec_of<T>(mode2, g2, e2, rm2, rv2, eps2, f2), saved.data_ptr<double>(),
                  beta.data_ptr<T>(), kSeg, nt);
    } else {
      using T = float;
      meta_fwd<T>(xc.data_ptr<T>(), y.data_ptr<T>(), N, C, L, H, d.data_ptr<T>(),
                  q.data_ptr<T>(), w1.data_ptr<T>(), present(b1) ? b1.data_ptr<T>() : nullptr,
                  spec_of<T>(mode1, g1, e1, rm1, rv1, eps1, f1), w2.data_ptr<T>(),
                  present(b2) ? b2.data_ptr<T>() : nullptr,
                  spec_of<T>(mode2, g2, e2, rm2, rv2, eps2, f2), saved.data_ptr<double>(),
                  beta.data_ptr<T>(), kSeg, nt);
    }
    ctx->save_for_backward({x, p1, p2, w1, w2, g1, g2});
    ctx->saved_data["d"] = d;
    ctx->saved_data["q"] = q;
    ctx->saved_data["saved"] = saved;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["modes"] = std::vector<i64>{mode1, mode2};
    ctx->saved_data["has"] =
        std::vector<i64>{(i64)present(b1), (i64)present(g1), (i64)present(e1),
                         (i64)present(b2), (i64)present(g2), (i64)present(e2)};
    return like_input(y, x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward();
    auto sv = ctx->get_saved_variables();
    Tensor x = sv[0], p1 = sv[1], p2 = sv[2], w1 = sv[3], w2 = sv[4], g1 = sv[5], g2 = sv[6];
    Tensor d = ctx->saved_data["d"].toTensor(), q = ctx->saved_data["q"].toTensor();
    Tensor saved = ctx->saved_data["saved"].toTensor();
    Tensor beta = ctx->saved_data["beta"].toTensor();
    auto modes = ctx->saved_data["modes"].toIntVector();
    auto has = ctx->saved_data["has"].toIntVector();
    Tensor xc = x.contiguous();
    Tensor go = grads[0].to(x.scalar_type()).contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C), H = w1.size(0);
    Tensor dx = at::empty_like(xc);
    const i64 sizes[10] = {C, C, H * C, H, H, H, C * H, C, C, C};
    i64 total = 0;
    for (i64 s : sizes) total += s;
    Tensor out = at::empty({total}, xc.options());
    const int nt = at::get_num_threads();
    const Tensor none;
    if (x.scalar_type() == at::kDouble) {
      using T = double;
      T* o = out.data_ptr<T>();
      meta_bwd<T>(go.data_ptr<T>(), xc.data_ptr<T>(), dx.data_ptr<T>(), N, C, L, H,
                  d.data_ptr<T>(), q.data_ptr<T>(), w1.data_ptr<T>(),
                  spec_of<T>(modes[0], g1, none, none, none, 0, 0), w2.data_ptr<T>(),
                  spec_of<T>(modes[1], g2, none, none, none, 0, 0), saved.data_ptr<double>(),
                  beta.data_ptr<T>(), o, o + C, o + 2 * C, kSeg, nt);
    } else {
      using T = float;
      T* o = out.data_ptr<T>();
      meta_bwd<T>(go.data_ptr<T>(), xc.data_ptr<T>(), dx.data_ptr<T>(), N, C, L, H,
                  d.data_ptr<T>(), q.data_ptr<T>(), w1.data_ptr<T>(),
                  spec_of<T>(modes[0], g1, none, none, none, 0, 0), w2.data_ptr<T>(),
                  spec_of<T>(modes[1], g2, none, none, none, 0, 0), saved.data_ptr<double>(),
                  beta.data_ptr<T>(), o, o + C, o + 2 * C, kSeg, nt);
    }
    i64 off[10];
    off[0] = 0;
    for (int i = 1; i < 10; ++i) off[i] = off[i - 1] + sizes[i - 1];
    if (!dx.sizes().equals(x.sizes())) dx = dx.reshape(x.sizes());
    variable_list r(21);
    r[0] = dx;
    r[1] = slice_of(out, off[0], p1.sizes());
    r[2] = slice_of(out, off[1], p2.sizes());
    r[3] = slice_of(out, off[2], w1.sizes());
    if (has[0]) r[4] = slice_of(out, off[3], {sizes[3]});
    if (has[1]) r[5] = slice_of(out, off[4], {sizes[4]});
    if (has[2]) r[6] = slice_of(out, off[5], {sizes[5]});
    r[7] = slice_of(out, off[6], w2.sizes());
    if (has[3]) r[8] = slice_of(out, off[7], {sizes[7]});
    if (has[4]) r[9] = slice_of(out, off[8], {sizes[8]});
    if (has[5]) r[10] = slice_of(out, off[9], {sizes[9]});
    return r;
  }
};


// PyTorch's BatchNorm bookkeeping for a norm in mode 1 with running statistics:
// num_batches_tracked += 1 and the averaging factor (momentum, or 1 / num_batches_tracked
// for momentum=None, given as momentum < 0).
double commit_norm(i64 mode, const c10::optional<Tensor>& rm, const c10::optional<Tensor>& nbt,
                   double momentum) {
  if (mode != 1 || !(rm.has_value() && rm->defined())) return 0.0;
  if (nbt.has_value() && nbt->defined() && nbt->numel() == 1 &&
      nbt->scalar_type() == at::kLong && nbt->device().is_cpu()) {
    int64_t* v = nbt->data_ptr<int64_t>();  // nbt.add_(1) without the dispatcher
    *v += 1;
    nbt->unsafeGetTensorImpl()->bump_version();
    if (momentum < 0) return 1.0 / double(*v);
  }
  return momentum < 0 ? 0.0 : momentum;
}

Tensor meta_channel(Tensor x, Tensor p1, Tensor p2, Tensor w1, c10::optional<Tensor> b1,
                    c10::optional<Tensor> g1, c10::optional<Tensor> e1, Tensor w2,
                    c10::optional<Tensor> b2, c10::optional<Tensor> g2,
                    c10::optional<Tensor> e2, c10::optional<Tensor> rm1,
                    c10::optional<Tensor> rv1, c10::optional<Tensor> rm2,
                    c10::optional<Tensor> rv2, i64 mode1, double eps1, double f1, i64 mode2,
                    double eps2, double f2, c10::optional<Tensor> nbt1,
                    c10::optional<Tensor> nbt2, double momentum1, double momentum2) {
  TORCH_CHECK(p1.is_contiguous() && p2.is_contiguous(), "meta_channel: p1, p2 contiguous");
  // the caller passes f < 0 to have the factors computed here (after its checks)
  if (f1 < 0) f1 = commit_norm(mode1, rm1, nbt1, momentum1);
  if (f2 < 0) f2 = commit_norm(mode2, rm2, nbt2, momentum2);
  auto o = [&](const c10::optional<Tensor>& t) { return or_placeholder(t, x); };
  return MetaFn::apply(x, p1, p2, w1, o(b1), o(g1), o(e1), w2, o(b2), o(g2), o(e2), o(rm1),
                       o(rv1), o(rm2), o(rv2), mode1, eps1, f1, mode2, eps2, f2);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("acon_fused", &acon_fused, "fused ACON (CPU), undefined if not applicable");
  m.def("meta_channel", &meta_channel, "fused meta-ACON-C channel switch (CPU)");
  m.def("abi", []() { return 1; });
}
'''

_lock = threading.Lock()
_ext = None
_tried = False
_error: Optional[str] = None


def _build():
    from torch.utils.cpp_extension import load_inline
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError('no C++ compiler found')
    src = _SOURCE + _GLUE
    flags = ['-O3', *_NATIVE, '-fopenmp', '-fno-trapping-math', '-Wno-psabi']
    key = hashlib.sha256('\0'.join([src, ' '.join(flags), torch.__version__, cxx,
                                    _compiler_version(cxx), _cpu_signature()]).encode()
                         ).hexdigest()[:16]
    name = f'acon_mm_ext_{key}'
    build_dir = osp.join(kernel_cache_dir(), name)
    os.makedirs(build_dir, exist_ok=True)
    old_cxx = os.environ.get('CXX')
    os.environ.setdefault('CXX', cxx)
    try:
        return load_inline(name, cpp_sources=src, extra_cflags=flags,
                           extra_ldflags=['-fopenmp'], build_directory=build_dir,
                           verbose=False)
    finally:
        if old_cxx is None:
            os.environ.pop('CXX', None)


def load_cpu_ext(warn: bool = True):
    """The compiled C++ extension, building it on first use; ``None`` if impossible."""
    global _ext, _tried, _error
    if _tried:
        return _ext
    with _lock:
        if _tried:
            return _ext
        if os.environ.get('ACON_MM_DISABLE_EXT', '0') not in ('', '0'):
            _error = 'disabled by ACON_MM_DISABLE_EXT'
        else:
            try:
                _ext = _build()
            except Exception as e:  # noqa: BLE001  (any build failure: fall back)
                _error = f'{type(e).__name__}: {str(e)[-600:]}'
        _tried = True
        if _ext is None and warn and _error != 'disabled by ACON_MM_DISABLE_EXT':
            warnings.warn('acon_mm: the fused ACON C++ extension could not be built; the '
                          'ctypes kernels are used (same results, more overhead per call). '
                          f'Reason: {_error}')
        return _ext


def cpu_ext_error() -> Optional[str]:
    """Why :func:`load_cpu_ext` returned ``None`` (``None`` if it did not)."""
    return _error
