// What the CPU and the CUDA kernels share besides the math of polyact.h: the
// accumulation type, the one parameter struct every kernel takes, the partial
// sums of the forward pass and their finalisation into the three statistics,
// and the coefficient-gradient recurrence. Plain C++ (no ATen), usable from host
// code, from CUDA device code and from the CPU emulation of the CUDA kernels
// (tests/cuda_emulation).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "polyact.h"

namespace pnn {

// float64 inputs compute in float64; float32, float16 and bfloat16 in float32.
template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Parameters of one call, in the accumulation type.
template <typename acc_t>
struct PolyParams {
  const acc_t* coeffs;  // c_0..c_d in t = x / B (device memory for CUDA kernels)
  int degree;           // d
  Basis basis;
  acc_t bound;        // B
  acc_t inv_bound;    // 1 / B
  acc_t threshold;    // alpha * B, where the boundary term starts
  BoundaryForm form;  // shape of the boundary term
};

template <typename acc_t>
inline PolyParams<acc_t> make_poly_params(const acc_t* coeffs, int degree, Basis basis, double bound, double alpha,
                                          BoundaryForm form = BoundaryForm::kExp) {
  PolyParams<acc_t> P;
  P.coeffs = coeffs;
  P.degree = degree;
  P.basis = basis;
  P.bound = static_cast<acc_t>(bound);
  P.inv_bound = static_cast<acc_t>(1.0 / bound);
  P.threshold = static_cast<acc_t>(alpha * bound);
  P.form = form;
  return P;
}

// max that propagates NaN (std::max and fmax drop it).
PNN_HD double nan_max(double a, double b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }

// Partial sums of the forward pass over some elements (a CPU chunk, a CUDA
// block), all in float64 so that the boundary term of huge inputs stays finite.
struct ForwardPartial {
  double expm1_sum;      // sum of expm1(min(e, E)) (quadratic form: of e^2) over elements with e = |x| - alpha*B > 0
  double linear_sum;     // sum of max(e - E, 0): the linear continuation past the cap
  double max_abs;        // max |x|; NaN if any x is NaN
  double count_outside;  // number of |x| > B

  static PNN_HD ForwardPartial zero() { return ForwardPartial{0, 0, 0, 0}; }

  // Combined in a fixed order by the caller, so the result is deterministic.
  PNN_HD void merge(const ForwardPartial& o) {
    expm1_sum += o.expm1_sum;
    linear_sum += o.linear_sum;
    max_abs = nan_max(max_abs, o.max_abs);
    count_outside += o.count_outside;
  }

  // stats = [L, max|x|, fraction of |x| > B] over n elements (0 for an empty x).
  // NaN rule: a NaN input makes max|x| and L NaN.
  template <typename stat_t>
  PNN_HD void finalize(int64_t n, stat_t* stats) const {
    const double denom = n > 0 ? static_cast<double>(n) : 1.0;
#if defined(__CUDA_ARCH__)
    const double cap_scale = exp(kBoundaryExpCap);
#else
    const double cap_scale = std::exp(kBoundaryExpCap);
#endif
    double boundary = (expm1_sum + cap_scale * linear_sum) / denom;
    if (max_abs != max_abs) boundary = NAN;
    stats[0] = static_cast<stat_t>(boundary);
    stats[1] = static_cast<stat_t>(max_abs);
    stats[2] = static_cast<stat_t>(count_outside / denom);
  }
};

// Coefficients of dp/dx = p'(t) / B in the same basis, degree d - 1 (d >= 1, as
// check_forward_args requires): the backward then evaluates one recurrence of degree d - 1 instead of
// carrying p and p' together (Clenshaw: 1 FMA + 1 subtraction per step instead of
// 2 FMAs + 3 additions). Chebyshev: c'_{k-1} = c'_{k+1} + 2k c_k from k = d down
// to 1, then c'_0 / 2; monomial: c'_k = (k + 1) c_{k+1}. Computed in float64 and
// rounded once. `out` (d entries) may be c + 1: each step writes the slot it has
// just read, so the coefficients can be replaced in place, shifted by one.
template <typename A>
PNN_HD int derivative_coeffs(const A* c, int d, Basis basis, double inv_bound, A* out) {
  if (basis == Basis::kMonomial) {
    for (int k = 0; k < d; ++k) out[k] = static_cast<A>(static_cast<double>(k + 1) * c[k + 1] * inv_bound);
    return d - 1;
  }
  double next = 0, cur = 0;  // c'_{k+1}, c'_k
  for (int k = d; k >= 1; --k) {
    const double prev = next + 2.0 * k * static_cast<double>(c[k]);  // c'_{k-1}
    out[k - 1] = static_cast<A>((k == 1 ? 0.5 : 1.0) * prev * inv_bound);
    next = cur;
    cur = prev;
  }
  return d - 1;
}

// Coefficient gradients dL/dc_k = sum_j g_j phi_k(t_j), with phi_0 = 1, phi_1 = t,
// phi_{k+1} = t phi_k (monomial) or 2t phi_k - phi_{k-1} (Chebyshev). Adds
// g * phi_k(t) to acc[k - k0] for k in [k0, min(k0 + SLICE - 1, d)]: all of them
// when k0 = 0 and SLICE > d (the CPU); one slice of at most SLICE coefficients
// per CUDA block row (SLICE a compile-time constant, so acc stays in registers).
template <int SLICE, typename V>
PNN_HD void accumulate_basis(V g, V t, int d, int k0, Basis basis, V* acc) {
  const V two_t = t + t;
  // phi_{k-1}, phi_k from k = 0. phi_{-1} = t makes the recurrence give phi_1 = t in
  // both bases (t * 1, and 2t * 1 - t; indeed T_{-1} = T_1).
  V phi_prev = t, phi = V(1);
  for (int k = 0; k < k0; ++k) {  // advance to phi_{k0} without accumulating
    const V next = next_basis(t, two_t, phi, phi_prev, basis);
    phi_prev = phi;
    phi = next;
  }
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int j = 0; j < SLICE; ++j) {
    if (k0 + j > d) break;
    acc[j] = madd(g, phi, acc[j]);
    const V next = next_basis(t, two_t, phi, phi_prev, basis);
    phi_prev = phi;
    phi = next;
  }
}

}  // namespace pnn
