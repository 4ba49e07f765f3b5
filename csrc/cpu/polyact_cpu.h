// CPU kernels, one copy per instruction set (see polyact_cpu_impl.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "../polyact.h"

namespace pnn {
namespace cpu {

// Entry points of one instruction-set build; polyact.cpp picks one at run time.
#define PNN_DECLARE_CPU_KERNELS(CAP)                                                                           \
  namespace CAP {                                                                                              \
  void forward(const at::Tensor& x, const at::Tensor& coeffs, double bound, double alpha, Basis basis,         \
               BoundaryForm form, at::Tensor& y, at::Tensor& stats);                                           \
  void backward(const at::Tensor& grad_y, double grad_boundary, const at::Tensor& x, const at::Tensor& coeffs, \
                double bound, double alpha, Basis basis, BoundaryForm form, at::Tensor& grad_x,                \
                at::Tensor* grad_coeffs);                                                                      \
  }

PNN_DECLARE_CPU_KERNELS(DEFAULT)
PNN_DECLARE_CPU_KERNELS(AVX2)
PNN_DECLARE_CPU_KERNELS(AVX512)
#undef PNN_DECLARE_CPU_KERNELS

// The vector operations whose peak rate roofline_impl.h measures (bench/roofline.py).
enum class ArithKind { kFma, kAdd, kClenshaw };

// FLOP/s of `threads` threads of one instruction-set build (roofline_impl.h).
#define PNN_DECLARE_ROOFLINE(CAP)                     \
  namespace CAP {                                     \
  double arith_peak(ArithKind kind, int64_t threads); \
  }

PNN_DECLARE_ROOFLINE(DEFAULT)
PNN_DECLARE_ROOFLINE(AVX2)
PNN_DECLARE_ROOFLINE(AVX512)
#undef PNN_DECLARE_ROOFLINE

}  // namespace cpu
}  // namespace pnn
