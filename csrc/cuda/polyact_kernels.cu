// nvcc's part of the CUDA build: the kernels of polyact_kernels.cuh, launched on
// the GPU, for float, double, c10::Half and c10::BFloat16. Deliberately free of
// ATen headers (the host side lives in polyact_cuda.cpp), which keeps nvcc's work
// to the device code.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>
#include <utility>

#include "polyact_kernels.cuh"

namespace pnn {
namespace cuda {
namespace {

// Resident blocks of a kernel on the current device: occupancy (registers, shared
// memory, threads) x SMs, cached per kernel and device. Sized for the largest
// dynamic shared memory the kernel is launched with (the coefficients of degree
// kMaxDegree), so one figure serves every degree.
int resident_blocks_of(const void* kernel, int threads, size_t max_shared_bytes) {
  static std::mutex mutex;
  static std::unordered_map<const void*, int> cache[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device >= 64) return 1;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache[device].find(kernel);
  if (it != cache[device].end()) return it->second;
  int sms = 1, per_sm = 1;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, max_shared_bytes);
  const int blocks = (per_sm > 0 ? per_sm : 1) * sms;
  cache[device].emplace(kernel, blocks);
  return blocks;
}

struct GpuBackend {
  cudaStream_t stream;
  size_t max_shared_bytes;

  template <typename... A>
  int resident_blocks(void (*kernel)(A...), int threads, size_t) {
    return resident_blocks_of(reinterpret_cast<const void*>(kernel), threads, max_shared_bytes);
  }

  template <typename... A, typename... Args>
  void launch(void (*kernel)(A...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
    kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  }
};

}  // namespace

template <typename scalar_t>
LaunchPlan plan_forward(const ForwardArgs<scalar_t>& args) {
  GpuBackend backend{nullptr, forward_shared_bytes<acc_type_t<scalar_t>>(kMaxDegree)};
  return plan_forward_on(args, backend);
}

template <typename scalar_t>
void launch_forward(const ForwardArgs<scalar_t>& args, const LaunchPlan& plan, cudaStream_t stream) {
  GpuBackend backend{stream, 0};
  launch_forward_on(args, plan, backend);
}

template <typename scalar_t>
LaunchPlan plan_backward(const BackwardArgs<scalar_t>& args) {
  GpuBackend backend{nullptr, backward_shared_bytes<acc_type_t<scalar_t>>(kMaxDegree, kSliceLarge)};
  return plan_backward_on(args, backend);
}

template <typename scalar_t>
void launch_backward(const BackwardArgs<scalar_t>& args, const LaunchPlan& plan, cudaStream_t stream) {
  GpuBackend backend{stream, 0};
  launch_backward_on(args, plan, backend);
}

#define PNN_INSTANTIATE(T)                                                                 \
  template LaunchPlan plan_forward<T>(const ForwardArgs<T>&);                              \
  template void launch_forward<T>(const ForwardArgs<T>&, const LaunchPlan&, cudaStream_t); \
  template LaunchPlan plan_backward<T>(const BackwardArgs<T>&);                            \
  template void launch_backward<T>(const BackwardArgs<T>&, const LaunchPlan&, cudaStream_t);
PNN_INSTANTIATE(float)
PNN_INSTANTIATE(double)
PNN_INSTANTIATE(c10::Half)
PNN_INSTANTIATE(c10::BFloat16)
#undef PNN_INSTANTIATE

}  // namespace cuda
}  // namespace pnn
