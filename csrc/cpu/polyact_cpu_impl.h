// CPU kernels of the polynomial activation, compiled once per instruction set.
// (Over 400 lines: the forward and backward kernels share their vector helpers and
// chunked reduction here, in the one header that each instruction-set build includes.)
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
//   * the inner loop always runs on at::vec::Vectorized<acc_t>: unit-stride
//     runs load and store vectors directly; other strides (sliced, transposed
//     against the output, a broadcast grad_y of stride 0) gather into and
//     scatter from a vector's worth of lanes, so that no layout falls back to
//     a scalar evaluation of the polynomial.
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

namespace pnn {
// Fused multiply-add for vectors. Declared before the shared headers so that their
// templates (poly_value_n, accumulate_basis) find it: a dependent call finds by
// ordinary lookup only what is declared before the template's definition, and
// argument-dependent lookup looks in at::vec, not here.
template <typename T>
inline at::vec::Vectorized<T> madd(at::vec::Vectorized<T> a, at::vec::Vectorized<T> b, at::vec::Vectorized<T> c) {
  return at::vec::fmadd(a, b, c);
}
}  // namespace pnn

#include "../polyact_common.h"
#include "polyact_cpu.h"

namespace pnn {
namespace cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Elements per chunk: the unit of parallel work and of the fixed reduction order.
constexpr int64_t kChunk = 1 << 15;

// The shared parameters plus the leading coefficient, for the overflow fix-up
// (the CUDA kernels find it on the device instead).
template <typename acc_t>
struct CpuParams : PolyParams<acc_t> {
  int lead_index;  // highest non-zero coefficient
  acc_t lead;
};

template <typename acc_t>
CpuParams<acc_t> make_params(const at::Tensor& coeffs, double bound, double alpha, Basis basis, BoundaryForm form) {
  CpuParams<acc_t> P;
  static_cast<PolyParams<acc_t>&>(P) = make_poly_params<acc_t>(
      coeffs.const_data_ptr<acc_t>(), static_cast<int>(coeffs.numel()) - 1, basis, bound, alpha, form);
  P.lead_index = leading_index(P.coeffs, P.degree);
  P.lead = P.coeffs[P.lead_index];
  return P;
}

// `count` (<= lanes) elements from p with element stride `stride` (0: one value
// broadcast to those lanes); lanes past count are 0.
template <typename S, typename acc_t>
inline Vectorized<acc_t> load_vec(const S* p, int64_t stride, int64_t count) {
  using Vec = Vectorized<acc_t>;
  if constexpr (std::is_same_v<S, acc_t>) {
    if (stride == 1) return Vec::loadu(p, count);
  }
  if (stride == 0 && count == Vec::size()) return Vec(static_cast<acc_t>(*p));
  acc_t buf[Vec::size()] = {};
  for (int64_t i = 0; i < count; ++i) buf[i] = static_cast<acc_t>(p[i * stride]);
  return Vec::loadu(buf);
}

template <typename S, typename acc_t>
inline void store_vec(S* p, int64_t stride, Vectorized<acc_t> v, int64_t count) {
  if constexpr (std::is_same_v<S, acc_t>) {
    if (stride == 1) return v.store(p, count);
  }
  acc_t buf[Vectorized<acc_t>::size()];
  v.store(buf);
  for (int64_t i = 0; i < count; ++i) p[i * stride] = static_cast<S>(buf[i]);
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

// Independent vectors evaluated together (see poly_value_n). Four chains keep the
// Clenshaw loop in 16 AVX2 registers (b1, b2, 2t per chain and c_k) with no spill;
// measured on Zen 3 (FMA latency 4): about one cycle per chain step, the latency
// bound of 4 chains. 8 chains spill b1/b2 to the stack and were 1.4x slower
// (degree 22 forward 1.84 -> 2.65 ns/element, 256K elements, 1 thread).
constexpr int kUnroll = 4;

// Elements per row segment when a 2-D block is walked in tiles (see backward()).
constexpr int64_t kTile = 128;

// Lanes set in any of N comparison masks, with one mask-to-integer move for the group.
template <int N, typename Vec>
inline bool any_lane_n(const Vec* mask) {
  Vec m = mask[0];
  for (int u = 1; u < N; ++u) m = m | mask[u];
  return any_lane(m);
}

// Boundary contributions of N vectors of |x| at once (lanes past the run's end hold
// 0 and add nothing). Each test is made once per group, so the common case of
// training (no lane past alpha*B) costs one branch per N vectors, and a group that
// has such lanes evaluates its N exponentials side by side. float: vectorized with
// ATen's exp_u20 (max error 20 ulp); the linear excess past the exponent cap (any
// input beyond alpha*B + 30) is rare and summed lane by lane in float64. The
// quadratic form squares in float lanes too, except in a group with an excess over
// kQuadraticLaneMax (lane by lane in float64, where e^2 cannot overflow). double:
// lane by lane.
// 256 float squares of at most this add up to 2.6e38 < FLT_MAX (see flush()).
constexpr double kQuadraticLaneMax = 1e18;

template <typename acc_t>
struct BoundaryAccumulator {
  using Vec = Vectorized<acc_t>;
  Vec expm1_acc = Vec(0);
  double expm1_sum = 0, linear_sum = 0;
  int pending = 0;  // vectors added to expm1_acc since the last flush (N divides 256)

  template <int N>
  inline void add(const Vec* ax, const CpuParams<acc_t>& P) {
    static_assert(256 % N == 0, "flush() bounds the float accumulation at 256 vectors");
    Vec e[N], pos[N];
    for (int u = 0; u < N; ++u) {
      e[u] = ax[u] - Vec(P.threshold);
      pos[u] = e[u] > Vec(0);
    }
    if (!any_lane_n<N>(pos)) return;  // the common case in training
    if constexpr (std::is_same_v<acc_t, float>) {
      if (P.form == BoundaryForm::kQuadratic) {
        Vec big[N];
        for (int u = 0; u < N; ++u) big[u] = e[u] > Vec(static_cast<acc_t>(kQuadraticLaneMax));
        if (any_lane_n<N>(big)) return add_lanes<N>(e, P.form);
        for (int u = 0; u < N; ++u) expm1_acc = expm1_acc + Vec::blendv(Vec(0), e[u] * e[u], pos[u]);
        return count_pending(N);
      }
      const Vec cap(static_cast<acc_t>(kBoundaryExpCap));
      Vec over[N];
      for (int u = 0; u < N; ++u) {
        const Vec ec = at::vec::minimum(at::vec::maximum(e[u], Vec(0)), cap);
        // Masked: exp_u20(0) - 1 need not be exactly 0 in the lanes that contribute nothing.
        expm1_acc = expm1_acc + Vec::blendv(Vec(0), ec.exp_u20() - Vec(1), pos[u]);
        over[u] = e[u] > cap;
      }
      count_pending(N);
      if (any_lane_n<N>(over)) {
        for (int u = 0; u < N; ++u) {
          acc_t eb[Vec::size()];
          e[u].store(eb);
          for (int64_t l = 0; l < Vec::size(); ++l)
            if (eb[l] > acc_t(kBoundaryExpCap)) linear_sum += static_cast<double>(eb[l]) - kBoundaryExpCap;
        }
      }
    } else {
      add_lanes<N>(e, P.form);
    }
  }

  template <int N>
  inline void add_lanes(const Vec* e, BoundaryForm form) {
    for (int u = 0; u < N; ++u) {
      acc_t eb[Vec::size()];
      e[u].store(eb);
      for (int64_t l = 0; l < Vec::size(); ++l) add_scalar(eb[l], form);
    }
  }

  // One element's excess e = |x| - alpha*B (nothing if e <= 0 or NaN).
  inline void add_scalar(acc_t e, BoundaryForm form) {
    if (e > acc_t(0)) {
      double ex, lin;
      boundary_term(e, form, ex, lin);
      expm1_sum += ex;
      linear_sum += lin;
    }
  }

  inline void count_pending(int vectors) {
    pending += vectors;
    if (pending == 256) flush();  // bounded float accumulation
  }

  inline void flush() {
    acc_t lanes[Vec::size()];
    expm1_acc.store(lanes);
    for (int64_t l = 0; l < Vec::size(); ++l) expm1_sum += lanes[l];
    expm1_acc = Vec(0);
    pending = 0;
  }
};

// Overflowed lanes (NaN from a non-NaN x) -> +-inf in N vectors, see polyact.h. Rare:
// one test per group.
template <int N, typename acc_t>
inline void fix_overflow_n(Vectorized<acc_t>* v, const Vectorized<acc_t>* xv, const Vectorized<acc_t>* t, acc_t lead,
                           int power) {
  using Vec = Vectorized<acc_t>;
  Vec nan[N];
  for (int u = 0; u < N; ++u) nan[u] = v[u].isnan();
  if (!any_lane_n<N>(nan)) return;
  for (int u = 0; u < N; ++u) {
    acc_t vb[Vec::size()], xb[Vec::size()], tb[Vec::size()];
    v[u].store(vb);
    xv[u].store(xb);
    t[u].store(tb);
    for (int64_t l = 0; l < Vec::size(); ++l) vb[l] = fix_overflow(vb[l], xb[l], tb[l], lead, power);
    v[u] = Vec::loadu(vb);
  }
}

// ---------------------------------------------------------------- forward

// One run of n elements with element strides xs, ys (in elements); any strides,
// always vectorized (see load_vec / store_vec).
template <typename scalar_t, typename acc_t>
void forward_run(const scalar_t* x, int64_t xs, scalar_t* y, int64_t ys, int64_t n, const CpuParams<acc_t>& P,
                 const Vectorized<acc_t>* cv, ForwardPartial& out) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const int d = P.degree;
  BoundaryAccumulator<acc_t> boundary;
  const Vec vbound(P.bound), vinv(P.inv_bound), one(1);
  Vec vmax(0), vcount(0);
  // Finish N vectors at index i0 (the last one holding `count` elements): fix-up,
  // store, statistics, boundary. Lanes past count hold x = 0 and add nothing.
  auto finish = [&]<int N>(int64_t i0, int64_t count, const Vec* xv, const Vec* t, Vec* p) {
    fix_overflow_n<N>(p, xv, t, P.lead, P.lead_index);
    Vec ax[N];
    for (int u = 0; u < N; ++u) {
      store_vec<scalar_t, acc_t>(y + (i0 + u * W) * ys, ys, p[u], u + 1 < N ? W : count);
      ax[u] = xv[u].abs();
      vmax = at::vec::maximum(vmax, ax[u]);  // propagates NaN
      vcount = vcount + ((ax[u] > vbound) & one);
    }
    boundary.template add<N>(ax, P);
  };
  int64_t i = 0;
  for (; i + kUnroll * W <= n; i += kUnroll * W) {
    Vec xv[kUnroll], t[kUnroll], p[kUnroll];
    for (int u = 0; u < kUnroll; ++u) {
      xv[u] = load_vec<scalar_t, acc_t>(x + (i + u * W) * xs, xs, W);
      t[u] = xv[u] * vinv;
    }
    poly_value_n<kUnroll>(cv, d, t, P.basis, p);
    finish.template operator()<kUnroll>(i, W, xv, t, p);
  }
  for (; i < n; i += W) {
    const int64_t cnt = std::min<int64_t>(W, n - i);
    const Vec xv = load_vec<scalar_t, acc_t>(x + i * xs, xs, cnt);
    const Vec t = xv * vinv;
    Vec p = poly_value(cv, d, t, P.basis);
    finish.template operator()<1>(i, cnt, &xv, &t, &p);
  }
  boundary.flush();
  ForwardPartial run{boundary.expm1_sum, boundary.linear_sum, 0, 0};
  acc_t mb[W], cb[W];
  vmax.store(mb);
  vcount.store(cb);
  for (int64_t l = 0; l < W; ++l) {
    run.max_abs = nan_max(run.max_abs, static_cast<double>(mb[l]));
    run.count_outside += cb[l];
  }
  out.merge(run);
}

inline int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

void forward(const at::Tensor& x, const at::Tensor& coeffs, double bound, double alpha, Basis basis, BoundaryForm form,
             at::Tensor& y, at::Tensor& stats) {
  const int64_t numel = x.numel();
  std::vector<ForwardPartial> partials(num_chunks(numel), ForwardPartial::zero());
  if (numel > 0) {
    auto iter = at::TensorIteratorConfig()
                    .add_output(y)
                    .add_const_input(x)
                    .check_all_same_dtype(true)
                    .resize_outputs(false)
                    .build();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_forward", [&] {
      using acc_t = acc_type_t<scalar_t>;
      const auto P = make_params<acc_t>(coeffs, bound, alpha, basis, form);
      at::parallel_for(0, partials.size(), 1, [&](int64_t c0, int64_t c1) {
        std::array<Vectorized<acc_t>, kMaxDegree + 1> cv;
        for (int k = 0; k <= P.degree; ++k) cv[k] = Vectorized<acc_t>(P.coeffs[k]);
        for (int64_t c = c0; c < c1; ++c) {
          ForwardPartial& part = partials[c];
          auto loop = [&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
            for (int64_t j = 0; j < n1; ++j) {
              auto* yp = reinterpret_cast<scalar_t*>(data[0] + j * strides[2]);
              auto* xp = reinterpret_cast<const scalar_t*>(data[1] + j * strides[3]);
              forward_run<scalar_t, acc_t>(xp, strides[1] / sizeof(scalar_t), yp, strides[0] / sizeof(scalar_t), n0, P,
                                           cv.data(), part);
            }
          };
          iter.serial_for_each(loop, {c * kChunk, std::min(numel, (c + 1) * kChunk)});
        }
      });
    });
  }
  // Fixed-order reduction of the chunk partials.
  ForwardPartial total = ForwardPartial::zero();
  for (const auto& p : partials) total.merge(p);
  AT_DISPATCH_FLOATING_TYPES(stats.scalar_type(), "pnn_poly_stats",
                             [&] { total.finalize(numel, stats.data_ptr<scalar_t>()); });
}

// ---------------------------------------------------------------- backward

// grad_x = grad_y * p'(x) + g_L/N * sign(x) f'(e) [e > 0], f' = exp(min(e,E)) or 2e (polyact.h)
// where p'(x) = dp/dt / B is one recurrence of degree d - 1 over the derivative's
// coefficients dcv (derivative_coeffs in polyact_common.h, 1/B folded in). Elements with grad_y == 0 contribute 0 from
// the polynomial part even where p' overflowed (no 0 * inf = NaN). Coefficient gradients: dL/dc_k = sum_j grad_y_j
// phi_k(t_j). One run of n elements with element strides gys, xs, gxs (gys = 0: grad_y is one value broadcast, as from
// y.sum()); any strides, always vectorized.
template <typename scalar_t, typename acc_t>
void backward_run(const scalar_t* gy, int64_t gys, const scalar_t* x, int64_t xs, scalar_t* gx, int64_t gxs, int64_t n,
                  const CpuParams<acc_t>& P, const Vectorized<acc_t>* dcv, int dd, acc_t boundary_scale,
                  Vectorized<acc_t>* coeff_acc) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const int d = P.degree;
  const Vec vinv(P.inv_bound), vthr(P.threshold), zero(0), cap(static_cast<acc_t>(kBoundaryExpCap));
  const int dlead = std::max(P.lead_index - 1, 0);

  auto boundary_grad = [&](acc_t xv) -> acc_t {
    acc_t e = std::abs(xv) - P.threshold;
    if (!(e > acc_t(0))) return acc_t(0);
    acc_t s = boundary_scale * boundary_slope(e, P.form);
    return xv < acc_t(0) ? -s : s;
  };
  // grad_x of N vectors at index i0 (the last one holding `count` elements) whose
  // dp/dx is known; the boundary test is made once per group. Lanes past count have
  // x = 0 and g = 0, and add nothing to the coefficient gradients.
  auto finish = [&]<int N>(int64_t i0, int64_t count, const Vec* xv, const Vec* g, const Vec* t, Vec* dp) {
    fix_overflow_n<N>(dp, xv, t, P.lead, dlead);
    Vec gxv[N], e[N], pos[N];
    for (int u = 0; u < N; ++u) {
      gxv[u] = Vec::blendv(g[u] * dp[u], zero, g[u] == zero);
      e[u] = xv[u].abs() - vthr;
      pos[u] = e[u] > zero;
    }
    if (boundary_scale != acc_t(0) && any_lane_n<N>(pos)) {
      for (int u = 0; u < N; ++u) {
        if constexpr (std::is_same_v<acc_t, float>) {
          const Vec slope = P.form == BoundaryForm::kQuadratic
                                ? at::vec::minimum(e[u] + e[u], Vec(max_finite<acc_t>()))  // see boundary_slope
                                : at::vec::minimum(at::vec::maximum(e[u], zero), cap).exp_u20();
          const Vec sv = Vec::blendv(zero, Vec(boundary_scale) * slope, pos[u]);
          gxv[u] = gxv[u] + Vec::blendv(sv, zero - sv, xv[u] < zero);
        } else {
          acc_t xb[W], gb[W];
          xv[u].store(xb);
          gxv[u].store(gb);
          for (int64_t l = 0; l < W; ++l) gb[l] += boundary_grad(xb[l]);
          gxv[u] = Vec::loadu(gb);
        }
      }
    }
    for (int u = 0; u < N; ++u) {
      store_vec<scalar_t, acc_t>(gx + (i0 + u * W) * gxs, gxs, gxv[u], u + 1 < N ? W : count);
      if (coeff_acc != nullptr) accumulate_basis<kMaxDegree + 1>(g[u], t[u], d, 0, P.basis, coeff_acc);
    }
  };
  int64_t i = 0;
  for (; i + kUnroll * W <= n; i += kUnroll * W) {
    Vec xv[kUnroll], g[kUnroll], t[kUnroll], dp[kUnroll];
    for (int u = 0; u < kUnroll; ++u) {
      xv[u] = load_vec<scalar_t, acc_t>(x + (i + u * W) * xs, xs, W);
      g[u] = load_vec<scalar_t, acc_t>(gy + (i + u * W) * gys, gys, W);
      t[u] = xv[u] * vinv;
    }
    poly_value_n<kUnroll>(dcv, dd, t, P.basis, dp);
    finish.template operator()<kUnroll>(i, W, xv, g, t, dp);
  }
  for (; i < n; i += W) {
    const int64_t cnt = std::min<int64_t>(W, n - i);
    const Vec xv = load_vec<scalar_t, acc_t>(x + i * xs, xs, cnt);
    const Vec g = load_vec<scalar_t, acc_t>(gy + i * gys, gys, cnt);
    const Vec t = xv * vinv;
    Vec dp = poly_value(dcv, dd, t, P.basis);
    finish.template operator()<1>(i, cnt, &xv, &g, &t, &dp);
  }
}

void backward(const at::Tensor& grad_y, double grad_boundary, const at::Tensor& x, const at::Tensor& coeffs,
              double bound, double alpha, Basis basis, BoundaryForm form, at::Tensor& grad_x, at::Tensor* grad_coeffs) {
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
      const auto P = make_params<acc_t>(coeffs, bound, alpha, basis, form);
      const acc_t boundary_scale = static_cast<acc_t>(grad_boundary / static_cast<double>(numel));
      std::array<acc_t, kMaxDegree + 1> dcoeffs;
      const int dd = derivative_coeffs(P.coeffs, degree, basis, 1.0 / bound, dcoeffs.data());
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        std::array<Vec, kMaxDegree + 1> dcv;
        for (int k = 0; k <= dd; ++k) dcv[k] = Vec(dcoeffs[k]);
        std::array<Vec, kMaxDegree + 1> acc_v;
        for (int64_t c = c0; c < c1; ++c) {
          if (grad_coeffs) std::fill(acc_v.begin(), acc_v.begin() + degree + 1, Vec(0));
          // A 2-D block: n1 rows of n0 elements in grad_x's memory order. When an
          // operand runs across the rows (grad_y transposed against x: inner stride
          // large, outer stride small), walking whole rows touches a new cache line
          // and page per element; columns of kTile across all rows reuse them.
          auto loop = [&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
            const bool tiled =
                n1 > 1 && (std::abs(strides[1]) > std::abs(strides[4]) || std::abs(strides[2]) > std::abs(strides[5]));
            const int64_t tile = tiled ? kTile : n0;
            for (int64_t i0 = 0; i0 < n0; i0 += tile) {
              const int64_t len = std::min(tile, n0 - i0);
              for (int64_t j = 0; j < n1; ++j) {
                auto* gxp = reinterpret_cast<scalar_t*>(data[0] + j * strides[3] + i0 * strides[0]);
                auto* gyp = reinterpret_cast<const scalar_t*>(data[1] + j * strides[4] + i0 * strides[1]);
                auto* xp = reinterpret_cast<const scalar_t*>(data[2] + j * strides[5] + i0 * strides[2]);
                backward_run<scalar_t, acc_t>(gyp, strides[1] / sizeof(scalar_t), xp, strides[2] / sizeof(scalar_t),
                                              gxp, strides[0] / sizeof(scalar_t), len, P, dcv.data(), dd,
                                              boundary_scale, grad_coeffs ? acc_v.data() : nullptr);
              }
            }
          };
          iter.serial_for_each(loop, {c * kChunk, std::min(numel, (c + 1) * kChunk)});
          if (grad_coeffs) {
            double* out = coeff_partials.data() + c * (degree + 1);
            for (int k = 0; k <= degree; ++k) {
              acc_t lanes[Vec::size()];
              acc_v[k].store(lanes);
              double s = 0;
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
