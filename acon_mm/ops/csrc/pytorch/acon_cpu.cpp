// Torch binding of the fused ACON CPU kernels: C++ autograd functions.
//
// Each layer is one C++ call forward and one C++ autograd node backward (no Python
// autograd bookkeeping, which costs 50-120 us per layer and step: as much as the
// arithmetic on a ResNet-50 stage-4 activation).
//
//   acon_fused(x, p1, p2, beta)   ACON  f(x) = (p1 - p2) x sigmoid(beta (p1 - p2) x) + p2 x
//                                 with per-channel (or shared, or absent) p1, p2 and a
//                                 beta constant over the pixels or over the channels;
//                                 undefined (None in Python) where the arguments need
//                                 the general path (e.g. a beta of x's full shape).
//   meta_channel(...)             meta-ACON-C with the channel switch (pooling, switch
//                                 network with its norms, ACON), see acon_meta_kernel.h.
//
// The constants of csrc/common/acon_constants.h are exported as module attributes
// (SEG, ...): Python reads them there rather than repeating them.
// Double backward is refused with an error (as once_differentiable does).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/python.h>

#include "acon_meta_kernel.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using acon::i64;

namespace {

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// Absent optional tensors travel through Function::apply as 0-element placeholders
// (apply records device and dtype of every tensor input, so undefined ones fail).
inline bool present(const Tensor& t) { return t.defined() && t.numel() > 0; }

inline Tensor or_placeholder(const c10::optional<Tensor>& t, const Tensor& x) {
  return t.has_value() && t->defined() ? *t : at::empty({0}, x.options());
}

// The dtype the kernels compute in: float32 for half-precision inputs.
inline at::ScalarType compute_type(at::ScalarType st) {
  return (st == at::kHalf || st == at::kBFloat16) ? at::kFloat : st;
}

// An absent tensor, or a floating-point CPU tensor (converted to the compute dtype).
bool usable_param(const Tensor& t) {
  return !t.defined() || (t.device().is_cpu() && at::isFloatingType(t.scalar_type()));
}

// p as a contiguous (C,) vector (p per channel, or one value), undefined if not.
Tensor channel_vector(const Tensor& p, i64 ndim, i64 C, at::ScalarType ct) {
  if (p.dim() > ndim) return Tensor();
  const i64 ci = p.dim() - ndim + 1;
  for (i64 i = 0; i < p.dim(); ++i)
    if (p.size(i) != 1 && i != ci) return Tensor();
  Tensor v = p.reshape({-1}).to(ct);
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

// `g` in the dtype of parameter `p` (a no-op in the usual case of equal dtypes).
inline Tensor as_dtype_of(Tensor g, const Tensor& p) {
  return g.scalar_type() == p.scalar_type() ? g : g.to(p.scalar_type());
}

// The gradient of parameter p from out[offset : offset + n]: (C,) or beta-sized, p per
// channel (or beta-sized) or shared.
Tensor as_param_grad(const Tensor& out, i64 offset, i64 n, const Tensor& p) {
  if (n == p.numel()) return as_dtype_of(slice_of(out, offset, p.sizes()), p);
  return as_dtype_of(out.narrow(0, offset, n).sum().reshape(p.sizes()), p);
}

// The (contiguous) result in the memory format of a channels-last input.
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

// ---------------------------------------------------------------------------
// ACON
// ---------------------------------------------------------------------------

// How the kernels see beta (see the drivers in acon_kernel.h): `bc` contiguous in
// the compute dtype, beta(n, c, l) = bc[n * bsn + c * bsc + l * bsl].
struct BetaLayout {
  Tensor bc;
  i64 bsn = 0, bsc = 0, bsl = 0;
};

struct AconFn : public torch::autograd::Function<AconFn> {
  // x (N, C, *) in any floating dtype; p1, p2 as given (placeholders if absent), beta;
  // d = p1 - p2, q = p2 as (C,) vectors and beta's layout, all in the compute dtype.
  static Tensor forward(AutogradContext* ctx, Tensor x, Tensor p1, Tensor p2, Tensor beta,
                        Tensor d, Tensor q, Tensor bc, i64 bsn, i64 bsc, i64 bsl) {
    const auto ct = compute_type(x.scalar_type());
    Tensor xc = x.to(ct).contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C);
    Tensor y = at::empty_like(xc);
    const int nt = at::get_num_threads();
    AT_DISPATCH_FLOATING_TYPES(ct, "acon_fwd", [&] {
      acon::acon_fwd<scalar_t>(xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                               d.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
                               bc.data_ptr<scalar_t>(), N, C, L, bsn, bsc, bsl, acon::kSeg,
                               nt);
    });
    ctx->save_for_backward({x, p1, p2, beta});
    ctx->saved_data["d"] = d;
    ctx->saved_data["q"] = q;
    ctx->saved_data["bc"] = bc;
    ctx->saved_data["bs"] = std::vector<i64>{bsn, bsc, bsl};
    return like_input(y.to(x.scalar_type()), x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward();
    auto saved = ctx->get_saved_variables();
    Tensor x = saved[0], p1 = saved[1], p2 = saved[2], beta = saved[3];
    Tensor d = ctx->saved_data["d"].toTensor(), q = ctx->saved_data["q"].toTensor();
    Tensor bc = ctx->saved_data["bc"].toTensor();
    const auto bs = ctx->saved_data["bs"].toIntVector();
    const i64 bsn = bs[0], bsc = bs[1], bsl = bs[2];
    const auto ct = compute_type(x.scalar_type());
    Tensor xc = x.to(ct).contiguous();
    Tensor go = grads[0].to(ct).contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C);
    // out: dp1 (C), dp2 (C) and, for a beta constant over the pixels, dbeta (beta-sized)
    const i64 nb = bsl ? 0 : bc.numel();
    Tensor dx = at::empty_like(xc);
    Tensor out = at::empty({2 * C + nb}, xc.options());
    // a beta varying over the pixels: its term per (sample, pixel)
    Tensor dbp = bsl ? at::zeros({N, L}, xc.options()) : Tensor();
    const int nt = at::get_num_threads();
    AT_DISPATCH_FLOATING_TYPES(ct, "acon_bwd", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      acon::acon_bwd<scalar_t>(go.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(),
                               dx.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                               q.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), N, C, L, bsn,
                               bsc, bsl, acon::kSeg, nullptr,
                               bsl ? dbp.data_ptr<scalar_t>() : nullptr, o, o + C,
                               bsl ? nullptr : o + 2 * C, nt);
    });
    Tensor dp1, dp2, dbeta;
    if (present(p1)) dp1 = as_param_grad(out, 0, C, p1);
    if (present(p2)) dp2 = as_param_grad(out, C, C, p2);
    if (bsl) {
      // (N, 1, *spatial) -> beta's shape: summed over the dimensions beta broadcasts
      std::vector<i64> full{N, 1};
      for (i64 i = 2; i < x.dim(); ++i) full.push_back(x.size(i));
      std::vector<i64> padded(x.dim() - beta.dim(), 1);
      for (i64 s : beta.sizes()) padded.push_back(s);
      dbeta = as_dtype_of(dbp.view(full).sum_to_size(padded).reshape(beta.sizes()), beta);
    } else {
      dbeta = as_dtype_of(slice_of(out, 2 * C, beta.sizes()), beta);
    }
    dx = dx.to(x.scalar_type());
    if (!dx.sizes().equals(x.sizes())) dx = dx.reshape(x.sizes());
    return {dx, dp1, dp2, dbeta, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// beta's layout for input x, or an undefined bc if beta does not broadcast to x as
// (Nb, Cb, 1, ...) or (Nb, 1, *spatial) with Nb in {1, N}, Cb in {1, C}: a beta varying
// over both the channels and the pixels (none of the layers makes one; e.g. x's full
// shape) takes the general path.
BetaLayout beta_layout(const Tensor& beta, const Tensor& x, at::ScalarType ct) {
  BetaLayout lay;
  const i64 ndim = x.dim(), N = x.size(0), C = x.size(1);
  if (beta.dim() > ndim) return lay;
  std::vector<i64> bs(ndim, 1);  // beta's shape padded to ndim
  for (i64 i = 0; i < beta.dim(); ++i) bs[ndim - beta.dim() + i] = beta.size(i);
  const i64 Nb = bs[0], Cb = bs[1];
  if ((Nb != 1 && Nb != N) || (Cb != 1 && Cb != C)) return lay;
  bool spatial = false;  // varies over the pixels
  for (i64 i = 2; i < ndim; ++i) {
    if (bs[i] != 1 && bs[i] != x.size(i)) return lay;
    spatial = spatial || bs[i] != 1;
  }
  if (spatial && Cb != 1) return lay;
  Tensor b = beta.detach();
  if (!spatial) {  // per row: (Nb * Cb,)
    lay.bc = b.reshape({Nb * Cb}).to(ct).contiguous();
    lay.bsn = Nb > 1 ? Cb : 0;
    lay.bsc = Cb > 1 ? 1 : 0;
    return lay;
  }
  // per pixel: (Nb, 1, L), expanded over the spatial dimensions beta broadcasts
  std::vector<i64> full{Nb, 1};
  for (i64 i = 2; i < ndim; ++i) full.push_back(x.size(i));
  const i64 L = x.numel() / (N * C);
  lay.bc = b.reshape(bs).expand(full).to(ct).contiguous().view({Nb * L});
  lay.bsn = Nb > 1 ? L : 0;
  lay.bsc = 0;
  lay.bsl = 1;
  return lay;
}

// ACON with per-channel (or shared) p1, p2 (either may be absent) and a beta of
// beta_layout's shapes; undefined if the arguments need the general path.
Tensor acon_fused(Tensor x, c10::optional<Tensor> p1o, c10::optional<Tensor> p2o,
                  Tensor beta) {
  const auto st = x.scalar_type();
  if (!x.device().is_cpu() || !at::isFloatingType(st) || x.dim() < 2 || x.numel() == 0)
    return Tensor();
  const auto ct = compute_type(st);
  if (ct != at::kFloat && ct != at::kDouble) return Tensor();
  Tensor p1 = p1o.has_value() ? *p1o : Tensor();
  Tensor p2 = p2o.has_value() ? *p2o : Tensor();
  if (!usable_param(p1) || !usable_param(p2) || !beta.defined() || !usable_param(beta))
    return Tensor();
  const i64 ndim = x.dim(), C = x.size(1);
  Tensor d, q;
  BetaLayout lay;
  {
    at::NoGradGuard ng;
    lay = beta_layout(beta, x, ct);
    if (!lay.bc.defined()) return Tensor();
    Tensor v1, v2;
    if (p1.defined() && !(v1 = channel_vector(p1, ndim, C, ct)).defined()) return Tensor();
    if (p2.defined() && !(v2 = channel_vector(p2, ndim, C, ct)).defined()) return Tensor();
    if (v2.defined()) {
      q = v2;
      d = v1.defined() ? v1 - v2 : 1 - v2;
    } else {
      q = at::zeros({C}, x.options().dtype(ct));
      d = v1.defined() ? v1 : at::ones({C}, x.options().dtype(ct));
    }
  }
  return AconFn::apply(x, p1.defined() ? p1 : at::empty({0}, x.options()),
                       p2.defined() ? p2 : at::empty({0}, x.options()), beta, d, q, lay.bc,
                       lay.bsn, lay.bsc, lay.bsl);
}

// ---------------------------------------------------------------------------
// meta-ACON-C, channel switch (see acon_meta_kernel.h and acon_mm/ops/meta_func.py)
// ---------------------------------------------------------------------------
template <typename T>
acon::NormSpec<T> spec_of(i64 mode, const Tensor& w, const Tensor& b, const Tensor& rm,
                          const Tensor& rv, double eps, double factor) {
  acon::NormSpec<T> s;
  s.mode = (int)mode;
  s.w = present(w) ? w.data_ptr<T>() : nullptr;
  s.b = present(b) ? b.data_ptr<T>() : nullptr;
  s.rm = present(rm) ? rm.data_ptr<T>() : nullptr;
  s.rv = present(rv) ? rv.data_ptr<T>() : nullptr;
  s.eps = eps;
  s.factor = factor;
  return s;
}

template <typename T>
acon::MetaSwitch<T> switch_of(const Tensor& w1, const Tensor& b1, acon::NormSpec<T> n1,
                              const Tensor& w2, const Tensor& b2, acon::NormSpec<T> n2) {
  return {w1.size(0),
          w1.data_ptr<T>(),
          present(b1) ? b1.data_ptr<T>() : nullptr,
          n1,
          w2.data_ptr<T>(),
          present(b2) ? b2.data_ptr<T>() : nullptr,
          n2};
}

// o[:C] = a[:C] - b[:C] (contiguous, same dtype) without a dispatched op.
template <typename T>
void difference(const Tensor& a, const Tensor& b, Tensor& o, i64 C) {
  const T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
  T* po = o.data_ptr<T>();
  for (i64 c = 0; c < C; ++c) po[c] = pa[c] - pb[c];
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
    Tensor saved, beta = at::empty({N * C}, xc.options());
    Tensor y = at::empty_like(xc);
    const int nt = at::get_num_threads();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meta_fwd", [&] {
      using T = scalar_t;
      difference<T>(p1, p2, d, C);
      saved = at::empty({acon::MetaSaved<T>::doubles(N, C, H)},
                        xc.options().dtype(at::kDouble));
      const auto sw = switch_of<T>(w1, b1, spec_of<T>(mode1, g1, e1, rm1, rv1, eps1, f1), w2,
                                   b2, spec_of<T>(mode2, g2, e2, rm2, rv2, eps2, f2));
      acon::meta_fwd<T>(xc.data_ptr<T>(), y.data_ptr<T>(), N, C, L, d.data_ptr<T>(),
                        q.data_ptr<T>(), sw,
                        acon::MetaSaved<T>::view(saved.data_ptr<double>(), N, C, H),
                        beta.data_ptr<T>(), acon::kSeg, nt);
    });
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
    const auto modes = ctx->saved_data["modes"].toIntVector();
    const auto has = ctx->saved_data["has"].toIntVector();
    Tensor xc = x.contiguous();
    Tensor go = grads[0].to(x.scalar_type()).contiguous();
    const i64 N = x.size(0), C = x.size(1), L = xc.numel() / (N * C), H = w1.size(0);
    Tensor dx = at::empty_like(xc);
    const acon::MetaGradLayout layout(C, H);
    Tensor out = at::empty({layout.total}, xc.options());
    const int nt = at::get_num_threads();
    const Tensor none;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meta_bwd", [&] {
      using T = scalar_t;
      const auto sw = switch_of<T>(w1, none, spec_of<T>(modes[0], g1, none, none, none, 0, 0),
                                   w2, none, spec_of<T>(modes[1], g2, none, none, none, 0, 0));
      acon::meta_bwd<T>(go.data_ptr<T>(), xc.data_ptr<T>(), dx.data_ptr<T>(), N, C, L,
                        d.data_ptr<T>(), q.data_ptr<T>(), sw,
                        acon::MetaSaved<T>::view(saved.data_ptr<double>(), N, C, H),
                        beta.data_ptr<T>(), acon::MetaGrads<T>(out.data_ptr<T>(), layout),
                        acon::kSeg, nt);
    });
    auto slot = [&](acon::MetaGradSlot s, at::IntArrayRef sizes) {
      return slice_of(out, layout.offset[s], sizes);
    };
    if (!dx.sizes().equals(x.sizes())) dx = dx.reshape(x.sizes());
    variable_list r(21);  // one per input of forward
    r[0] = dx;
    r[1] = slot(acon::kGradP1, p1.sizes());
    r[2] = slot(acon::kGradP2, p2.sizes());
    r[3] = slot(acon::kGradW1, w1.sizes());
    if (has[0]) r[4] = slot(acon::kGradB1, {H});
    if (has[1]) r[5] = slot(acon::kGradN1W, {H});
    if (has[2]) r[6] = slot(acon::kGradN1B, {H});
    r[7] = slot(acon::kGradW2, w2.sizes());
    if (has[3]) r[8] = slot(acon::kGradB2, {C});
    if (has[4]) r[9] = slot(acon::kGradN2W, {C});
    if (has[5]) r[10] = slot(acon::kGradN2B, {C});
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

// meta-ACON-C (channel switch): x (N, C, H, W) float32/float64; p1, p2 contiguous
// (1, C, 1, 1); fc1 = (w1, b1), norm1 = (g1, e1, rm1, rv1, mode1, eps1), fc2, norm2
// likewise (mode 0: none, 1: batch statistics, 2: running statistics); nbt and
// momentum (< 0 for None) drive the running-statistics update of mode 1.
Tensor meta_channel(Tensor x, Tensor p1, Tensor p2, Tensor w1, c10::optional<Tensor> b1,
                    c10::optional<Tensor> g1, c10::optional<Tensor> e1, Tensor w2,
                    c10::optional<Tensor> b2, c10::optional<Tensor> g2,
                    c10::optional<Tensor> e2, c10::optional<Tensor> rm1,
                    c10::optional<Tensor> rv1, c10::optional<Tensor> rm2,
                    c10::optional<Tensor> rv2, i64 mode1, double eps1, i64 mode2,
                    double eps2, c10::optional<Tensor> nbt1, c10::optional<Tensor> nbt2,
                    double momentum1, double momentum2) {
  TORCH_CHECK(p1.is_contiguous() && p2.is_contiguous(), "meta_channel: p1, p2 contiguous");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "meta_channel: float32 or float64 input");
  const double f1 = commit_norm(mode1, rm1, nbt1, momentum1);
  const double f2 = commit_norm(mode2, rm2, nbt2, momentum2);
  auto o = [&](const c10::optional<Tensor>& t) { return or_placeholder(t, x); };
  return MetaFn::apply(x, p1, p2, w1, o(b1), o(g1), o(e1), w2, o(b2), o(g2), o(e2), o(rm1),
                       o(rv1), o(rm2), o(rv2), mode1, eps1, f1, mode2, eps2, f2);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "acon_mm fused ACON CPU kernels (C++ autograd functions)";
  m.def("acon_fused", &acon_fused, "fused ACON (CPU); None where not applicable",
        py::arg("x"), py::arg("p1"), py::arg("p2"), py::arg("beta"));
  m.def("meta_channel", &meta_channel, "fused meta-ACON-C with the channel switch (CPU)");
  // acon_constants.h, for Python
  m.attr("SEG") = acon::kSeg;
  m.attr("CHANNEL_MAJOR_MAX_ROW") = acon::kChannelMajorMaxRow;
  m.attr("FLAT_MAX_ROW") = acon::kFlatMaxRow;
  m.attr("PARALLEL_MIN_NUMEL") = acon::kParallelMinNumel;
  m.attr("VECTOR_WIDTH") = ACON_VW;
}
