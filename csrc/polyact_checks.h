// Argument checks shared by the CPU and CUDA entry points: every message names
// the argument at fault, before any kernel is launched.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string_view>

#include "polyact.h"

namespace pnn {

inline Basis parse_basis(std::string_view basis) {
  if (basis == "monomial") return Basis::kMonomial;
  if (basis == "chebyshev") return Basis::kChebyshev;
  TORCH_CHECK(false, "pnn_ext: basis must be 'monomial' or 'chebyshev', got '", basis, "'");
}

inline BoundaryForm parse_boundary_form(std::string_view form) {
  if (form == "exp") return BoundaryForm::kExp;
  if (form == "quadratic") return BoundaryForm::kQuadratic;
  TORCH_CHECK(false, "pnn_ext: boundary_form must be 'exp' or 'quadratic', got '", form, "'");
}

// float64 inputs compute in float64, every other floating type in float32.
inline at::ScalarType accumulate_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_forward_args(const at::Tensor& x, const at::Tensor& coeffs, double bound, double alpha) {
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
              "pnn_ext: x must be float16, bfloat16, float32 or float64, got ", t);
  TORCH_CHECK(coeffs.dim() == 1, "pnn_ext: coeffs must be 1-D (degree + 1 entries), got shape ", coeffs.sizes());
  TORCH_CHECK(coeffs.numel() >= 2, "pnn_ext: degree must be >= 1, i.e. coeffs needs >= 2 entries, got ",
              coeffs.numel());
  TORCH_CHECK(coeffs.numel() - 1 <= kMaxDegree, "pnn_ext: degree must be <= ", kMaxDegree, ", got ",
              coeffs.numel() - 1);
  const auto acc = accumulate_type(x.scalar_type());
  TORCH_CHECK(coeffs.scalar_type() == acc, "pnn_ext: coeffs must be ", acc, " for x of dtype ", x.scalar_type(),
              ", got ", coeffs.scalar_type());
  TORCH_CHECK(coeffs.device() == x.device(), "pnn_ext: coeffs must be on x's device ", x.device(), ", got ",
              coeffs.device());
  TORCH_CHECK(std::isfinite(bound) && bound > 0, "pnn_ext: bound (B) must be finite and > 0, got ", bound);
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, "pnn_ext: alpha must be finite and > 0, got ", alpha);
}

inline void check_backward_args(const at::Tensor& grad_y, const at::Tensor& grad_stats, const at::Tensor& x) {
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "pnn_ext: grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), "pnn_ext: grad_y must have x's dtype ", x.scalar_type(),
              ", got ", grad_y.scalar_type());
  TORCH_CHECK(grad_y.device() == x.device(), "pnn_ext: grad_y must be on x's device");
  TORCH_CHECK(grad_stats.dim() == 1 && grad_stats.numel() == 3, "pnn_ext: grad_stats must have shape (3,), got ",
              grad_stats.sizes());
  TORCH_CHECK(grad_stats.device() == x.device(), "pnn_ext: grad_stats must be on x's device");
}

}  // namespace pnn
