// Self-test of cuda_emulation.h: small kernels, one mode per argv[1].
// (Over 400 lines: one program, compiled once under the sanitizers, holds every mode,
// so that the test module pays for one build.)
// Prints "OK <mode>" and exits 0 on success; "FAIL <mode>: ..." and exits 1 otherwise.
// The modes oob_global, oob_shared, oob_static_shared, ubsan, deadlock and bad_mask are
// meant to fail (sanitizer report / emulation abort); the tests check how.
#include "cuda_emulation.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string g_mode;
int g_failures = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::printf("FAIL %s: %s:%d: %s\n", g_mode.c_str(), __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                   \
    }                                                                                 \
  } while (0)
#define CHECK_EQ(a, b)                                                                                 \
  do {                                                                                                 \
    const auto va = (a);                                                                               \
    const auto vb = (b);                                                                               \
    if (!(va == vb)) {                                                                                 \
      std::printf("FAIL %s: %s:%d: %s == %s (%s vs %s)\n", g_mode.c_str(), __FILE__, __LINE__, #a, #b, \
                  std::to_string(va).c_str(), std::to_string(vb).c_str());                             \
      ++g_failures;                                                                                    \
    }                                                                                                  \
  } while (0)

using cuda_emulation::launch;

// ------------------------------------------------------------------ barrier

// Several rounds: thread t writes round r's value, barrier, reads another thread's.
__global__ void barrier_kernel(int* out, int rounds) {
  __shared__ int buf[256];
  const unsigned t = threadIdx.x, n = blockDim.x;
  int acc = 0;
  for (int r = 0; r < rounds; ++r) {
    if (t % 7 == 0) std::this_thread::yield();  // stagger the writers
    buf[t] = r * 1000 + static_cast<int>(t);
    __syncthreads();
    acc += buf[(t + r + 1) % n];
    __syncthreads();  // nobody overwrites buf before everyone has read it
  }
  out[t] = acc;
}

void test_barrier() {
  const int n = 256, rounds = 20;
  std::vector<int> out(n, -1);
  launch(barrier_kernel, 1, n, 0, out.data(), rounds);
  for (int t = 0; t < n; ++t) {
    int expect = 0;
    for (int r = 0; r < rounds; ++r) expect += r * 1000 + (t + r + 1) % n;
    CHECK_EQ(out[t], expect);
  }
}

// ------------------------------------------------------------------ shuffles

// Per warp: a shfl_down tree sum (lane 0 holds it) and a shfl_xor butterfly (all lanes).
template <typename T>
__global__ void warp_sum_kernel(const T* in, T* down, T* butterfly) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  T a = in[i], b = in[i];
  for (int off = 16; off > 0; off >>= 1) a += __shfl_down_sync(0xffffffffu, a, off);
  for (int m = 16; m > 0; m >>= 1) b += __shfl_xor_sync(0xffffffffu, b, m);
  if (threadIdx.x % warpSize == 0) down[i / warpSize] = a;
  butterfly[i] = b;
}

template <typename T>
void check_warp_sums(T scale) {
  const int blocks = 2, threads = 256, n = blocks * threads;
  std::vector<T> in(n), down(n / 32), butterfly(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<T>((i * 37 + 11) % 101) * scale;  // integer-valued
  launch(warp_sum_kernel<T>, blocks, threads, 0, in.data(), down.data(), butterfly.data());
  for (int w = 0; w < n / 32; ++w) {
    T expect = 0;
    for (int l = 0; l < 32; ++l) expect += in[w * 32 + l];
    CHECK(down[w] == expect);
    for (int l = 0; l < 32; ++l) CHECK(butterfly[w * 32 + l] == expect);
  }
}

void test_shuffle() {
  check_warp_sums<float>(1.0f);
  check_warp_sums<double>(1024.0);
  check_warp_sums<int>(-3);
  check_warp_sums<unsigned>(5u);
  check_warp_sums<long long>(1LL << 33);
}

// Per lane: shfl from lane 5, shfl_up by 3, and shfl_down / shfl_xor / shfl with width 8.
__global__ void shuffle_variants_kernel(int* out) {
  const int t = threadIdx.x, lane = t % 32;
  const int v = 100 + t;
  int* o = out + t * 6;
  o[0] = __shfl_sync(0xffffffffu, v, 5);
  o[1] = __shfl_up_sync(0xffffffffu, v, 3);
  o[2] = __shfl_down_sync(0xffffffffu, v, 3, 8);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 9, 8);  // 9 ^ lane leaves the 8-lane segment upwards for some
  o[4] = __shfl_sync(0xffffffffu, v, 2, 8);
  o[5] = __shfl_up_sync(0xffffffffu, v, 2, 8);
  (void)lane;
}

void test_shuffle_variants() {
  const int n = 64;
  std::vector<int> out(n * 6);
  launch(shuffle_variants_kernel, 1, n, 0, out.data());
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32, base = t - lane, v = 100 + t;
    const int* o = &out[t * 6];
    CHECK_EQ(o[0], 100 + base + 5);
    CHECK_EQ(o[1], lane >= 3 ? v - 3 : v);
    CHECK_EQ(o[2], lane % 8 + 3 < 8 ? v + 3 : v);
    const int x = lane ^ 9;
    CHECK_EQ(o[3], x < (lane / 8 + 1) * 8 ? 100 + base + x : v);
    CHECK_EQ(o[4], 100 + base + lane / 8 * 8 + 2);
    CHECK_EQ(o[5], lane % 8 >= 2 ? v - 2 : v);
  }
}

// blockDim 48: warp 1 has 16 lanes. A sum over offsets 8..1 is exact; an offset of 16
// (or an xor reaching lanes 16..31) in warp 1 names missing lanes: own value.
__global__ void partial_warp_kernel(const int* in, int* sum16, int* down16, int* xor16) {
  const int t = threadIdx.x;
  int s = in[t];
  for (int off = 8; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off, 16);
  sum16[t] = s;
  down16[t] = __shfl_down_sync(0xffffffffu, in[t], 16);
  xor16[t] = __shfl_xor_sync(0xffffffffu, in[t], 16);
}

void test_partial_warp() {
  const int n = 48;
  std::vector<int> in(n), sum16(n), down16(n), xor16(n);
  for (int i = 0; i < n; ++i) in[i] = i * i + 1;
  launch(partial_warp_kernel, 1, n, 0, in.data(), sum16.data(), down16.data(), xor16.data());
  for (int g = 0; g < n; g += 16) {
    int expect = 0;
    for (int i = g; i < g + 16; ++i) expect += in[i];
    CHECK_EQ(sum16[g], expect);
  }
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32;
    const bool in_full_warp = t < 32;
    CHECK_EQ(down16[t], in_full_warp && lane < 16 ? in[t + 16] : in[t]);
    CHECK_EQ(xor16[t], in_full_warp ? in[t ^ 16] : in[t]);
  }
}

// Ballot / any / all over a predicate.
__global__ void vote_kernel(unsigned* ballot, int* any, int* all) {
  const int t = threadIdx.x;
  ballot[t] = __ballot_sync(0xffffffffu, t % 3 == 0);
  any[t] = __any_sync(0xffffffffu, t == 40);
  all[t] = __all_sync(0xffffffffu, t < 32);
}

void test_vote() {
  const int n = 40;  // partial second warp of 8 lanes
  std::vector<unsigned> ballot(n);
  std::vector<int> any(n), all(n);
  launch(vote_kernel, 1, n, 0, ballot.data(), any.data(), all.data());
  for (int t = 0; t < n; ++t) {
    const int base = t / 32 * 32, lanes = std::min(32, n - base);
    unsigned expect = 0;
    for (int l = 0; l < lanes; ++l) expect |= unsigned((base + l) % 3 == 0) << l;
    CHECK_EQ(ballot[t], expect);
    CHECK_EQ(any[t], 0);  // thread 40 does not exist
    CHECK_EQ(all[t], t < 32 ? 1 : 0);
  }
}

// ------------------------------------------------------------------ shared memory

// Each block checks its dynamic shared memory starts as 0xA5 bytes, fills it, and
// reads a neighbour's entry after the barrier.
__global__ void dynamic_shared_kernel(int* out, int* fresh) {
  unsigned* smem = cuda_emulation::dynamic_shared<unsigned>();
  const unsigned t = threadIdx.x, n = blockDim.x;
  fresh[blockIdx.x * n + t] = smem[t] == 0xA5A5A5A5u && smem[n + t] == 0xA5A5A5A5u;
  __syncthreads();
  smem[t] = blockIdx.x * 10000 + t;
  smem[n + t] = 7;
  __syncthreads();
  out[blockIdx.x * n + t] = static_cast<int>(smem[(t + 1) % n]);
}

void test_dynamic_shared() {
  const int blocks = 3, n = 128;
  std::vector<int> out(blocks * n, -1), fresh(blocks * n, -1);
  launch(dynamic_shared_kernel, blocks, n, 2 * n * sizeof(unsigned), out.data(), fresh.data());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      CHECK_EQ(fresh[b * n + t], 1);
      CHECK_EQ(out[b * n + t], b * 10000 + (t + 1) % n);
    }
}

// ------------------------------------------------------------------ grid

std::atomic<int> g_running{0}, g_max_running{0};

// Blocks must run one after another: count the threads running at once, and the order
// in which blocks take a ticket.
__global__ void grid_kernel(unsigned* order, unsigned* ticket, unsigned* dims) {
  const int now = g_running.fetch_add(1) + 1;
  int seen = g_max_running.load();
  while (now > seen && !g_max_running.compare_exchange_weak(seen, now)) {
  }
  std::this_thread::yield();
  __syncthreads();
  if (threadIdx.x == 0) {
    order[blockIdx.x] = atomicAdd(ticket, 1u);
    dims[blockIdx.x] = gridDim.x * 1000 + blockDim.x;
  }
  __syncthreads();
  g_running.fetch_sub(1);
}

void test_grid_sequential() {
  const unsigned blocks = 7, n = 64;
  std::vector<unsigned> order(blocks, 99), dims(blocks);
  unsigned ticket = 0;
  launch(grid_kernel, blocks, n, 0, order.data(), &ticket, dims.data());
  CHECK_EQ(ticket, blocks);
  CHECK_EQ(g_max_running.load(), static_cast<int>(n));
  for (unsigned b = 0; b < blocks; ++b) {
    CHECK_EQ(order[b], b);
    CHECK_EQ(dims[b], blocks * 1000 + n);
  }
}

// Every thread records its 3-D indices at its global linear position.
__global__ void indices_kernel(unsigned* out) {
  const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned* o = out + (bx * blockDim.x * blockDim.y * blockDim.z + tx) * 6;
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
  __syncthreads();
}

void test_indices_2d() {
  const dim3 grid(3, 2, 2), block(8, 4, 2);
  const unsigned total = 3 * 2 * 2 * 8 * 4 * 2;
  std::vector<unsigned> out(total * 6, 999);
  launch(indices_kernel, grid, block, 0, out.data());
  unsigned i = 0;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 4; ++ty)
            for (unsigned tx = 0; tx < 8; ++tx, ++i) {
              const unsigned* o = &out[i * 6];
              CHECK(o[0] == tx && o[1] == ty && o[2] == tz && o[3] == bx && o[4] == by && o[5] == bz);
            }
}

// Threads t % 3 == 0 and the whole of warp 2 return at once; the others go through
// barriers and warp syncs (must not deadlock) and still exchange shared values.
bool exits_early(int t) { return t % 3 == 0 || t / 32 == 2; }
int running_peer(int t, int n) { return exits_early((t + 1) % n) ? t : (t + 1) % n; }

__global__ void early_return_kernel(int* out) {
  __shared__ int buf[256];
  const int t = threadIdx.x;
  if (exits_early(t)) return;
  for (int r = 0; r < 5; ++r) {
    buf[t] = r + t;
    __syncthreads();
    __syncwarp();
    out[t] += buf[running_peer(t, blockDim.x)];
    __syncthreads();
  }
}

void test_early_return() {
  const int n = 256;
  std::vector<int> out(n, 0);
  launch(early_return_kernel, 2, n, 0, out.data());  // twice: 2 blocks write the same out
  for (int t = 0; t < n; ++t) {
    if (exits_early(t)) {
      CHECK_EQ(out[t], 0);
      continue;
    }
    const int peer = running_peer(t, n);
    int expect = 0;
    for (int r = 0; r < 5; ++r) expect += r + peer;
    CHECK_EQ(out[t], 2 * expect);
  }
}

// ------------------------------------------------------------------ atomics

// Last-block pattern: each block writes a partial, takes a ticket; the last one sums.
__global__ void ticket_kernel(const int* in, int* partials, unsigned* ticket, int* total, unsigned* hits) {
  __shared__ int red[256];
  __shared__ bool last;
  const unsigned t = threadIdx.x;
  red[t] = in[blockIdx.x * blockDim.x + t];
  for (int i = 0; i < 10; ++i) atomicAdd(hits, 1u);  // contention
  __syncthreads();
  if (t == 0) {
    int s = 0;
    for (unsigned i = 0; i < blockDim.x; ++i) s += red[i];
    partials[blockIdx.x] = s;
    __threadfence();
    last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (last && t == 0) {
    int s = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) s += partials[b];
    *total = s;
  }
}

void test_atomics() {
  const int blocks = 3, n = 256;
  std::vector<int> in(blocks * n), partials(blocks);
  std::iota(in.begin(), in.end(), -100);
  unsigned ticket = 0, hits = 0;
  int total = 0;
  launch(ticket_kernel, blocks, n, 0, in.data(), partials.data(), &ticket, &total, &hits);
  CHECK_EQ(total, std::accumulate(in.begin(), in.end(), 0));
  CHECK_EQ(ticket, static_cast<unsigned>(blocks));
  CHECK_EQ(hits, static_cast<unsigned>(blocks * n * 10));
  // The other atomics on one thread's view.
  int i = 5;
  CHECK_EQ(atomicMax(&i, 9), 5);
  CHECK_EQ(atomicMin(&i, 2), 9);
  CHECK_EQ(atomicCAS(&i, 2, 4), 2);
  CHECK_EQ(atomicCAS(&i, 3, 8), 4);
  CHECK_EQ(atomicExch(&i, 1), 4);
  CHECK_EQ(atomicSub(&i, 1), 1);
  double d = 0.5;
  CHECK(atomicAdd(&d, 0.25) == 0.5 && d == 0.75);
}

// ------------------------------------------------------------------ arguments

struct Params {
  int scale;
  int pad[3];
};

// Arguments are copies: a thread changing its own copy affects nobody else.
__global__ void args_kernel(int* out, Params p, float f) {
  if (threadIdx.x == 0) p.scale = 1000;
  __syncthreads();
  out[threadIdx.x] = threadIdx.x == 0 ? -1 : p.scale * static_cast<int>(f);
}

void test_kernel_args() {
  std::vector<int> out(64);
  Params p{3, {0, 0, 0}};
  launch(args_kernel, 1, 64, 0, out.data(), p, 2.0);  // double -> float, as a call converts
  CHECK_EQ(p.scale, 3);
  for (int t = 1; t < 64; ++t) CHECK_EQ(out[t], 6);
}

// ------------------------------------------------------------------ launch limits

int g_ran = 0;
__global__ void count_kernel(int* ran) {
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0 && blockIdx.x == 0) ++*ran;
}

bool rejected(dim3 grid, dim3 block, std::size_t smem, const char* expect_in_message) {
  const int before = g_ran;
  try {
    launch(count_kernel, grid, block, smem, &g_ran);
  } catch (const std::runtime_error& e) {
    std::printf("rejected: %s\n", e.what());
    return g_ran == before && std::strstr(e.what(), expect_in_message) != nullptr;
  }
  return false;
}

void test_limits() {
  CHECK(rejected(1, 1025, 0, "1025 threads, more than 1024"));
  CHECK(rejected(1, dim3(32, 32, 2), 0, "2048 threads"));
  CHECK(rejected(1, dim3(1, 1, 65), 0, "block.z = 65 exceeds 64"));
  CHECK(rejected(1, dim3(2048, 1, 1), 0, "block (2048,1,1) has 2048 threads"));
  CHECK(rejected(dim3(1, 65536, 1), 32, 0, "grid.y = 65536 exceeds 65535"));
  CHECK(rejected(dim3(2147483648u, 1, 1), 32, 0, "grid.x = 2147483648"));
  CHECK(rejected(0, 32, 0, "zero-sized"));
  CHECK(rejected(1, 0, 0, "zero-sized"));
  CHECK(rejected(1, 32, 49 * 1024, "50176 bytes of dynamic shared memory exceed the limit of 49152"));
  // At the limits it runs.
  launch(count_kernel, 1, 1024, 48 * 1024, &g_ran);
  launch(count_kernel, 1, dim3(1, 16, 64), 0, &g_ran);
  CHECK_EQ(g_ran, 2);
  // Opt-in, per kernel and globally, up to 163 KiB.
  cuda_emulation::set_max_dynamic_shared(count_kernel, 100 * 1024);
  launch(count_kernel, 1, 32, 49 * 1024, &g_ran);
  CHECK(rejected(1, 32, 101 * 1024, "exceed the limit of 102400"));
  bool threw = false;
  try {
    cuda_emulation::set_max_dynamic_shared(164 * 1024);
  } catch (const std::runtime_error& e) {
    threw = std::strstr(e.what(), "opt-in maximum of 166912") != nullptr;
  }
  CHECK(threw);
  cuda_emulation::set_max_dynamic_shared(163 * 1024);
  launch(count_kernel, 1, 32, 163 * 1024, &g_ran);
  CHECK_EQ(g_ran, 4);
  const auto s = cuda_emulation::stats();
  CHECK_EQ(s.launches, 4u);
  CHECK_EQ(s.blocks, 4u);
  CHECK_EQ(s.threads, 1024u + 1024u + 32u + 32u);
}

// A kernel exception reaches the launching thread; later launches still work.
__global__ void throwing_kernel(int* out) {
  if (threadIdx.x == 17) throw std::logic_error("thread 17 gives up");
  __syncthreads();
  out[threadIdx.x] = 1;
}

void test_exception() {
  std::vector<int> out(64, 0);
  bool caught = false;
  try {
    launch(throwing_kernel, 1, 64, 0, out.data());
  } catch (const std::logic_error& e) {
    caught = std::string(e.what()) == "thread 17 gives up";
  }
  CHECK(caught);
  CHECK_EQ(std::accumulate(out.begin(), out.end(), 0), 63);
  test_barrier();
}

// ------------------------------------------------------------------ must-fail modes

__global__ void read_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i % n] = in[i];  // off by one: thread n reads in[n]
}

void oob_global() {
  const int n = 100;
  float* in = new float[n]();
  float* out = new float[n]();
  launch(read_kernel, 1, 128, 0, in, out, n);
  delete[] in;
  delete[] out;
}

__global__ void smem_write_kernel(float* out) {
  float* smem = cuda_emulation::dynamic_shared<float>();
  smem[threadIdx.x + 1] = 1.0f;  // the last thread writes one past the end
  __syncthreads();
  out[threadIdx.x] = smem[threadIdx.x];
}

void oob_shared() {
  std::vector<float> out(256);
  launch(smem_write_kernel, 1, 256, 256 * sizeof(float), out.data());
}

__global__ void static_smem_kernel(float* out) {
  __shared__ float buf[64];
  float* p = buf;         // through a pointer: ASan's global redzone, not UBSan's bounds check
  p[threadIdx.x] = 1.0f;  // blockDim 80: threads 64..79 overflow
  __syncthreads();
  out[threadIdx.x % 64] = buf[threadIdx.x % 64];
}

void oob_static_shared() {
  std::vector<float> out(64);
  launch(static_smem_kernel, 1, 80, 0, out.data());
}

__global__ void overflow_kernel(int* out, int big) { out[threadIdx.x] = big + static_cast<int>(threadIdx.x); }

void ubsan() {
  std::vector<int> out(32);
  launch(overflow_kernel, 1, 32, 0, out.data(), 2147483647 - 3);
}

// Thread 0 waits in a warp sync while the others wait in __syncthreads: hangs.
__global__ void deadlock_kernel() {
  if (threadIdx.x == 0)
    __syncwarp();
  else
    __syncthreads();
}

void deadlock() { launch(deadlock_kernel, 1, 64, 0); }

__global__ void bad_mask_kernel(int* out) { out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, 1, 1); }

void bad_mask() {
  std::vector<int> out(32);
  launch(bad_mask_kernel, 1, 32, 0, out.data());
}

// ------------------------------------------------------------------ speed

// The project's pattern: a grid-stride loop, shared coefficients, 4 warp reductions.
__global__ void bench_kernel(const float* x, float* y, int n, double* partials) {
  __shared__ float c[8];
  __shared__ double red[8];
  if (threadIdx.x < 8) c[threadIdx.x] = 0.5f * threadIdx.x;
  __syncthreads();
  double s = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float p = 0;
    for (int k = 7; k >= 0; --k) p = fma(p, x[i], c[k]);
    y[i] = p;
    s += p;
  }
  for (int r = 0; r < 4; ++r)
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) partials[blockIdx.x] = red[0];
}

void bench() {
  const int n = 4096, launches = 100, blocks = 2;
  std::vector<float> x(n, 0.5f), y(n);
  std::vector<double> partials(blocks);
  launch(bench_kernel, blocks, 256, 0, x.data(), y.data(), n, partials.data());  // warm the pool
  // Wall time and the process's CPU time (all threads): waiting threads sleep on futexes, so
  // the CPU time is the work itself, and the test bounds it; the wall time also counts the
  // time other processes held the cores.
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  for (int i = 0; i < launches; ++i) launch(bench_kernel, blocks, 256, 0, x.data(), y.data(), n, partials.data());
  const double cpu_ms = 1000.0 * double(std::clock() - c0) / CLOCKS_PER_SEC;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ms_per_block %.3f cpu_ms_per_block %.3f\n", ms / (launches * blocks), cpu_ms / (launches * blocks));
}

struct Mode {
  const char* name;
  void (*fn)();
};
const Mode kModes[] = {
    {"barrier", test_barrier},
    {"shuffle", test_shuffle},
    {"shuffle_variants", test_shuffle_variants},
    {"partial_warp", test_partial_warp},
    {"vote", test_vote},
    {"dynamic_shared", test_dynamic_shared},
    {"grid_sequential", test_grid_sequential},
    {"indices_2d", test_indices_2d},
    {"early_return", test_early_return},
    {"atomics", test_atomics},
    {"kernel_args", test_kernel_args},
    {"limits", test_limits},
    {"exception", test_exception},
    {"bench", bench},
    {"oob_global", oob_global},
    {"oob_shared", oob_shared},
    {"oob_static_shared", oob_static_shared},
    {"ubsan", ubsan},
    {"deadlock", deadlock},
    {"bad_mask", bad_mask},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODE\nmodes:", argv[0]);
    for (const Mode& m : kModes) std::fprintf(stderr, " %s", m.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  g_mode = argv[1];
  for (const Mode& m : kModes) {
    if (g_mode != m.name) continue;
    m.fn();
    if (g_failures) return 1;
    std::printf("OK %s\n", m.name);
    return 0;
  }
  std::fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
