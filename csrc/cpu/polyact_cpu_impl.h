// CPU kernels of the polynomial activation, compiled once per instruction set.
//
// This header is included by kernel_default.cpp, kernel_avx2.cpp and
// kernel_avx512.cpp, each built with its own -m flags and CPU_CAPABILITY, so the
// code below lands in namespace pnn::cpu::<CAPABILITY> three times;
// polyact.cpp picks one at run time from what the processor supports.
//
// Structure of one op call:
//   * TensorIterator walks x (and grad_y / the outputs) in memory order, any
//     strides, without copying;
//   * the element range is cut into fixed chunks of kChunk elements, processed
//     by at::parallel_for; each chunk writes its own partial sums (boundary term,
//     range statistics, coefficient gradients) and the partials are added in
//     chunk order afterwards, so results do not depend on the thread count;
//   * the inner loop runs on at::vec::Vectorized<acc_t> when the innermost
//     strides are unit, on scalars otherwise.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../polyact.h"
#include "polyact_cpu.h"

namespace pnn {

// Fused multiply-add for vectors (the scalar overload is in polyact.h).
template <typename T>
inline at::vec::Vectorized<T> madd(at::vec::Vectorized<T> a, at::vec::Vectorized<T> b,
                                   at::vec::Vectorized<T> c) {
  return at::vec::fmadd(a, b, c);
}

namespace cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Elements per chunk: the unit of parallel work and of the fixed reduction order.
constexpr int64_t kChunk = 1 << 15;

template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Parameters of one call, in the accumulation type.
template <typename acc_t>
struct Params {
  const acc_t* coeffs;  // c_0..c_d, in t = x / B
  int degree;
  Basis basis;
  acc_t bound;          // B
  acc_t inv_bound;      // 1 / B
  acc_t threshold;      // alpha * B
  int lead_index;       // highest non-zero coefficient (for the overflow fix-up)
  acc_t lead;
};

// Per-chunk partial sums of the forward pass.
struct ForwardPartial {
  double expm1_sum = 0;   // sum of expm1(min(e, E))
  double linear_sum = 0;  // sum of max(e - E, 0)
  double max_abs = 0;     // NaN if any input is NaN
  double count_outside = 0;
};

template <typename S, typename acc_t>
inline Vectorized<acc_t> load_vec(const S* p, int64_t count) {
  using Vec = Vectorized<acc_t>;
  if constexpr (std::is_same_v<S, acc_t>) {
    return Vec::loadu(p, count);
  } else {
    acc_t buf[Vec::size()] = {};
    for (int64_t i = 0; i < count; ++i) buf[i] = static_cast<acc_t>(p[i]);
    return Vec::loadu(buf);
  }
}

template <typename S, typename acc_t>
inline void store_vec(S* p, Vectorized<acc_t> v, int64_t count) {
  if constexpr (std::is_same_v<S, acc_t>) {
    v.store(p, count);
  } else {
    acc_t buf[Vectorized<acc_t>::size()];
    v.store(buf);
    for (int64_t i = 0; i < count; ++i) p[i] = static_cast<S>(buf[i]);
  }
}

template <typename acc_t>
inline bool any_lane(Vectorized<acc_t> mask) {
  constexpr int full = (1 << Vectorized<acc_t>::size()) - 1;
  return mask.zero_mask() != full;
}

// Replace NaN produced by overflow (finite or infinite x, see polyact.h) by +-inf.
// Clenshaw can form inf - inf; Horner can form 0 * inf at x = +-inf.
template <typename acc_t>
inline acc_t fix_overflow(acc_t v, acc_t x_lane, acc_t t_lane, acc_t lead, int lead_index) {
  return (std::isnan(v) && !std::isnan(x_lane)) ? overflow_value(t_lane, lead, lead_index) : v;
}

// Independent vectors evaluated together (see poly_value_n).
constexpr int kUnroll = 4;

// Boundary contributions of one vector of |x| (lanes past `count` hold 0 and add
// nothing). float: vectorized with ATen's exp_u20 (max error 20 ulp); the
// linear excess past the exponent cap (any input beyond alpha*B + 30) is rare
// and summed lane by lane in float64. double: lane by lane.
template <typename acc_t>
struct BoundaryAccumulator {
  using Vec = Vectorized<acc_t>;
  Vec expm1_acc = Vec(0);
  double expm1_sum = 0, linear_sum = 0;
  int pending = 0;

  inline void add(Vec ax, const Params<acc_t>& P) {
    const Vec e = ax - Vec(P.threshold);
    if (!any_lane(e > Vec(0))) return;  // the common case in training
    if constexpr (std::is_same_v<acc_t, float>) {
      const Vec cap(static_cast<acc_t>(kBoundaryExpCap));
      const Vec ec = at::vec::minimum(at::vec::maximum(e, Vec(0)), cap);
      // Masked: exp_u20(0) - 1 need not be exactly 0 in the lanes that contribute nothing.
      expm1_acc = expm1_acc + Vec::blendv(Vec(0), ec.exp_u20() - Vec(1), e > Vec(0));
      if (++pending == 256) flush();  // bounded float accumulation
      if (any_lane(e > cap)) {
        acc_t eb[Vec::size()];
        e.store(eb);
        for (int64_t l = 0; l < Vec::size(); ++l)
          if (eb[l] > acc_t(kBoundaryExpCap)) linear_sum += static_cast<double>(eb[l]) - kBoundaryExpCap;
      }
    } else {
      acc_t eb[Vec::size()];
      e.store(eb);
      for (int64_t l = 0; l < Vec::size(); ++l) add_scalar(eb[l]);
    }
  }

  // One element's excess e = |x| - alpha*B (nothing if e <= 0 or NaN).
  inline void add_scalar(acc_t e) {
    if (e > acc_t(0)) {
      acc_t ex, lin;
      boundary_term(e, ex, lin);
      expm1_sum += ex;
      linear_sum += lin;
    }
  }

  inline void flush() {
    acc_t lanes[Vec::size()];
    expm1_acc.store(lanes);
    for (int64_t l = 0; l < Vec::size(); ++l) expm1_sum += lanes[l];
    expm1_acc = Vec(0);
    pending = 0;
  }
};

// Overflowed lanes (NaN from a non-NaN x) -> +-inf, see polyact.h. Rare.
template <typename acc_t>
inline Vectorized<acc_t> fix_overflow_vec(Vectorized<acc_t> v, Vectorized<acc_t> xv, Vectorized<acc_t> t,
                                          acc_t lead, int power) {
  using Vec = Vectorized<acc_t>;
  if (!any_lane(v.isnan())) return v;
  acc_t vb[Vec::size()], xb[Vec::size()], tb[Vec::size()];
  v.store(vb); xv.store(xb); t.store(tb);
  for (int64_t l = 0; l < Vec::size(); ++l) vb[l] = fix_overflow(vb[l], xb[l], tb[l], lead, power);
  return Vec::loadu(vb);
}

// ---------------------------------------------------------------- forward

// One run of n elements with element strides xs, ys (in elements).
template <typename scalar_t, typename acc_t>
void forward_run(const scalar_t* x, int64_t xs, scalar_t* y, int64_t ys, int64_t n,
                 const Params<acc_t>& P, const Vectorized<acc_t>* cv, ForwardPartial& out) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const int d = P.degree;
  BoundaryAccumulator<acc_t> boundary;
  acc_t max_abs = 0;
  bool saw_nan = false;
  int64_t i = 0;

  if (xs == 1 && ys == 1) {
    const Vec vbound(P.bound), vinv(P.inv_bound), one(1);
    Vec vmax(0), vcount(0);
    // Finish U vectors starting at x + i0: fix-up, store, statistics, boundary.
    auto finish = [&](int64_t i0, int64_t count, Vec xv, Vec t, Vec p) {
      p = fix_overflow_vec(p, xv, t, P.lead, P.lead_index);
      store_vec<scalar_t, acc_t>(y + i0, p, count);
      const Vec ax = xv.abs();
      vmax = at::vec::maximum(vmax, ax);  // propagates NaN
      vcount = vcount + ((ax > vbound) & one);
      boundary.add(ax, P);
    };
    for (; i + kUnroll * W <= n; i += kUnroll * W) {
      Vec xv[kUnroll], t[kUnroll], p[kUnroll];
      for (int u = 0; u < kUnroll; ++u) {
        xv[u] = load_vec<scalar_t, acc_t>(x + i + u * W, W);
        t[u] = xv[u] * vinv;
      }
      poly_value_n<kUnroll>(cv, d, t, P.basis, p);
      for (int u = 0; u < kUnroll; ++u) finish(i + u * W, W, xv[u], t[u], p[u]);
    }
    for (; i < n; i += W) {
      const int64_t cnt = std::min<int64_t>(W, n - i);
      Vec xv = load_vec<scalar_t, acc_t>(x + i, cnt);  // lanes past cnt are 0
      Vec t = xv * vinv;
      finish(i, cnt, xv, t, poly_value(cv, d, t, P.basis));
    }
    acc_t mb[W], cb[W];
    vmax.store(mb);
    vcount.store(cb);
    for (int64_t l = 0; l < W; ++l) {
      saw_nan |= std::isnan(mb[l]);
      max_abs = std::max(max_abs, mb[l]);
      out.count_outside += cb[l];
    }
  } else {
    int64_t count = 0;
    for (; i < n; ++i) {
      acc_t xv = static_cast<acc_t>(x[i * xs]);
      acc_t t = xv * P.inv_bound;
      acc_t p = fix_overflow(poly_value(P.coeffs, d, t, P.basis), xv, t, P.lead, P.lead_index);
      y[i * ys] = static_cast<scalar_t>(p);
      acc_t ax = std::abs(xv);
      saw_nan |= std::isnan(ax);
      max_abs = std::max(max_abs, ax);
      count += ax > P.bound;
      boundary.add_scalar(ax - P.threshold);
    }
    out.count_outside += count;
  }
  boundary.flush();
  out.expm1_sum += boundary.expm1_sum;
  out.linear_sum += boundary.linear_sum;
  if (saw_nan || std::isnan(out.max_abs)) {
    out.max_abs = NAN;
  } else {
    out.max_abs = std::max(out.max_abs, static_cast<double>(max_abs));
  }
}

template <typename acc_t>
Params<acc_t> make_params(const at::Tensor& coeffs, double bound, double alpha, Basis basis) {
  Params<acc_t> P;
  P.coeffs = coeffs.data_ptr<acc_t>();
  P.degree = static_cast<int>(coeffs.numel()) - 1;
  P.basis = basis;
  P.bound = static_cast<acc_t>(bound);
  P.inv_bound = static_cast<acc_t>(1.0 / bound);
  P.threshold = static_cast<acc_t>(alpha * bound);
  P.lead_index = leading_index(P.coeffs, P.degree);
  P.lead = P.coeffs[P.lead_index];
  return P;
}

inline int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

void forward(const at::Tensor& x, const at::Tensor& coeffs, double bound, double alpha,
             Basis basis, at::Tensor& y, at::Tensor& stats) {
  const int64_t numel = x.numel();
  std::vector<ForwardPartial> partials(num_chunks(numel));
  if (numel > 0) {
    auto iter = at::TensorIteratorConfig()
                    .add_output(y)
                    .add_const_input(x)
                    .check_all_same_dtype(true)
                    .resize_outputs(false)
                    .build();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_forward", [&] {
      using acc_t = acc_type_t<scalar_t>;
      const auto P = make_params<acc_t>(coeffs, bound, alpha, basis);
      at::parallel_for(0, partials.size(), 1, [&](int64_t c0, int64_t c1) {
        std::array<Vectorized<acc_t>, kMaxDegree + 1> cv;
        for (int k = 0; k <= P.degree; ++k) cv[k] = Vectorized<acc_t>(P.coeffs[k]);
        for (int64_t c = c0; c < c1; ++c) {
          ForwardPartial& part = partials[c];
          auto loop = [&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
            for (int64_t j = 0; j < n1; ++j) {
              auto* yp = reinterpret_cast<scalar_t*>(data[0] + j * strides[2]);
              auto* xp = reinterpret_cast<const scalar_t*>(data[1] + j * strides[3]);
              forward_run<scalar_t, acc_t>(xp, strides[1] / sizeof(scalar_t), yp,
                                           strides[0] / sizeof(scalar_t), n0, P, cv.data(), part);
            }
          };
          iter.serial_for_each(loop, {c * kChunk, std::min(numel, (c + 1) * kChunk)});
        }
      });
    });
  }
  // Fixed-order reduction of the chunk partials.
  double expm1_sum = 0, linear_sum = 0, max_abs = 0, count = 0;
  for (const auto& p : partials) {
    expm1_sum += p.expm1_sum;
    linear_sum += p.linear_sum;
    max_abs = (std::isnan(p.max_abs) || std::isnan(max_abs)) ? NAN : std::max(max_abs, p.max_abs);
    count += p.count_outside;
  }
  const double n = static_cast<double>(std::max<int64_t>(numel, 1));
  double boundary = (expm1_sum + std::exp(kBoundaryExpCap) * linear_sum) / n;
  if (std::isnan(max_abs)) boundary = NAN;
  const double values[3] = {boundary, max_abs, count / n};
  AT_DISPATCH_FLOATING_TYPES(stats.scalar_type(), "pnn_poly_stats", [&] {
    auto* s = stats.data_ptr<scalar_t>();
    for (int k = 0; k < 3; ++k) s[k] = static_cast<scalar_t>(values[k]);
  });
}

// ---------------------------------------------------------------- backward

// grad_x = grad_y * p'(x) + g_L/N * sign(x) exp(min(e,E)) [e > 0]
// where p'(x) = dp/dt / B. Elements with grad_y == 0 contribute 0 from the
// polynomial part even where p' overflowed (no 0 * inf = NaN).
// Coefficient gradients: dL/dc_k = sum_j grad_y_j phi_k(t_j).
template <typename scalar_t, typename acc_t>
void backward_run(const scalar_t* gy, int64_t gys, const scalar_t* x, int64_t xs, scalar_t* gx,
                  int64_t gxs, int64_t n, const Params<acc_t>& P, const Vectorized<acc_t>* cv,
                  acc_t boundary_scale, Vectorized<acc_t>* coeff_acc, acc_t* coeff_acc_scalar) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const int d = P.degree;
  int64_t i = 0;

  auto boundary_grad = [&](acc_t xv) -> acc_t {
    acc_t e = std::abs(xv) - P.threshold;
    if (!(e > acc_t(0)) || boundary_scale == acc_t(0)) return acc_t(0);
    acc_t s = boundary_scale * boundary_slope(e);
    return xv < acc_t(0) ? -s : s;
  };

  if (gys == 1 && xs == 1 && gxs == 1) {
    const Vec vinv(P.inv_bound), vthr(P.threshold), zero(0), cap(static_cast<acc_t>(kBoundaryExpCap));
    const int dlead = std::max(P.lead_index - 1, 0);
    auto finish = [&](int64_t i0, int64_t count, Vec xv, Vec g, Vec t, Vec dp) {
      dp = fix_overflow_vec(dp, xv, t, P.lead, dlead);
      Vec gxv = Vec::blendv(g * dp * vinv, zero, g == zero);
      const Vec e = xv.abs() - vthr;
      if (boundary_scale != acc_t(0) && any_lane(e > zero)) {
        if constexpr (std::is_same_v<acc_t, float>) {
          const Vec ec = at::vec::minimum(at::vec::maximum(e, zero), cap);
          Vec s = Vec::blendv(zero, Vec(boundary_scale) * ec.exp_u20(), e > zero);
          gxv = gxv + Vec::blendv(s, zero - s, xv < zero);
        } else {
          acc_t xb[W], gb[W];
          xv.store(xb);
          gxv.store(gb);
          for (int64_t l = 0; l < count; ++l) gb[l] += boundary_grad(xb[l]);
          gxv = Vec::loadu(gb);
        }
      }
      store_vec<scalar_t, acc_t>(gx + i0, gxv, count);
      // Lanes past count have g == 0 and add nothing.
      if (coeff_acc != nullptr) accumulate_basis(g, t, d, P.basis, coeff_acc);
    };
    for (; i + kUnroll * W <= n; i += kUnroll * W) {
      Vec xv[kUnroll], g[kUnroll], t[kUnroll], p[kUnroll], dp[kUnroll];
      for (int u = 0; u < kUnroll; ++u) {
        xv[u] = load_vec<scalar_t, acc_t>(x + i + u * W, W);
        g[u] = load_vec<scalar_t, acc_t>(gy + i + u * W, W);
        t[u] = xv[u] * vinv;
      }
      poly_value_deriv_n<kUnroll>(cv, d, t, P.basis, p, dp);
      for (int u = 0; u < kUnroll; ++u) finish(i + u * W, W, xv[u], g[u], t[u], dp[u]);
    }
    for (; i < n; i += W) {
      const int64_t cnt = std::min<int64_t>(W, n - i);
      Vec xv = load_vec<scalar_t, acc_t>(x + i, cnt);
      Vec g = load_vec<scalar_t, acc_t>(gy + i, cnt);
      Vec t = xv * vinv;
      Vec p, dp;
      poly_value_deriv(cv, d, t, P.basis, p, dp);
      finish(i, cnt, xv, g, t, dp);
    }
  } else {
    for (; i < n; ++i) {
      acc_t xv = static_cast<acc_t>(x[i * xs]);
      acc_t g = static_cast<acc_t>(gy[i * gys]);
      acc_t t = xv * P.inv_bound;
      acc_t p, dp;
      poly_value_deriv(P.coeffs, d, t, P.basis, p, dp);
      dp = fix_overflow(dp, xv, t, P.lead, std::max(P.lead_index - 1, 0));
      acc_t gxv = g == acc_t(0) ? acc_t(0) : g * dp * P.inv_bound;
      gx[i * gxs] = static_cast<scalar_t>(gxv + boundary_grad(xv));
      if (coeff_acc_scalar != nullptr) accumulate_basis(g, t, d, P.basis, coeff_acc_scalar);
    }
  }
}

void backward(const at::Tensor& grad_y, double grad_boundary, const at::Tensor& x,
              const at::Tensor& coeffs, double bound, double alpha, Basis basis,
              at::Tensor& grad_x, at::Tensor* grad_coeffs) {
  const int64_t numel = x.numel();
  const int degree = static_cast<int>(coeffs.numel()) - 1;
  const int64_t chunks = num_chunks(numel);
  // Per-chunk coefficient-gradient partials, reduced below in chunk order.
  std::vector<double> coeff_partials(grad_coeffs ? chunks * (degree + 1) : 0, 0.0);
  if (numel > 0) {
    auto iter = at::TensorIteratorConfig()
                    .add_output(grad_x)
                    .add_const_input(grad_y)
                    .add_const_input(x)
                    .check_all_same_dtype(true)
                    .resize_outputs(false)
                    .build();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_backward", [&] {
      using acc_t = acc_type_t<scalar_t>;
      using Vec = Vectorized<acc_t>;
      const auto P = make_params<acc_t>(coeffs, bound, alpha, basis);
      const acc_t boundary_scale = static_cast<acc_t>(grad_boundary / static_cast<double>(numel));
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        std::array<Vec, kMaxDegree + 1> cv;
        for (int k = 0; k <= degree; ++k) cv[k] = Vec(P.coeffs[k]);
        std::array<Vec, kMaxDegree + 1> acc_v;
        std::array<acc_t, kMaxDegree + 1> acc_s;
        for (int64_t c = c0; c < c1; ++c) {
          if (grad_coeffs) {
            std::fill(acc_v.begin(), acc_v.begin() + degree + 1, Vec(0));
            std::fill(acc_s.begin(), acc_s.begin() + degree + 1, acc_t(0));
          }
          auto loop = [&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
            for (int64_t j = 0; j < n1; ++j) {
              auto* gxp = reinterpret_cast<scalar_t*>(data[0] + j * strides[3]);
              auto* gyp = reinterpret_cast<const scalar_t*>(data[1] + j * strides[4]);
              auto* xp = reinterpret_cast<const scalar_t*>(data[2] + j * strides[5]);
              backward_run<scalar_t, acc_t>(
                  gyp, strides[1] / sizeof(scalar_t), xp, strides[2] / sizeof(scalar_t), gxp,
                  strides[0] / sizeof(scalar_t), n0, P, cv.data(), boundary_scale,
                  grad_coeffs ? acc_v.data() : nullptr, grad_coeffs ? acc_s.data() : nullptr);
            }
          };
          iter.serial_for_each(loop, {c * kChunk, std::min(numel, (c + 1) * kChunk)});
          if (grad_coeffs) {
            double* out = coeff_partials.data() + c * (degree + 1);
            for (int k = 0; k <= degree; ++k) {
              acc_t lanes[Vec::size()];
              acc_v[k].store(lanes);
              double s = acc_s[k];
              for (int64_t l = 0; l < Vec::size(); ++l) s += lanes[l];
              out[k] = s;
            }
          }
        }
      });
    });
  }
  if (grad_coeffs) {
    std::vector<double> total(degree + 1, 0.0);
    for (int64_t c = 0; c < chunks; ++c)
      for (int k = 0; k <= degree; ++k) total[k] += coeff_partials[c * (degree + 1) + k];
    AT_DISPATCH_FLOATING_TYPES(grad_coeffs->scalar_type(), "pnn_poly_coeff_grad", [&] {
      auto* g = grad_coeffs->data_ptr<scalar_t>();
      for (int k = 0; k <= degree; ++k) g[k] = static_cast<scalar_t>(total[k]);
    });
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace pnn
