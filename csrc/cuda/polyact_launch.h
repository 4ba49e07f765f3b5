// The interface between the CUDA host code (polyact_cuda.cpp: ATen, checks,
// allocation, op registration; compiled by the host compiler) and the CUDA
// kernels (polyact_kernels.cuh; compiled by nvcc in polyact_kernels.cu, and by
// the host compiler under tests/cuda_emulation). Plain C++: no ATen, no device code.
//
// One call is planned, then launched:
//   plan = plan_forward(args, ...)       chooses the kernel variant and the grid
//   caller allocates plan.scratch_bytes  (per-block partial sums)
//   launch_forward(args, plan, ...)      runs the main kernel and its finalize kernel
#pragma once

#include <cstddef>
#include <cstdint>

#include "../polyact_common.h"

namespace pnn {
namespace cuda {

constexpr int kThreads = 256;  // threads per block of the main kernels
constexpr int kWarps = kThreads / 32;
constexpr int kFinalizeThreads = 256;

// Coefficients per block row of the coefficient-gradient backward: a compile-time
// bound so that the accumulators stay in registers. Degree <= 8 uses one row of
// 9; higher degrees rows of 25 (degree 24: one row; degree 128: six rows, each
// re-reading x and grad_y, a cost paid only with learnable coefficients).
constexpr int kSliceSmall = 9;
constexpr int kSliceLarge = 25;

// y = p(x / B) over n elements in memory order, and stats = [L, max|x|, frac > B].
template <typename scalar_t>
struct ForwardArgs {
  using acc_t = acc_type_t<scalar_t>;
  const scalar_t* x;
  scalar_t* y;
  int64_t n;
  PolyParams<acc_t> poly;    // poly.coeffs: device memory
  acc_t* stats;              // (3,)
  ForwardPartial* partials;  // scratch: one per block of the main kernel
};

// grad_x = grad_y * p'(x) + g_L/N * sign(x) f'(e) [e > 0] (polyact.h), and the
// coefficient gradients when grad_coeffs is set.
template <typename scalar_t>
struct BackwardArgs {
  using acc_t = acc_type_t<scalar_t>;
  const scalar_t* grad_y;  // in x's memory order, or one value (grad_y_broadcast)
  bool grad_y_broadcast;   // grad_y is a single value for every element (y.sum())
  const scalar_t* x;
  scalar_t* grad_x;
  int64_t n;  // > 0
  PolyParams<acc_t> poly;
  const acc_t* grad_stats;  // (3,) on the device; [0] is the incoming gradient of L
  acc_t* grad_coeffs;       // (degree + 1,), or nullptr for no coefficient gradients
  double* coeff_partials;   // scratch: blocks x (degree + 1), when grad_coeffs is set
};

// Which instantiation runs, on which grid.
struct LaunchPlan {
  int vec;               // consecutive elements per thread and step
  bool aligned;          // 16-byte vector loads/stores (all pointers aligned), else scalar ones
  int slice;             // coefficients per block row (0: no coefficient gradients)
  int blocks;            // grid.x
  int slices;            // grid.y: rows of coefficient slices (1 without coefficient gradients)
  size_t shared_bytes;   // dynamic shared memory of the main kernel
  size_t scratch_bytes;  // partial sums the caller allocates
};

#if !defined(PNN_CUDA_EMULATION)
}  // namespace cuda
}  // namespace pnn

#include <cuda_runtime_api.h>

namespace pnn {
namespace cuda {

// Defined in polyact_kernels.cu for float, double, c10::Half and c10::BFloat16.
// The plan sizes the grid from the occupancy API for the chosen kernel.
template <typename scalar_t>
LaunchPlan plan_forward(const ForwardArgs<scalar_t>& args);
template <typename scalar_t>
void launch_forward(const ForwardArgs<scalar_t>& args, const LaunchPlan& plan, cudaStream_t stream);
template <typename scalar_t>
LaunchPlan plan_backward(const BackwardArgs<scalar_t>& args);
template <typename scalar_t>
void launch_backward(const BackwardArgs<scalar_t>& args, const LaunchPlan& plan, cudaStream_t stream);
#endif

}  // namespace cuda
}  // namespace pnn
