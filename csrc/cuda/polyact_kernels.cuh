// CUDA kernels of the polynomial activation: device code and the launch plan,
// nothing else (math in ../polyact.h, shared plumbing in ../polyact_common.h, the
// call interface in polyact_launch.h). No ATen and no CUDA runtime calls, so the
// same file is compiled by nvcc (polyact_kernels.cu) and, unchanged, by the host
// compiler under the CUDA emulation of tests/cuda_emulation, which runs these
// kernels on the CPU under AddressSanitizer and UBSan. Just over 400 lines: the
// kernels and the plan that sizes their launches share templates and constants.
//
// Forward:  one grid-stride pass over x in memory order, `vec` consecutive
//           elements per thread and step (one 16-byte load when every pointer is
//           aligned, else `vec` scalar loads): y = p(x/B); boundary sums and range
//           statistics per thread, reduced per block (warp shuffles, then the warps
//           in order) into one ForwardPartial per block. A finalize kernel of one
//           block merges the partials with a fixed tree and writes stats.
// Backward: one pass over x and grad_y (or grad_y's one broadcast value):
//             grad_x = grad_y * p'(x) + g_L/N * sign(x) f'(e) [e > 0], f' = exp(min(e, E)) or 2e
//           with g_L read from device memory (no host sync). With coefficient
//           gradients dL/dc_k = sum_j grad_y_j phi_k(t_j), grid row y accumulates
//           coefficients [y*SLICE, (y+1)*SLICE) in registers (row 0 also writes
//           grad_x), each block reduces them, and a finalize kernel (one block per
//           coefficient) adds the block partials with a fixed tree.
// No floating-point atomics anywhere: for a given grid, results are bit-identical
// from run to run.
#pragma once

#include "polyact_launch.h"

#if defined(PNN_CUDA_EMULATION)
#define PNN_DYNAMIC_SHARED(T, name) T* name = ::cuda_emulation::dynamic_shared<T>()
#else
#define PNN_DYNAMIC_SHARED(T, name)                                    \
  extern __shared__ __align__(16) unsigned char pnn_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(pnn_dynamic_shared_)
#endif

namespace pnn {
namespace cuda {

// Elements per thread and step: one vector access when every pointer is 16-byte
// aligned (4 elements: 16 bytes of float, 8 of half/bfloat16, whose 8-wide
// backward took 100 registers on sm_90; 2 of double), 4 scalar accesses otherwise
// (a view such as x[1:] is dense but not aligned).
template <typename scalar_t>
constexpr int kAlignedVec = sizeof(scalar_t) >= 8 ? 2 : 4;
constexpr int kUnalignedVec = 4;
// The coefficient-gradient backward keeps SLICE accumulators per element in
// registers: one element per step, so they are not multiplied by the vector width.
constexpr int kCoeffVec = 1;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements [i*N, i*N + N) of p.
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void load_n(const T* __restrict__ p, int64_t i, T (&out)[N]) {
  if constexpr (ALIGNED) {
    const Pack<T, N> v = reinterpret_cast<const Pack<T, N>*>(p)[i];
#pragma unroll
    for (int l = 0; l < N; ++l) out[l] = v.v[l];
  } else {
#pragma unroll
    for (int l = 0; l < N; ++l) out[l] = p[i * N + l];
  }
}

template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void store_n(T* __restrict__ p, int64_t i, const T (&in)[N]) {
  if constexpr (ALIGNED) {
    Pack<T, N> v;
#pragma unroll
    for (int l = 0; l < N; ++l) v.v[l] = in[l];
    reinterpret_cast<Pack<T, N>*>(p)[i] = v;
  } else {
#pragma unroll
    for (int l = 0; l < N; ++l) p[i * N + l] = in[l];
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int off = 16; off > 0; off >>= 1) v = nan_max(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

// Dynamic shared memory of the main kernels: the coefficients, then the
// per-warp reduction slots.
template <typename acc_t>
PNN_HD size_t coeff_shared_bytes(int degree) {
  return (static_cast<size_t>(degree + 1) * sizeof(acc_t) + 15) / 16 * 16;
}
template <typename acc_t>
PNN_HD size_t forward_shared_bytes(int degree) {
  return coeff_shared_bytes<acc_t>(degree) + kWarps * sizeof(ForwardPartial);
}
template <typename acc_t>
PNN_HD size_t backward_shared_bytes(int degree, int slice) {
  return coeff_shared_bytes<acc_t>(degree) + static_cast<size_t>(kWarps) * slice * sizeof(double);
}

template <typename acc_t>
__device__ __forceinline__ void load_coeffs(const PolyParams<acc_t>& P, acc_t* c) {
  for (int k = threadIdx.x; k <= P.degree; k += blockDim.x) c[k] = P.coeffs[k];
  __syncthreads();
}

// ---------------------------------------------------------------- forward

template <typename scalar_t, int VEC, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardArgs<scalar_t> a) {
  using acc_t = acc_type_t<scalar_t>;
  PNN_DYNAMIC_SHARED(unsigned char, smem);
  acc_t* c = reinterpret_cast<acc_t*>(smem);
  ForwardPartial* red = reinterpret_cast<ForwardPartial*>(smem + coeff_shared_bytes<acc_t>(a.poly.degree));
  const PolyParams<acc_t>& P = a.poly;
  load_coeffs(P, c);
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
      double ex, lin;
      boundary_term(e, P.form, ex, lin);
      expm1_sum += ex;
      linear_sum += lin;
    }
    return p;
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = a.n / VEC;
  for (int64_t i = first; i < n_vec; i += stride) {
    scalar_t in[VEC], out[VEC];
    load_n<VEC, ALIGNED>(a.x, i, in);
    acc_t xv[VEC], t[VEC], p[VEC];
#pragma unroll
    for (int l = 0; l < VEC; ++l) {
      xv[l] = static_cast<acc_t>(in[l]);
      t[l] = xv[l] * P.inv_bound;
    }
    // VEC independent recurrences: each coefficient read from shared memory serves VEC elements.
    poly_value_n<VEC>(c, P.degree, t, P.basis, p);
#pragma unroll
    for (int l = 0; l < VEC; ++l) out[l] = static_cast<scalar_t>(finish(xv[l], t[l], p[l]));
    store_n<VEC, ALIGNED>(a.y, i, out);
  }
  for (int64_t i = n_vec * VEC + first; i < a.n; i += stride) {
    const acc_t xv = static_cast<acc_t>(a.x[i]);
    const acc_t t = xv * P.inv_bound;
    a.y[i] = static_cast<scalar_t>(finish(xv, t, poly_value(c, P.degree, t, P.basis)));
  }

  // Block reduction: warps by shuffles (a fixed tree), then thread 0 over the warps in order.
  ForwardPartial part{warp_sum(expm1_sum), warp_sum(linear_sum), warp_max(saw_nan ? NAN : static_cast<double>(max_abs)),
                      warp_sum(static_cast<double>(count))};
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) red[warp] = part;
  __syncthreads();
  if (threadIdx.x == 0) {
    ForwardPartial total = red[0];
    for (int w = 1; w < kWarps; ++w) total.merge(red[w]);
    a.partials[blockIdx.x] = total;
  }
}

// One block of kFinalizeThreads (a power of two): each thread merges the partials
// b = tid, tid + kFinalizeThreads, ... in order, then a fixed tree over the threads.
template <typename scalar_t>
__global__ void __launch_bounds__(kFinalizeThreads) forward_finalize_kernel(ForwardArgs<scalar_t> a, int blocks) {
  PNN_DYNAMIC_SHARED(ForwardPartial, red);
  ForwardPartial mine = ForwardPartial::zero();
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) mine.merge(a.partials[b]);
  red[threadIdx.x] = mine;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x].merge(red[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) red[0].finalize(a.n, a.stats);
}

// ---------------------------------------------------------------- backward

// SLICE: coefficients per block row (0: none). FORM: a template parameter (a run-time branch spilled: sm_90, f64).
template <typename scalar_t, int VEC, bool ALIGNED, int SLICE, BoundaryForm FORM>
__global__ void __launch_bounds__(kThreads) backward_kernel(BackwardArgs<scalar_t> a) {
  using acc_t = acc_type_t<scalar_t>;
  PNN_DYNAMIC_SHARED(unsigned char, smem);
  acc_t* c = reinterpret_cast<acc_t*>(smem);
  const PolyParams<acc_t>& P = a.poly;
  const int d = P.degree;
  load_coeffs(P, c);
  const int lead = leading_index(c, d);
  const int dlead = lead > 0 ? lead - 1 : 0;
  const acc_t lead_value = c[lead];
  // dp/dx = p'(t) / B by one recurrence of degree dd over the derivative's coefficients
  // (1/B folded in), computed once per block in place of c (accumulate_basis needs no c).
  __syncthreads();  // every thread has read c[lead]
  if (threadIdx.x == 0) derivative_coeffs(c, d, P.basis, 1.0 / static_cast<double>(P.bound), c + 1);
  const int dd = d - 1;  // d >= 1 (check_forward_args)
  __syncthreads();
  const acc_t* dc = c + 1;
  // g_L / N, read on the device: the host never waits for the loss.
  const acc_t boundary_scale = static_cast<acc_t>(static_cast<double>(a.grad_stats[0]) / static_cast<double>(a.n));
  const acc_t g_broadcast = a.grad_y_broadcast ? static_cast<acc_t>(a.grad_y[0]) : acc_t(0);
  const bool writes_grad_x = blockIdx.y == 0;  // rows > 0 only add coefficient gradients
  const int k0 = static_cast<int>(blockIdx.y) * SLICE;

  constexpr int kAcc = SLICE > 0 ? SLICE : 1;
  acc_t cacc[kAcc];
#pragma unroll
  for (int j = 0; j < kAcc; ++j) cacc[j] = 0;

  // grad_x of one element whose dp/dx is known.
  auto grad_x_of = [&](acc_t xv, acc_t g, acc_t t, acc_t dp) -> acc_t {
    if (isnan(dp) && !isnan(xv)) dp = overflow_value(t, lead_value, dlead);
    acc_t out = g == acc_t(0) ? acc_t(0) : g * dp;
    const acc_t e = fabs(xv) - P.threshold;
    if (e > acc_t(0) && boundary_scale != acc_t(0)) {
      const acc_t s = boundary_scale * boundary_slope(e, FORM);
      out += xv < acc_t(0) ? -s : s;
    }
    return out;
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = a.n / VEC;
  for (int64_t i = first; i < n_vec; i += stride) {
    scalar_t xin[VEC];
    load_n<VEC, ALIGNED>(a.x, i, xin);
    acc_t xv[VEC], g[VEC], t[VEC];
    if (a.grad_y_broadcast) {
#pragma unroll
      for (int l = 0; l < VEC; ++l) g[l] = g_broadcast;
    } else {
      scalar_t gin[VEC];
      load_n<VEC, ALIGNED>(a.grad_y, i, gin);
#pragma unroll
      for (int l = 0; l < VEC; ++l) g[l] = static_cast<acc_t>(gin[l]);
    }
#pragma unroll
    for (int l = 0; l < VEC; ++l) {
      xv[l] = static_cast<acc_t>(xin[l]);
      t[l] = xv[l] * P.inv_bound;
    }
    if (writes_grad_x) {
      acc_t dp[VEC];
      scalar_t out[VEC];
      poly_value_n<VEC>(dc, dd, t, P.basis, dp);
#pragma unroll
      for (int l = 0; l < VEC; ++l) out[l] = static_cast<scalar_t>(grad_x_of(xv[l], g[l], t[l], dp[l]));
      store_n<VEC, ALIGNED>(a.grad_x, i, out);
    }
    if constexpr (SLICE > 0) {
#pragma unroll
      for (int l = 0; l < VEC; ++l) accumulate_basis<SLICE>(g[l], t[l], d, k0, P.basis, cacc);
    }
  }
  for (int64_t i = n_vec * VEC + first; i < a.n; i += stride) {
    const acc_t xv = static_cast<acc_t>(a.x[i]);
    const acc_t g = a.grad_y_broadcast ? g_broadcast : static_cast<acc_t>(a.grad_y[i]);
    const acc_t t = xv * P.inv_bound;
    if (writes_grad_x) {
      a.grad_x[i] = static_cast<scalar_t>(grad_x_of(xv, g, t, poly_value(dc, dd, t, P.basis)));
    }
    if constexpr (SLICE > 0) accumulate_basis<SLICE>(g, t, d, k0, P.basis, cacc);
  }

  if constexpr (SLICE > 0) {
    // Block reduction of this row's coefficients: warps by shuffles, then the warps in order.
    double* red = reinterpret_cast<double*>(smem + coeff_shared_bytes<acc_t>(d));  // [kWarps][SLICE]
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int j = 0; j < SLICE; ++j) {
      const double s = warp_sum(static_cast<double>(cacc[j]));
      if (lane == 0) red[warp * SLICE + j] = s;
    }
    __syncthreads();
    const int j = threadIdx.x;
    if (j < SLICE && k0 + j <= d) {
      double s = 0;
      for (int w = 0; w < kWarps; ++w) s += red[w * SLICE + j];
      a.coeff_partials[static_cast<int64_t>(blockIdx.x) * (d + 1) + k0 + j] = s;
    }
  }
}

// One block per coefficient k: the block partials b = tid, tid + kFinalizeThreads, ...
// in order, then a fixed tree over the threads.
template <typename scalar_t>
__global__ void __launch_bounds__(kFinalizeThreads) coeff_grad_finalize_kernel(BackwardArgs<scalar_t> a, int blocks) {
  PNN_DYNAMIC_SHARED(double, red);
  const int k = blockIdx.x, stride = a.poly.degree + 1;
  double s = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) s += a.coeff_partials[static_cast<int64_t>(b) * stride + k];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) a.grad_coeffs[k] = static_cast<acc_type_t<scalar_t>>(red[0]);
}

// ---------------------------------------------------------------- plan and launch
//
// Backend: what differs between the GPU and the emulation.
//   int resident_blocks(kernel, threads, shared_bytes): blocks resident at once
//   void launch(kernel, dim3 grid, dim3 block, size_t shared_bytes, args...)

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename scalar_t>
using ForwardKernel = void (*)(ForwardArgs<scalar_t>);
template <typename scalar_t>
using BackwardKernel = void (*)(BackwardArgs<scalar_t>);

template <typename scalar_t>
ForwardKernel<scalar_t> forward_kernel_for(const LaunchPlan& p) {
  if (p.aligned) return forward_kernel<scalar_t, kAlignedVec<scalar_t>, true>;
  return forward_kernel<scalar_t, kUnalignedVec, false>;
}

template <typename scalar_t, BoundaryForm FORM>
BackwardKernel<scalar_t> backward_kernel_for(const LaunchPlan& p) {
  if (p.slice == kSliceSmall) return backward_kernel<scalar_t, kCoeffVec, false, kSliceSmall, FORM>;
  if (p.slice == kSliceLarge) return backward_kernel<scalar_t, kCoeffVec, false, kSliceLarge, FORM>;
  if (p.aligned) return backward_kernel<scalar_t, kAlignedVec<scalar_t>, true, 0, FORM>;
  return backward_kernel<scalar_t, kUnalignedVec, false, 0, FORM>;
}

template <typename scalar_t>
BackwardKernel<scalar_t> backward_kernel_for(const LaunchPlan& p, BoundaryForm f) {
  using F = BoundaryForm;
  return f == F::kQuadratic ? backward_kernel_for<scalar_t, F::kQuadratic>(p)
                            : backward_kernel_for<scalar_t, F::kExp>(p);
}

inline int grid_blocks(int64_t n, int vec, int resident) {
  const int64_t needed = (n / vec + kThreads - 1) / kThreads;
  return static_cast<int>(needed < 1 ? 1 : (needed < resident ? needed : resident));
}

template <typename scalar_t, typename Backend>
LaunchPlan plan_forward_on(const ForwardArgs<scalar_t>& a, Backend& backend) {
  using acc_t = acc_type_t<scalar_t>;
  LaunchPlan p{};
  p.aligned = aligned16(a.x) && aligned16(a.y);
  p.vec = p.aligned ? kAlignedVec<scalar_t> : kUnalignedVec;
  p.slice = 0;
  p.slices = 1;
  p.shared_bytes = forward_shared_bytes<acc_t>(a.poly.degree);
  p.blocks =
      grid_blocks(a.n, p.vec, backend.resident_blocks(forward_kernel_for<scalar_t>(p), kThreads, p.shared_bytes));
  p.scratch_bytes = static_cast<size_t>(p.blocks) * sizeof(ForwardPartial);
  return p;
}

template <typename scalar_t, typename Backend>
void launch_forward_on(const ForwardArgs<scalar_t>& a, const LaunchPlan& p, Backend& backend) {
  backend.launch(forward_kernel_for<scalar_t>(p), dim3(p.blocks), dim3(kThreads), p.shared_bytes, a);
  backend.launch(forward_finalize_kernel<scalar_t>, dim3(1), dim3(kFinalizeThreads),
                 kFinalizeThreads * sizeof(ForwardPartial), a, p.blocks);
}

template <typename scalar_t, typename Backend>
LaunchPlan plan_backward_on(const BackwardArgs<scalar_t>& a, Backend& backend) {
  using acc_t = acc_type_t<scalar_t>;
  const int d = a.poly.degree;
  LaunchPlan p{};
  p.slice = a.grad_coeffs == nullptr ? 0 : (d + 1 <= kSliceSmall ? kSliceSmall : kSliceLarge);
  p.slices = p.slice == 0 ? 1 : (d + p.slice) / p.slice;  // ceil((d + 1) / slice)
  p.aligned = p.slice == 0 && aligned16(a.x) && aligned16(a.grad_x) && (a.grad_y_broadcast || aligned16(a.grad_y));
  p.vec = p.slice > 0 ? kCoeffVec : (p.aligned ? kAlignedVec<scalar_t> : kUnalignedVec);
  p.shared_bytes = backward_shared_bytes<acc_t>(d, p.slice);
  p.blocks = grid_blocks(
      a.n, p.vec, backend.resident_blocks(backward_kernel_for<scalar_t>(p, a.poly.form), kThreads, p.shared_bytes));
  p.scratch_bytes = p.slice == 0 ? 0 : static_cast<size_t>(p.blocks) * (d + 1) * sizeof(double);
  return p;
}

template <typename scalar_t, typename Backend>
void launch_backward_on(const BackwardArgs<scalar_t>& a, const LaunchPlan& p, Backend& backend) {
  backend.launch(backward_kernel_for<scalar_t>(p, a.poly.form), dim3(p.blocks, p.slices), dim3(kThreads),
                 p.shared_bytes, a);
  if (p.slice > 0)
    backend.launch(coeff_grad_finalize_kernel<scalar_t>, dim3(a.poly.degree + 1), dim3(kFinalizeThreads),
                   kFinalizeThreads * sizeof(double), a, p.blocks);
}

}  // namespace cuda
}  // namespace pnn
