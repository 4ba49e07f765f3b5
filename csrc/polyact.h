// Shared math of the polynomial activation: usable from host C++ (scalars and
// at::vec::Vectorized) and from CUDA device code.
//
// Notation. The activation is y = p(t) with t = x / B, where
//   monomial basis:  p(t) = sum_k c_k t^k         (Horner's rule)
//   Chebyshev basis: p(t) = sum_k c_k T_k(t)      (Clenshaw's recurrence)
// The boundary term of one layer with input x (N elements) is
//   L = mean_j f(|x_j| - alpha*B),  f(e) = 0                          e <= 0
//                                   f(e) = expm1(e)                   0 < e <= E
//                                   f(e) = expm1(E) + exp(E) (e - E)  e > E
// with E = kBoundaryExpCap. The cap makes f continuous and C^1, keeps the
// restoring gradient exp(E) > 0 far outside the range, and keeps every finite
// input's term finite (the linear part is summed in float64). Its derivative
//   dL/dx_j = sign(x_j) * exp(min(e_j, E)) * [e_j > 0] / N.
// The quadratic form (BoundaryForm::kQuadratic, the paper's suggested check)
// has f(e) = e^2 for e > 0 (squared and summed in float64, so it stays finite
// for every finite float32 input) and dL/dx_j = sign(x_j) * 2 e_j [e_j > 0] / N.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PNN_HD __host__ __device__ __forceinline__
#else
#define PNN_HD inline __attribute__((always_inline))
#endif

namespace pnn {

enum class Basis : int { kMonomial = 0, kChebyshev = 1 };

// Shape f of the boundary term (see above); the exponential one is the paper's.
enum class BoundaryForm : int { kExp = 0, kQuadratic = 1 };

// Exponent cap of the boundary term (see above). exp(30) ~ 1.07e13: finite in
// float32 even after the x1000 of the paper's lambda.
constexpr double kBoundaryExpCap = 30.0;

// Largest supported degree (coefficient arrays live in registers / shared memory).
constexpr int kMaxDegree = 128;

// Fused multiply-add for scalars; the CPU kernel adds an overload for
// at::vec::Vectorized before instantiating the templates below.
template <typename T>
PNN_HD T madd(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

// p(t) for N independent arguments t[0..N) at once, coefficients c[0..d]
// (already broadcast to V). N > 1 interleaves N independent recurrences, so a
// CPU core overlaps their multiply-add latencies (one chain alone is
// latency-bound); device code uses N = 1.
// The benchmarks count its vector operations in bench/cases.py's op_counts (GFLOP/s and
// the roofline's fractions): a change to the arithmetic here changes op_counts too.
template <int N, typename V>
PNN_HD void poly_value_n(const V* c, int d, const V* t, Basis basis, V* p) {
  if (basis == Basis::kMonomial) {
    V acc[N];
    for (int u = 0; u < N; ++u) acc[u] = c[d];
    for (int k = d - 1; k >= 0; --k)
      for (int u = 0; u < N; ++u) acc[u] = madd(acc[u], t[u], c[k]);
    for (int u = 0; u < N; ++u) p[u] = acc[u];
    return;
  }
  if (d == 0) {  // the final step below assumes b_1 = c_1 exists
    for (int u = 0; u < N; ++u) p[u] = c[0];
    return;
  }
  // Clenshaw: b_k = 2t b_{k+1} - b_{k+2} + c_k, p = t b_1 - b_2 + c_0.
  V two_t[N], b1[N], b2[N];
  for (int u = 0; u < N; ++u) {
    two_t[u] = t[u] + t[u];
    b1[u] = c[d];
    b2[u] = V(0);
  }
  // Two steps per iteration: b_k overwrites b_{k+2} and b_{k-1} overwrites b_{k+1},
  // so the pair swaps roles instead of being copied (the copies cost as many
  // instructions as the arithmetic). Invariant at the loop head: b1 = b_{k+1}, b2 = b_{k+2}.
  int k = d - 1;
  for (; k >= 2; k -= 2) {
    for (int u = 0; u < N; ++u) b2[u] = madd(two_t[u], b1[u], c[k] - b2[u]);
    for (int u = 0; u < N; ++u) b1[u] = madd(two_t[u], b2[u], c[k - 1] - b1[u]);
  }
  if (k == 1) {
    for (int u = 0; u < N; ++u) {
      const V b = madd(two_t[u], b1[u], c[1] - b2[u]);
      b2[u] = b1[u];
      b1[u] = b;
    }
  }
  for (int u = 0; u < N; ++u) p[u] = madd(t[u], b1[u], c[0] - b2[u]);
}

template <typename V>
PNN_HD V poly_value(const V* c, int d, V t, Basis basis) {
  V p;
  poly_value_n<1>(c, d, &t, basis, &p);
  return p;
}

// Basis functions: phi_0 = 1, phi_1 = t, then phi_{k+1} = t phi_k (monomial)
// or 2t phi_k - phi_{k-1} (Chebyshev). Used for coefficient gradients
// dL/dc_k = sum_j g_j phi_k(t_j) (accumulate_basis in polyact_common.h).
template <typename V>
PNN_HD V next_basis(V t, V two_t, V phi_k, V phi_km1, Basis basis) {
  return basis == Basis::kMonomial ? phi_k * t : madd(two_t, phi_k, V(0) - phi_km1);
}

// Overflow of a finite input. Horner never produces NaN for finite t, but
// Clenshaw can form inf - inf when |t|^d overflows. Where that happens the true
// value is +-inf with the sign of the leading term lead * t^m (m = index of the
// highest non-zero coefficient; the leading coefficient of T_m is 2^(m-1) > 0).
template <typename A>
PNN_HD A overflow_value(A t, A lead, int m) {
  if (lead != lead) return lead;  // a NaN coefficient (see leading_index): p is NaN, not an overflow
  bool neg = (lead < A(0)) != ((m & 1) && t < A(0));
  return neg ? -INFINITY : INFINITY;
}

// Boundary term of one element whose excess e = |x| - alpha*B is > 0, as two
// float64 parts: the one summed as it is, and the linear excess max(e - E, 0) of
// the exponential form (summed separately, scaled by exp(E) once at the end).
// exp: expm1(min(e, E)) evaluated in A; quadratic: e^2 squared in float64.
template <typename A>
PNN_HD void boundary_term(A e, BoundaryForm form, double& sum_part, double& linear_part) {
  if (form == BoundaryForm::kQuadratic) {
    const double ed = static_cast<double>(e);
    sum_part = ed * ed;
    linear_part = 0;
    return;
  }
  const A cap = A(kBoundaryExpCap);
  A ec = e < cap ? e : cap;
#if defined(__CUDA_ARCH__)
  sum_part = expm1(ec);
#else
  sum_part = std::expm1(ec);
#endif
  linear_part = e - ec;
}

// Largest finite value of A (float or double), usable in device code.
template <typename A>
PNN_HD A max_finite() {
  return A(sizeof(A) == sizeof(float) ? 3.4028234663852886e38 : 1.7976931348623157e308);
}

// d f(e) / d|x| for e > 0: exp(min(e, E)), or 2e for the quadratic form. 2e is
// held at A's largest finite value, so that an infinite x gets the polynomial
// part's +-inf as its gradient, not inf - inf = NaN (as the capped exp slope does).
template <typename A>
PNN_HD A boundary_slope(A e, BoundaryForm form) {
  const A cap = A(kBoundaryExpCap);
#if defined(__CUDA_ARCH__)
  if (form == BoundaryForm::kQuadratic) return fmin(e + e, max_finite<A>());
  return exp(e < cap ? e : cap);
#else
  if (form == BoundaryForm::kQuadratic) return std::fmin(e + e, max_finite<A>());
  return std::exp(e < cap ? e : cap);
#endif
}

// Index of the highest non-zero coefficient (0 if all are zero), or of a NaN
// coefficient if there is one: then p is NaN everywhere and overflow_value keeps it so.
template <typename A>
PNN_HD int leading_index(const A* c, int d) {
  for (int k = 0; k <= d; ++k)
    if (c[k] != c[k]) return k;
  int m = d;
  while (m > 0 && c[m] == A(0)) --m;
  return m;
}

}  // namespace pnn
