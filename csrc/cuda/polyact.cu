// CUDA kernels of the polynomial activation (math in ../polyact.h).
//
// Forward:  one grid-stride pass over x (vectorized 16-byte loads when aligned):
//           y = p(x/B); per-thread boundary sums and range statistics, reduced per
//           block into a partials buffer; a one-thread kernel adds the partials in
//           block order and writes stats (deterministic: no floating-point atomics).
// Backward: one pass over x and grad_y:
//           grad_x = grad_y * p'(x) + g_L/N * sign(x) exp(min(e, E)) [e > 0]
//           with g_L read from device memory (no host sync). With coefficient
//           gradients, each thread accumulates sum_j grad_y_j phi_k(t_j) for k = 0..d
//           in registers, each block reduces them (warp shuffles, then warps in
//           order), and a second kernel adds the block partials in block order.
// x is processed in memory order: any dense layout (contiguous, channels_last,
// permuted) needs no copy; other strided inputs are copied to contiguous first.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../polyact.h"
#include "../polyact_checks.h"

namespace pnn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

struct ForwardPartial {
  double expm1_sum;
  double linear_sum;
  double max_abs;  // NaN if any input was NaN
  double count_outside;
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ double nan_max(double a, double b) {
  return (isnan(a) || isnan(b)) ? NAN : (a > b ? a : b);
}

__device__ __forceinline__ double warp_max(double v) {
  for (int off = 16; off > 0; off >>= 1) v = nan_max(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

template <typename acc_t>
struct DeviceParams {
  int degree;
  Basis basis;
  acc_t bound, inv_bound, threshold;
};

// Copy the coefficients into shared memory and find the leading one.
template <typename acc_t>
__device__ __forceinline__ void load_coeffs(const acc_t* __restrict__ coeffs, int degree, acc_t* smem) {
  for (int k = threadIdx.x; k <= degree; k += blockDim.x) smem[k] = coeffs[k];
  __syncthreads();
}

// ---------------------------------------------------------------- forward

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n,
               const acc_t* __restrict__ coeffs, DeviceParams<acc_t> P, ForwardPartial* __restrict__ partials) {
  __shared__ acc_t c[kMaxDegree + 1];
  load_coeffs(coeffs, P.degree, c);
  const int lead = leading_index(c, P.degree);

  double expm1_sum = 0, linear_sum = 0;  // float64, as on the CPU and in the reference
  acc_t max_abs = 0;
  unsigned long long count = 0;
  bool saw_nan = false;

  // Statistics, boundary term and overflow fix-up of one element whose p is known.
  auto finish = [&](acc_t xv, acc_t t, acc_t p) -> acc_t {
    if (isnan(p) && !isnan(xv)) p = overflow_value(t, c[lead], lead);
    const acc_t ax = fabs(xv);
    saw_nan |= isnan(ax);
    max_abs = ax > max_abs ? ax : max_abs;
    count += ax > P.bound;
    const acc_t e = ax - P.threshold;
    if (e > acc_t(0)) {
      acc_t ex, lin;
      boundary_term(e, ex, lin);
      expm1_sum += ex;
      linear_sum += lin;
    }
    return p;
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n_vec = n / VEC;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec; i += stride) {
    Pack<scalar_t, VEC> in = reinterpret_cast<const Pack<scalar_t, VEC>*>(x)[i];
    acc_t xv[VEC], t[VEC], p[VEC];
#pragma unroll
    for (int l = 0; l < VEC; ++l) {
      xv[l] = static_cast<acc_t>(in.v[l]);
      t[l] = xv[l] * P.inv_bound;
    }
    // VEC independent recurrences: each coefficient read from shared memory serves VEC elements.
    poly_value_n<VEC>(c, P.degree, t, P.basis, p);
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int l = 0; l < VEC; ++l) out.v[l] = static_cast<scalar_t>(finish(xv[l], t[l], p[l]));
    reinterpret_cast<Pack<scalar_t, VEC>*>(y)[i] = out;
  }
  for (int64_t i = n_vec * VEC + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    const acc_t t = xv * P.inv_bound;
    y[i] = static_cast<scalar_t>(finish(xv, t, poly_value(c, P.degree, t, P.basis)));
  }

  // Block reduction: warps by shuffles, then warp 0 over the warps in order.
  __shared__ double red[4][kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double s0 = warp_sum(expm1_sum);
  double s1 = warp_sum(linear_sum);
  double s2 = warp_max(saw_nan ? NAN : static_cast<double>(max_abs));
  double s3 = warp_sum(static_cast<double>(count));
  if (lane == 0) {
    red[0][warp] = s0; red[1][warp] = s1; red[2][warp] = s2; red[3][warp] = s3;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    ForwardPartial part{0, 0, 0, 0};
    for (int w = 0; w < kWarps; ++w) {
      part.expm1_sum += red[0][w];
      part.linear_sum += red[1][w];
      part.max_abs = nan_max(part.max_abs, red[2][w]);
      part.count_outside += red[3][w];
    }
    partials[blockIdx.x] = part;
  }
}

template <typename stat_t>
__global__ void forward_finalize_kernel(const ForwardPartial* __restrict__ partials, int blocks, int64_t n,
                                        stat_t* __restrict__ stats) {
  double expm1_sum = 0, linear_sum = 0, max_abs = 0, count = 0;
  for (int b = 0; b < blocks; ++b) {
    expm1_sum += partials[b].expm1_sum;
    linear_sum += partials[b].linear_sum;
    max_abs = nan_max(max_abs, partials[b].max_abs);
    count += partials[b].count_outside;
  }
  const double denom = n > 0 ? static_cast<double>(n) : 1.0;
  double boundary = (expm1_sum + exp(kBoundaryExpCap) * linear_sum) / denom;
  if (isnan(max_abs)) boundary = NAN;
  stats[0] = static_cast<stat_t>(boundary);
  stats[1] = static_cast<stat_t>(max_abs);
  stats[2] = static_cast<stat_t>(count / denom);
}

// ---------------------------------------------------------------- backward

// MAXD: compile-time bound on the degree for the register accumulators of the
// coefficient gradients (0: no coefficient gradients).
template <typename scalar_t, typename acc_t, int VEC, int MAXD>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x, scalar_t* __restrict__ gx,
                int64_t n, const acc_t* __restrict__ coeffs, DeviceParams<acc_t> P,
                const acc_t* __restrict__ grad_stats, double* __restrict__ coeff_partials) {
  __shared__ acc_t c[kMaxDegree + 1];
  load_coeffs(coeffs, P.degree, c);
  const int lead = leading_index(c, P.degree);
  const int dlead = lead > 0 ? lead - 1 : 0;
  // g_L / N, read on the device: the host never waits for the loss.
  const acc_t boundary_scale = static_cast<acc_t>(static_cast<double>(grad_stats[0]) / static_cast<double>(n));
  const int d = P.degree;

  acc_t cacc[MAXD + 1];
#pragma unroll
  for (int k = 0; k <= MAXD; ++k) cacc[k] = 0;

  // grad_x of one element whose dp/dt is known; accumulates the coefficient gradients.
  auto finish = [&](acc_t xv, acc_t g, acc_t t, acc_t dp) -> acc_t {
    if (isnan(dp) && !isnan(xv)) dp = overflow_value(t, c[lead], dlead);
    acc_t out = g == acc_t(0) ? acc_t(0) : g * dp * P.inv_bound;
    const acc_t e = fabs(xv) - P.threshold;
    if (e > acc_t(0) && boundary_scale != acc_t(0)) {
      const acc_t s = boundary_scale * boundary_slope(e);
      out += xv < acc_t(0) ? -s : s;
    }
    // Same sum as accumulate_basis() (polyact.h), unrolled to the compile-time bound
    // MAXD so that cacc stays in registers.
    if constexpr (MAXD > 0) {
      const acc_t two_t = t + t;
      acc_t phi_prev = 1, phi = t;
      cacc[0] += g;
      cacc[1] = madd(g, t, cacc[1]);
#pragma unroll
      for (int k = 2; k <= MAXD; ++k) {
        if (k <= d) {
          acc_t next = next_basis(t, two_t, phi, phi_prev, P.basis);
          phi_prev = phi;
          phi = next;
          cacc[k] = madd(g, phi, cacc[k]);
        }
      }
    }
    return out;
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n_vec = n / VEC;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec; i += stride) {
    Pack<scalar_t, VEC> xin = reinterpret_cast<const Pack<scalar_t, VEC>*>(x)[i];
    Pack<scalar_t, VEC> gin = reinterpret_cast<const Pack<scalar_t, VEC>*>(gy)[i];
    acc_t xv[VEC], t[VEC], p[VEC], dp[VEC];
#pragma unroll
    for (int l = 0; l < VEC; ++l) {
      xv[l] = static_cast<acc_t>(xin.v[l]);
      t[l] = xv[l] * P.inv_bound;
    }
    poly_value_deriv_n<VEC>(c, d, t, P.basis, p, dp);
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int l = 0; l < VEC; ++l)
      out.v[l] = static_cast<scalar_t>(finish(xv[l], static_cast<acc_t>(gin.v[l]), t[l], dp[l]));
    reinterpret_cast<Pack<scalar_t, VEC>*>(gx)[i] = out;
  }
  for (int64_t i = n_vec * VEC + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    const acc_t t = xv * P.inv_bound;
    acc_t p, dp;
    poly_value_deriv(c, d, t, P.basis, p, dp);
    gx[i] = static_cast<scalar_t>(finish(xv, static_cast<acc_t>(gy[i]), t, dp));
  }

  if constexpr (MAXD > 0) {
    __shared__ double red[kWarps][MAXD + 1];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int k = 0; k <= MAXD; ++k) {
      if (k <= d) {
        double s = warp_sum(static_cast<double>(cacc[k]));
        if (lane == 0) red[warp][k] = s;
      }
    }
    __syncthreads();
    for (int k = threadIdx.x; k <= d; k += blockDim.x) {
      double s = 0;
      for (int w = 0; w < kWarps; ++w) s += red[w][k];
      coeff_partials[static_cast<int64_t>(blockIdx.x) * (d + 1) + k] = s;
    }
  }
}

template <typename coeff_t>
__global__ void coeff_grad_finalize_kernel(const double* __restrict__ partials, int blocks, int degree,
                                           coeff_t* __restrict__ out) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k > degree) return;
  double s = 0;
  for (int b = 0; b < blocks; ++b) s += partials[static_cast<int64_t>(b) * (degree + 1) + k];
  out[k] = static_cast<coeff_t>(s);
}

// ---------------------------------------------------------------- host side

int grid_size(int64_t n, int vec) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (n / vec + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(sms) * 8)));
}

// x in a layout we can walk in memory order (dense), else a contiguous copy.
at::Tensor dense_input(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

template <typename scalar_t>
int vector_width(std::initializer_list<const void*> ptrs) {
  constexpr int v = 16 / sizeof(scalar_t);
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return v;
}

template <typename acc_t>
DeviceParams<acc_t> device_params(int degree, Basis basis, double bound, double alpha) {
  DeviceParams<acc_t> P;
  P.degree = degree;
  P.basis = basis;
  P.bound = static_cast<acc_t>(bound);
  P.inv_bound = static_cast<acc_t>(1.0 / bound);
  P.threshold = static_cast<acc_t>(alpha * bound);
  return P;
}

std::tuple<at::Tensor, at::Tensor> poly_act_cuda(const at::Tensor& x_in, const at::Tensor& coeffs_in, double bound,
                                                 double alpha, c10::string_view basis_name) {
  check_forward_args(x_in, coeffs_in, bound, alpha);
  const Basis basis = parse_basis(basis_name);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_input(x_in);
  const at::Tensor coeffs = coeffs_in.contiguous();
  at::Tensor y = at::empty_like(x);  // same strides as the dense x
  at::Tensor stats = at::empty({3}, x.options().dtype(accumulate_type(x.scalar_type())));
  const int64_t n = x.numel();
  const int degree = static_cast<int>(coeffs.numel()) - 1;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_forward_cuda", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto P = device_params<acc_t>(degree, basis, bound, alpha);
    const int vec = vector_width<scalar_t>({x.const_data_ptr(), y.data_ptr()});
    const int blocks = grid_size(n, vec);
    at::Tensor partials = at::empty({blocks * static_cast<int64_t>(sizeof(ForwardPartial))}, x.options().dtype(at::kByte));
    auto* part = reinterpret_cast<ForwardPartial*>(partials.data_ptr());
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      forward_kernel<scalar_t, acc_t, V><<<blocks, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, coeffs.const_data_ptr<acc_t>(), P, part);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (vec > 1) launch(std::integral_constant<int, 16 / sizeof(scalar_t)>{});
    else launch(std::integral_constant<int, 1>{});
    forward_finalize_kernel<acc_t><<<1, 1, 0, stream>>>(part, blocks, n, stats.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, stats};
}

template <typename scalar_t, typename acc_t, int V>
void launch_backward(int maxd_bucket, int blocks, cudaStream_t stream, const scalar_t* gy, const scalar_t* x,
                     scalar_t* gx, int64_t n, const acc_t* coeffs, DeviceParams<acc_t> P, const acc_t* grad_stats,
                     double* coeff_partials) {
#define PNN_LAUNCH(MAXD)                                                                                   \
  backward_kernel<scalar_t, acc_t, V, MAXD><<<blocks, kThreads, 0, stream>>>(gy, x, gx, n, coeffs, P,      \
                                                                             grad_stats, coeff_partials); \
  break;
  switch (maxd_bucket) {
    case 0: PNN_LAUNCH(0)
    case 8: PNN_LAUNCH(8)
    case 24: PNN_LAUNCH(24)
    case 64: PNN_LAUNCH(64)
    default: PNN_LAUNCH(kMaxDegree)
  }
#undef PNN_LAUNCH
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> poly_act_backward_cuda(const at::Tensor& grad_y_in, const at::Tensor& grad_stats_in,
                                                          const at::Tensor& x_in, const at::Tensor& coeffs_in,
                                                          double bound, double alpha, c10::string_view basis_name,
                                                          bool coeffs_grad) {
  check_forward_args(x_in, coeffs_in, bound, alpha);
  check_backward_args(grad_y_in, grad_stats_in, x_in);
  const Basis basis = parse_basis(basis_name);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_input(x_in);
  // grad_y is walked in x's memory order: copied into x's strides only if they differ.
  at::Tensor grad_y = grad_y_in;
  if (grad_y_in.strides() != x.strides()) grad_y = at::empty_like(x).copy_(grad_y_in);
  const at::Tensor coeffs = coeffs_in.contiguous();
  const int64_t n = x.numel();
  const int degree = static_cast<int>(coeffs.numel()) - 1;
  at::Tensor grad_x = at::empty_like(x);
  if (n == 0) return {grad_x, at::zeros({coeffs_grad ? coeffs.numel() : 0}, coeffs.options())};
  // Every entry is written by the finalize kernel.
  at::Tensor grad_coeffs = at::empty({coeffs_grad ? coeffs.numel() : 0}, coeffs.options());
  const at::Tensor grad_stats = grad_stats_in.to(accumulate_type(x.scalar_type())).contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  const int bucket = !coeffs_grad ? 0 : degree <= 8 ? 8 : degree <= 24 ? 24 : degree <= 64 ? 64 : kMaxDegree;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_backward_cuda", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto P = device_params<acc_t>(degree, basis, bound, alpha);
    const int vec = vector_width<scalar_t>({x.const_data_ptr(), grad_y.const_data_ptr(), grad_x.data_ptr()});
    const int blocks = grid_size(n, vec);
    at::Tensor partials = coeffs_grad ? at::empty({blocks * static_cast<int64_t>(degree + 1)}, x.options().dtype(at::kDouble))
                                      : at::Tensor();
    double* part = coeffs_grad ? partials.data_ptr<double>() : nullptr;
    if (vec > 1) {
      launch_backward<scalar_t, acc_t, 16 / sizeof(scalar_t)>(bucket, blocks, stream, grad_y.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), n, coeffs.const_data_ptr<acc_t>(), P,
          grad_stats.const_data_ptr<acc_t>(), part);
    } else {
      launch_backward<scalar_t, acc_t, 1>(bucket, blocks, stream, grad_y.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), n, coeffs.const_data_ptr<acc_t>(), P,
          grad_stats.const_data_ptr<acc_t>(), part);
    }
    if (coeffs_grad) {
      coeff_grad_finalize_kernel<acc_t><<<1, kMaxDegree + 1, 0, stream>>>(part, blocks, degree,
                                                                        grad_coeffs.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_x, grad_coeffs};
}

}  // namespace
}  // namespace pnn

TORCH_LIBRARY_IMPL(pnn_ext, CUDA, m) {
  m.impl("poly_act", &pnn::poly_act_cuda);
  m.impl("poly_act_backward", &pnn::poly_act_backward_cuda);
}
