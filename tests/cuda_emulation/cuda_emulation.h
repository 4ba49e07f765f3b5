// cuda_emulation.h: a small emulation of the CUDA execution model for the host C++
// compiler, so that plain CUDA kernel code compiles with g++ and runs on a CPU under
// AddressSanitizer / UndefinedBehaviorSanitizer. Include it before the kernel header.
// (Over 400 lines: one header, so that a kernel test needs a single include; most of
// the length is the CUDA built-ins, one overload per type as CUDA declares them.)
//
// Model:
// * A launch runs its blocks one after another (x fastest, then y, then z). The threads
//   of one block run concurrently on real OS threads taken from a persistent pool, so
//   barriers, shuffles and shared memory are exercised by real concurrency.
// * __syncthreads() is a barrier over the block's threads that are still running: a
//   thread that returned from the kernel drops out of every barrier (arrive_and_drop).
// * Warp collectives exchange values through a per-warp buffer and a warp barrier, so
//   values really cross threads. A source lane that does not exist (outside the warp or
//   the segment, beyond a partial last warp) or has returned yields the caller's value.
// * Static __shared__ variables are function-local statics (one copy per kernel
//   instantiation; blocks run sequentially, so it is per block in effect, but it keeps
//   the previous block's values and starts zeroed). Dynamic shared memory is a fresh heap
//   allocation of exactly the requested size per block, filled with 0xA5 bytes, so ASan
//   reports any access past its end and uninitialised reads show up in results.
// * Launch-configuration errors (sm_80 limits) throw std::runtime_error before any thread
//   runs. Misuse inside a kernel (a partial-warp mask, dynamic_shared() outside a kernel)
//   and a block that does not finish within CUDA_EMULATION_TIMEOUT_S seconds (default
//   60: a deadlock) print "cuda_emulation: ..." to stderr and abort.
// * Kernels get host pointers; there is no device memory API, no streams, no
//   __CUDA_ARCH__ / __CUDACC__ (code takes its host paths), no `<<<>>>` syntax.
#pragma once
#ifndef PNN_CUDA_EMULATION
#define PNN_CUDA_EMULATION 1
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ------------------------------------------------------------------ CUDA keywords
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // see the header comment: one copy per kernel instantiation

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

constexpr int warpSize = 32;
// Per-thread built-ins, set by the worker thread before it calls the kernel.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};

// Device math resolves to the std overloads, so float stays float (as in CUDA).
using std::abs, std::ceil, std::copysign, std::cos, std::exp, std::exp2, std::expm1, std::fabs, std::floor, std::fma,
    std::fmax, std::fmin, std::isfinite, std::isinf, std::isnan, std::log, std::log1p, std::log2, std::pow, std::round,
    std::signbit, std::sin, std::sqrt, std::tanh, std::trunc;
// CUDA's global min/max accept mixed arithmetic types (usual arithmetic conversions).
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  const std::common_type_t<A, B> x = a, y = b;
  return y < x ? y : x;
}
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  const std::common_type_t<A, B> x = a, y = b;
  return x < y ? y : x;
}
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline int __popc(unsigned int v) { return std::popcount(v); }
inline int __popcll(unsigned long long v) { return std::popcount(v); }
inline int __clz(int v) { return std::countl_zero(static_cast<unsigned int>(v)); }
inline int __ffs(int v) { return v == 0 ? 0 : std::countr_zero(static_cast<unsigned int>(v)) + 1; }

namespace cuda_emulation {

// sm_80 limits.
constexpr unsigned long long kMaxThreadsPerBlock = 1024;
constexpr unsigned long long kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned long long kMaxGridDim[3] = {2147483647ull, 65535, 65535};
constexpr std::size_t kDefaultMaxDynamicShared = 48 * 1024;  // without opt-in
constexpr std::size_t kOptInMaxDynamicShared = 163 * 1024;   // cudaFuncAttributeMaxDynamicSharedMemorySize cap
constexpr unsigned char kSharedFill = 0xA5;

struct Stats {
  std::uint64_t launches = 0, blocks = 0, threads = 0;
};

namespace detail {

using KernelId = void (*)();

[[noreturn]] inline void die(const std::string& msg) {
  std::fprintf(stderr, "cuda_emulation: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

// Reusable barrier whose participants may leave for good (arrive_and_drop), written
// out because a block needs one per launch anyway and this one is easy to verify: the
// count is guarded by a mutex, waiters sleep on the phase counter (futex via
// atomic::wait). The mutex orders every arriver's writes before the last arriver's
// release store of the phase, which every waiter acquires.
class Barrier {
 public:
  explicit Barrier(int participants) : expected_(participants) {}
  void arrive_and_wait() { arrive(false); }
  void arrive_and_drop() { arrive(true); }

 private:
  void arrive(bool drop) {
    std::unique_lock lock(mutex_);
    const unsigned phase = phase_.load(std::memory_order_relaxed);
    drop ? --expected_ : ++arrived_;
    if (arrived_ > 0 && arrived_ == expected_) {
      arrived_ = 0;
      phase_.store(phase + 1, std::memory_order_release);
      lock.unlock();
      phase_.notify_all();
      return;
    }
    lock.unlock();
    if (!drop) phase_.wait(phase, std::memory_order_acquire);
  }
  std::mutex mutex_;
  int expected_, arrived_ = 0;
  std::atomic<unsigned> phase_{0};
};

struct Warp {
  explicit Warp(int n) : lanes(n), barrier(n) {}
  const int lanes;  // 32 except in a partial last warp
  Barrier barrier;
  // Exchange buffer, double-buffered by round parity: a lane writes round k+2 only after
  // the barrier of round k+1, which every reader of round k passed after reading, so
  // each round needs one barrier. seq tells which round a slot was written in: a lane
  // that has returned leaves a stale seq, and reads of it yield the caller's own value.
  struct Slot {
    std::uint64_t bits = 0, seq = 0;
  } slots[2][32];
};

struct Block {
  Block(dim3 grid_dim, dim3 block_dim, uint3 index, std::size_t dyn_bytes, const std::function<void()>& kernel_body)
      : grid(grid_dim),
        dim(block_dim),
        idx(index),
        threads(block_dim.x * block_dim.y * block_dim.z),
        barrier(static_cast<int>(threads)),
        body(&kernel_body),
        // Exactly the requested size (ASan redzones right after it), garbage-filled.
        dyn(::operator new(dyn_bytes, std::align_val_t{16})) {
    for (unsigned w = 0; w * 32 < threads; ++w)
      warps.push_back(std::make_unique<Warp>(std::min(32u, threads - w * 32)));
    std::memset(dyn, kSharedFill, dyn_bytes);
  }
  ~Block() { ::operator delete(dyn, std::align_val_t{16}); }  // (not copyable: Barrier holds a mutex)

  dim3 grid, dim;
  uint3 idx;
  unsigned threads;
  Barrier barrier;
  const std::function<void()>* body;
  void* dyn;
  std::vector<std::unique_ptr<Warp>> warps;
};

struct ThreadCtx {
  Block* block;
  Warp* warp;
  int lane;
  std::uint64_t seq;  // warp-exchange rounds done by this thread
};
inline thread_local ThreadCtx* tl_ctx = nullptr;

inline ThreadCtx& ctx(const char* what) {
  if (!tl_ctx) die(std::string(what) + " called outside an emulated kernel");
  return *tl_ctx;
}

inline std::chrono::seconds block_timeout() {
  static const long s = [] {
    const char* env = std::getenv("CUDA_EMULATION_TIMEOUT_S");
    return env && std::atol(env) > 0 ? std::atol(env) : 60L;
  }();
  return std::chrono::seconds(s);
}

// Persistent worker threads, created lazily up to the largest block seen. The host
// publishes (generation << 11 | thread count) in one 32-bit atomic word (a futex wait on
// its own address); workers whose index is below the count run one thread each.
class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }
  ~Pool() {
    stop_.store(true, std::memory_order_release);
    word_.fetch_add(kCountBits, std::memory_order_release);
    word_.notify_all();
    for (auto& w : workers_) w.join();
  }

  // Runs every thread of `block`; returns the first exception a thread threw.
  std::exception_ptr run(Block& block) {
    const unsigned n = block.threads;
    while (workers_.size() < n)
      workers_.emplace_back(&Pool::loop, this, static_cast<unsigned>(workers_.size()),
                            word_.load(std::memory_order_relaxed));
    block_ = &block;
    error_ = nullptr;
    pending_.store(n, std::memory_order_relaxed);
    const unsigned generation = (word_.load(std::memory_order_relaxed) / kCountBits + 1) * kCountBits;
    word_.store(generation | n, std::memory_order_release);
    word_.notify_all();
    std::unique_lock lock(mutex_);
    if (!done_.wait_for(lock, block_timeout(), [&] { return pending_.load(std::memory_order_acquire) == 0; }))
      die("block (" + std::to_string(block.idx.x) + "," + std::to_string(block.idx.y) + "," +
          std::to_string(block.idx.z) + ") did not finish within " + std::to_string(block_timeout().count()) + " s (" +
          std::to_string(pending_.load()) + " of " + std::to_string(n) +
          " threads still running): a __syncthreads() or warp collective that not every running thread "
          "of the block/warp reaches? (CUDA_EMULATION_TIMEOUT_S sets the limit)");
    return std::exchange(error_, nullptr);
  }

 private:
  Pool() = default;

  static constexpr unsigned kCountBits = 2048;  // > kMaxThreadsPerBlock

  void loop(unsigned index, unsigned seen) {
    for (;;) {
      word_.wait(seen, std::memory_order_acquire);
      seen = word_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_acquire)) return;
      if (index < seen % kCountBits) run_thread(index);
    }
  }

  void run_thread(unsigned i) {
    Block& b = *block_;
    ThreadCtx c{&b, b.warps[i / 32].get(), static_cast<int>(i % 32), 0};
    threadIdx = {i % b.dim.x, i / b.dim.x % b.dim.y, i / (b.dim.x * b.dim.y)};
    blockIdx = b.idx;
    blockDim = b.dim;
    gridDim = b.grid;
    tl_ctx = &c;
    try {
      (*b.body)();
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    tl_ctx = nullptr;
    // A returned thread no longer takes part in barriers, so the others do not wait for it.
    c.warp->barrier.arrive_and_drop();
    b.barrier.arrive_and_drop();
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::atomic<unsigned> word_{0};
  std::atomic<bool> stop_{false};
  std::atomic<unsigned> pending_{0};
  Block* block_ = nullptr;
  std::mutex mutex_;
  std::condition_variable done_;
  std::exception_ptr error_;
};

struct State {
  std::mutex mutex;  // serialises launches and guards the limits
  std::size_t max_dynamic_shared = kDefaultMaxDynamicShared;
  std::map<KernelId, std::size_t> kernel_max_dynamic_shared;
  Stats stats;
};
inline State& state() {
  static State s;
  return s;
}

inline void check_config(KernelId kernel, dim3 grid, dim3 block, std::size_t dyn_bytes) {
  auto fail = [](const std::string& why) {
    throw std::runtime_error("cuda_emulation::launch: invalid configuration (cudaErrorInvalidConfiguration): " + why);
  };
  auto str = [](dim3 d) {
    return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
  };
  const unsigned long long b[3] = {block.x, block.y, block.z}, g[3] = {grid.x, grid.y, grid.z};
  const char* axis = "xyz";
  if (!(b[0] && b[1] && b[2] && g[0] && g[1] && g[2])) fail("zero-sized grid " + str(grid) + " or block " + str(block));
  if (b[0] * b[1] * b[2] > kMaxThreadsPerBlock)
    fail("block " + str(block) + " has " + std::to_string(b[0] * b[1] * b[2]) + " threads, more than " +
         std::to_string(kMaxThreadsPerBlock));
  for (int a = 0; a < 3; ++a) {
    if (b[a] > kMaxBlockDim[a])
      fail(std::string("block.") + axis[a] + " = " + std::to_string(b[a]) + " exceeds " +
           std::to_string(kMaxBlockDim[a]));
    if (g[a] > kMaxGridDim[a])
      fail(std::string("grid.") + axis[a] + " = " + std::to_string(g[a]) + " exceeds " +
           std::to_string(kMaxGridDim[a]));
  }
  State& s = state();
  std::size_t limit = s.max_dynamic_shared;
  if (auto it = s.kernel_max_dynamic_shared.find(kernel); it != s.kernel_max_dynamic_shared.end())
    limit = std::max(limit, it->second);
  if (dyn_bytes > limit)
    fail(std::to_string(dyn_bytes) + " bytes of dynamic shared memory exceed the limit of " + std::to_string(limit) +
         " (sm_80: 48 KiB without opt-in; set_max_dynamic_shared raises it up to " +
         std::to_string(kOptInMaxDynamicShared) + ")");
}

inline void run_grid(KernelId kernel, dim3 grid, dim3 block, std::size_t dyn_bytes, const std::function<void()>& body) {
  if (tl_ctx)
    throw std::runtime_error("cuda_emulation::launch from inside a kernel (dynamic parallelism) is not emulated");
  State& s = state();
  std::lock_guard lock(s.mutex);
  check_config(kernel, grid, block, dyn_bytes);
  ++s.stats.launches;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block b(grid, block, {x, y, z}, dyn_bytes, body);
        if (std::exception_ptr e = Pool::instance().run(b)) std::rethrow_exception(e);
        ++s.stats.blocks;
        s.stats.threads += b.threads;
      }
}

// Warp collectives: every running lane of the warp must take part (mask must cover the
// lanes that exist); partial-warp masks in divergent code are not emulated.
inline void check_mask(const Warp& w, unsigned mask, const char* what) {
  const unsigned present = w.lanes == 32 ? 0xffffffffu : (1u << w.lanes) - 1;
  if ((mask & present) != present)
    die(std::string(what) + ": mask " + std::to_string(mask) + " leaves out some of the warp's " +
        std::to_string(w.lanes) + " lanes; only whole-warp collectives are emulated");
}

// One exchange round: publish this lane's 8 bytes, wait for the warp; returns the round.
inline std::uint64_t publish(ThreadCtx& c, unsigned mask, std::uint64_t bits, const char* what) {
  check_mask(*c.warp, mask, what);
  const std::uint64_t seq = ++c.seq;
  c.warp->slots[seq & 1][c.lane] = {bits, seq};
  c.warp->barrier.arrive_and_wait();
  return seq;
}
// The value lane `src` published in round `seq`, if it exists and took part.
inline bool fetch(const Warp& w, std::uint64_t seq, long long src, std::uint64_t& bits) {
  if (src < 0 || src >= w.lanes || w.slots[seq & 1][src].seq != seq) return false;
  bits = w.slots[seq & 1][src].bits;
  return true;
}

// src_lane maps this lane to its source lane (negative: none, keep own value).
template <class T, class SrcLane>
T shuffle(const char* what, unsigned mask, T v, int width, SrcLane src_lane) {
  ThreadCtx& c = ctx(what);
  if (width < 1 || width > 32 || !std::has_single_bit(static_cast<unsigned>(width)))
    die(std::string(what) + ": width " + std::to_string(width) + " is not a power of 2 in [1, 32]");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const std::uint64_t seq = publish(c, mask, bits, what);
  if (fetch(*c.warp, seq, src_lane(static_cast<long long>(c.lane)), bits)) std::memcpy(&v, &bits, sizeof(T));
  return v;
}

struct Vote {
  unsigned ballot, voters;
};
inline Vote vote(unsigned mask, int pred, const char* what) {
  ThreadCtx& c = ctx(what);
  const std::uint64_t seq = publish(c, mask, pred != 0, what);
  Vote v{0, 0};
  for (int l = 0; l < c.warp->lanes; ++l) {
    std::uint64_t bits;
    if ((mask >> l & 1) && fetch(*c.warp, seq, l, bits)) {
      v.voters |= 1u << l;
      v.ballot |= static_cast<unsigned>(bits) << l;
    }
  }
  return v;
}

// atomicMin / atomicMax: replace the value while `v` is better than it.
template <class T, class Better>
T atomic_replace_if(T* p, T v, Better better) {
  std::atomic_ref<T> r(*p);
  T old = r.load();
  while (better(v, old) && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}

inline void check_opt_in(std::size_t bytes) {
  if (bytes > kOptInMaxDynamicShared)
    throw std::runtime_error("cuda_emulation::set_max_dynamic_shared: " + std::to_string(bytes) +
                             " bytes exceed the sm_80 opt-in maximum of " + std::to_string(kOptInMaxDynamicShared));
}

}  // namespace detail

// ------------------------------------------------------------------ public API

// Raises the dynamic shared memory limit for every kernel (a global stand-in for
// cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)).
inline void set_max_dynamic_shared(std::size_t bytes) {
  detail::check_opt_in(bytes);
  std::lock_guard lock(detail::state().mutex);
  detail::state().max_dynamic_shared = std::max(bytes, kDefaultMaxDynamicShared);
}
// The same for one kernel, as cudaFuncSetAttribute does.
template <class... P>
void set_max_dynamic_shared(void (*kernel)(P...), std::size_t bytes) {
  detail::check_opt_in(bytes);
  std::lock_guard lock(detail::state().mutex);
  detail::state().kernel_max_dynamic_shared[reinterpret_cast<detail::KernelId>(kernel)] = bytes;
}

inline Stats stats() {
  std::lock_guard lock(detail::state().mutex);
  return detail::state().stats;
}
inline std::uint64_t launch_count() { return stats().launches; }

// The current block's dynamic shared memory (what `extern __shared__ T buf[]` names).
template <class T>
T* dynamic_shared() {
  return static_cast<T*>(detail::ctx("cuda_emulation::dynamic_shared").block->dyn);
}

// kernel<<<grid, block, dynamic_shared_bytes>>>(args...): checks the configuration
// (throws std::runtime_error), then runs the blocks in order and returns when all are
// done. An exception thrown by a kernel thread is rethrown here after its block ends.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "cuda_emulation::launch: argument count does not match the kernel");
  // CUDA copies the arguments once at launch; each thread then gets its own copy.
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const std::function<void()> body = [&] { std::apply(kernel, params); };
  detail::run_grid(reinterpret_cast<detail::KernelId>(kernel), grid, block, dynamic_shared_bytes, body);
}

}  // namespace cuda_emulation

// ------------------------------------------------------------------ device built-ins

inline void __syncthreads() { cuda_emulation::detail::ctx("__syncthreads").block->barrier.arrive_and_wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  auto& c = cuda_emulation::detail::ctx("__syncwarp");
  cuda_emulation::detail::check_mask(*c.warp, mask, "__syncwarp");
  c.warp->barrier.arrive_and_wait();
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline unsigned __ballot_sync(unsigned mask, int pred) {
  return cuda_emulation::detail::vote(mask, pred, "__ballot_sync").ballot;
}
inline int __any_sync(unsigned mask, int pred) {
  return cuda_emulation::detail::vote(mask, pred, "__any_sync").ballot != 0;
}
inline int __all_sync(unsigned mask, int pred) {
  const auto v = cuda_emulation::detail::vote(mask, pred, "__all_sync");
  return v.ballot == v.voters;
}

// Shuffles as non-template overloads per CUDA type, so overload resolution (e.g. short
// -> int) matches CUDA's. Segment rules follow the CUDA programming guide.
#define CUDA_EMULATION_SHUFFLES(T)                                                                                \
  inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {                                       \
    return cuda_emulation::detail::shuffle("__shfl_sync", mask, v, width,                                         \
                                           [=](long long l) { return l / width * width + (src & (width - 1)); }); \
  }                                                                                                               \
  inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {                             \
    return cuda_emulation::detail::shuffle("__shfl_up_sync", mask, v, width,                                      \
                                           [=](long long l) { return l % width >= delta ? l - delta : -1LL; });   \
  }                                                                                                               \
  inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {                           \
    return cuda_emulation::detail::shuffle("__shfl_down_sync", mask, v, width, [=](long long l) {                 \
      return l % width + delta < static_cast<unsigned>(width) ? l + delta : -1LL;                                 \
    });                                                                                                           \
  }                                                                                                               \
  inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {                             \
    return cuda_emulation::detail::shuffle("__shfl_xor_sync", mask, v, width, [=](long long l) {                  \
      const long long s = l ^ lane_mask;                                                                          \
      return s < (l / width + 1) * width ? s : -1LL;                                                              \
    });                                                                                                           \
  }
CUDA_EMULATION_SHUFFLES(int)
CUDA_EMULATION_SHUFFLES(unsigned int)
CUDA_EMULATION_SHUFFLES(long)
CUDA_EMULATION_SHUFFLES(unsigned long)
CUDA_EMULATION_SHUFFLES(long long)
CUDA_EMULATION_SHUFFLES(unsigned long long)
CUDA_EMULATION_SHUFFLES(float)
CUDA_EMULATION_SHUFFLES(double)
#undef CUDA_EMULATION_SHUFFLES

// Atomics on host memory through std::atomic_ref, with CUDA's overload set.
#define CUDA_EMULATION_ATOMIC(NAME, T, EXPR)           \
  inline T NAME(T* address, T val) {                   \
    [[maybe_unused]] std::atomic_ref<T> ref(*address); \
    return EXPR;                                       \
  }
#define CUDA_EMULATION_INT_ATOMICS(T)                                                                             \
  CUDA_EMULATION_ATOMIC(atomicAdd, T, ref.fetch_add(val))                                                         \
  CUDA_EMULATION_ATOMIC(atomicExch, T, ref.exchange(val))                                                         \
  CUDA_EMULATION_ATOMIC(atomicMin, T, cuda_emulation::detail::atomic_replace_if(address, val, std::less<T>()))    \
  CUDA_EMULATION_ATOMIC(atomicMax, T, cuda_emulation::detail::atomic_replace_if(address, val, std::greater<T>())) \
  CUDA_EMULATION_ATOMIC(atomicAnd, T, ref.fetch_and(val))                                                         \
  CUDA_EMULATION_ATOMIC(atomicOr, T, ref.fetch_or(val))                                                           \
  CUDA_EMULATION_ATOMIC(atomicXor, T, ref.fetch_xor(val))                                                         \
  inline T atomicCAS(T* address, T compare, T val) {                                                              \
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val);                                           \
    return compare;                                                                                               \
  }
CUDA_EMULATION_INT_ATOMICS(int)
CUDA_EMULATION_INT_ATOMICS(unsigned int)
CUDA_EMULATION_INT_ATOMICS(unsigned long long)
CUDA_EMULATION_ATOMIC(atomicSub, int, ref.fetch_sub(val))
CUDA_EMULATION_ATOMIC(atomicSub, unsigned int, ref.fetch_sub(val))
CUDA_EMULATION_ATOMIC(atomicAdd, float, ref.fetch_add(val))
CUDA_EMULATION_ATOMIC(atomicAdd, double, ref.fetch_add(val))
CUDA_EMULATION_ATOMIC(atomicExch, float, ref.exchange(val))
#undef CUDA_EMULATION_INT_ATOMICS
#undef CUDA_EMULATION_ATOMIC
