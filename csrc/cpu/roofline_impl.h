// The arithmetic limit of the machine for this instruction-set build: a calibrated
// micro-kernel that bench/roofline.py sets the fused kernels against.
//
// Included by each kernel_*.cpp after polyact_cpu_impl.h, so it is compiled with the
// same -m flags and CPU_CAPABILITY as the kernels and measures what their vector
// code can reach (AVX-512, AVX2 + FMA, or the generic build), not what the processor
// could do with another build. polyact.cpp exposes it as _C.arith_peak(threads, kind).
//
// Each kind runs many independent chains of one vector operation in registers, so that
// neither latency nor memory limits it, only the number and width of the execution ports:
//   fma       a <- a * m + k                      (2 flops per lane)
//   add       a <- a - k                          (1 flop per lane)
//   clenshaw  b <- 2t b1 + (k - b2)               (1 FMA + 1 sub: one Clenshaw step, 3 flops)
// Every chain stays finite and normal (a fixed point, a slow drift, a bounded Chebyshev
// recurrence with |t| < 1), and the chains are summed into a result the caller checks,
// so the compiler can delete nothing.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "polyact_cpu.h"

namespace pnn {
namespace cpu {
namespace CPU_CAPABILITY {

namespace roofline {

using Vec = at::vec::Vectorized<float>;

// Chains in flight. FMA and add: two ports at 4-5 cycles latency need 8-10; 12 leave a
// margin and still fit AVX2's 16 registers beside the two constants. Clenshaw: each chain
// holds b1 and b2, so AVX2 has room for 7 (8 spill to the stack, which measured 3x slower);
// measured on a Zen 3 EPYC, 4 / 6 / 7 chains reach 37 / 56 / 59 GFLOP/s: a step's latency is
// about 7 cycles there, so 7 chains are near the port limit. AVX-512 has 32 registers.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kChains = 16;
constexpr int kClenshawChains = 12;
#else
constexpr int kChains = 12;
constexpr int kClenshawChains = 7;
#endif

template <int N>
inline float lane_sum(const Vec (&v)[N]) {
  Vec s(0);
  for (int j = 0; j < N; ++j) s = s + v[j];
  float lanes[Vec::size()];
  s.store(lanes);
  float out = 0;
  for (int64_t l = 0; l < Vec::size(); ++l) out += lanes[l];
  return out;
}

inline float fma_chains(int64_t iters) {
  Vec a[kChains];
  for (int j = 0; j < kChains; ++j) a[j] = Vec(1.0f + 0.01f * j);
  const Vec m(0.999f), k(0.001f);  // fixed point k / (1 - m) = 1
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < kChains; ++j) a[j] = at::vec::fmadd(a[j], m, k);
  return lane_sum(a);
}

inline float add_chains(int64_t iters) {
  Vec a[kChains];
  for (int j = 0; j < kChains; ++j) a[j] = Vec(1.0f + 0.01f * j);
  const Vec k(1e-3f);  // drifts down until a - k rounds to a: finite, never subnormal
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < kChains; ++j) a[j] = a[j] - k;
  return lane_sum(a);
}

// Two Clenshaw steps per iteration, b1 and b2 taking turns as the newest term: the
// registers never move (a b2 <- b1 copy per step made the compiler spill).
inline float clenshaw_chains(int64_t iters) {
  Vec b1[kClenshawChains], b2[kClenshawChains];
  for (int j = 0; j < kClenshawChains; ++j) {
    b1[j] = Vec(0.01f * j);
    b2[j] = Vec(0);
  }
  // 2t = 0.6: b_k = 2t b_{k+1} - b_{k+2} + k sums Chebyshev U_n(0.3), bounded by 1 / sin^2.
  const Vec two_t(0.6f), k(1e-3f);
  for (int64_t i = 0; i < iters; ++i) {
    for (int j = 0; j < kClenshawChains; ++j) b2[j] = at::vec::fmadd(two_t, b1[j], k - b2[j]);
    for (int j = 0; j < kClenshawChains; ++j) b1[j] = at::vec::fmadd(two_t, b2[j], k - b1[j]);
  }
  return lane_sum(b1) + lane_sum(b2);
}

// Flops of one iteration of one thread's chains.
inline double flops_per_iter(ArithKind kind) {
  switch (kind) {
    case ArithKind::kFma: return 2.0 * kChains * Vec::size();
    case ArithKind::kAdd: return 1.0 * kChains * Vec::size();
    default: return 2 * 3.0 * kClenshawChains * Vec::size();  // two steps
  }
}

inline float run_chains(ArithKind kind, int64_t iters) {
  switch (kind) {
    case ArithKind::kFma: return fma_chains(iters);
    case ArithKind::kAdd: return add_chains(iters);
    default: return clenshaw_chains(iters);
  }
}

}  // namespace roofline

// FLOP/s of `threads` threads running `kind`'s chains at once (at::parallel_for, one task
// per thread): the iteration count doubles until one run takes 2 ms, then the best of 50
// runs. Short runs, many of them: on a shared machine some run between two preemptions
// (a scheduler slice is a few ms), where a few long runs would all include one.
double arith_peak(ArithKind kind, int64_t threads) {
  TORCH_CHECK(threads >= 1 && threads <= at::get_num_threads(),
              "arith_peak: threads must be in 1..torch.get_num_threads() = ", at::get_num_threads(), ", got ", threads);
  using clock = std::chrono::steady_clock;
  std::vector<float> sink(threads, 0.0f);
  auto run = [&](int64_t iters) {
    const auto t0 = clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sink[i] += roofline::run_chains(kind, iters);
    });
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  int64_t iters = 1 << 10;
  while (run(iters) < 0.002 && iters < (int64_t{1} << 40)) iters *= 2;
  double best = run(iters);
  for (int r = 1; r < 50; ++r) best = std::min(best, run(iters));
  for (float s : sink) TORCH_CHECK(std::isfinite(s), "arith_peak: a chain left the finite range (", s, ")");
  return roofline::flops_per_iter(kind) * static_cast<double>(iters) * static_cast<double>(threads) / best;
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace pnn
