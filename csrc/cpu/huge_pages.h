// Outputs of the CPU ops backed by transparent huge pages.
//
// Why: a large output is fresh memory (glibc serves blocks of 32 MB and more by
// mmap and unmaps them on free), so the op's first write to it page-faults once
// per 4 KiB page. On a virtual machine each fault costs microseconds: filling a
// fresh 64 MB buffer was measured at 42 ms with 4 KiB pages and 9 ms with 2 MiB
// pages on the 2-core AMD EPYC of docs/speed.md, more than the polynomial itself.
// Marking the block MADV_HUGEPAGE before the first write makes each fault map and
// zero 2 MiB. It is what PyTorch's THP_MEM_ALLOC_ENABLE=1 does for every
// allocation; here it is done for the op's own outputs only, where the kernel
// allows it (THP mode "madvise" or "always"; a no-op under "never").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pnn {

// Below this size the block is likely reused heap memory whose pages are already
// mapped, and a huge page would be zeroed for a few small pages.
constexpr int64_t kHugePageMinBytes = 4 << 20;

// empty_like(x) (x's dtype, strides and memory format), with the 2 MiB-aligned
// interior of a large block advised to use huge pages. Advice only: an error
// (an old kernel, THP compiled out) leaves ordinary pages.
inline at::Tensor empty_output_like(const at::Tensor& x) {
  at::Tensor out = at::empty_like(x);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = static_cast<int64_t>(out.nbytes());
  if (bytes >= kHugePageMinBytes) {
    constexpr uintptr_t kHuge = uintptr_t(2) << 20;
    const auto begin = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return out;
}

}  // namespace pnn
