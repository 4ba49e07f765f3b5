// Runs the project's CUDA kernels (csrc/cuda/polyact_kernels.cuh, unchanged) on the
// CPU under the emulation of cuda_emulation.h, through the same plan/launch code
// the GPU build uses. Built with AddressSanitizer and UBSan by
// tests/test_cuda_kernels_emulated.py, which writes the cases and checks the results.
//
//   run_kernels DIR      runs every case listed in DIR/cases.txt, one per line:
//     name op dtype n degree basis bound alpha x_offset out_offset grad_y coeffs_grad resident form
//   op: fwd | bwd; dtype: f32 f64 f16 bf16; basis: monomial | chebyshev; form: exp | quadratic
//   (the boundary term's);
//   x_offset / out_offset: elements by which x / the output start past a 16-byte
//   aligned allocation (misaligned pointers take the scalar path);
//   grad_y: dense | broadcast; coeffs_grad: 0 | 1; resident: blocks the emulated
//   device holds at once (caps the grid, so small n still runs on 2 or 3 blocks).
// Inputs DIR/name.{x,c,gy,gs} and outputs DIR/name.{y,stats,gx,gc,plan} are raw
// little-endian arrays (plan: text). Every buffer is its own heap allocation of
// exactly the size the kernels may touch, so any access past it is an ASan error.
#include "cuda_emulation.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/cuda/polyact_kernels.cuh"

namespace {

using pnn::cuda::LaunchPlan;

struct EmulatedDevice {
  int resident;
  template <typename... A>
  int resident_blocks(void (*)(A...), int, size_t) {
    return resident;
  }
  template <typename... A, typename... Args>
  void launch(void (*kernel)(A...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
    cuda_emulation::launch(kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
  }
};

// A buffer of `count` elements starting `offset` elements into its own allocation.
template <typename T>
struct Buffer {
  std::unique_ptr<T[]> storage;
  T* data;
  Buffer(size_t count, size_t offset) : storage(new T[count + offset]), data(storage.get() + offset) {}
};

template <typename T>
Buffer<T> read_array(const std::string& path, size_t count, size_t offset) {
  Buffer<T> b(count, offset);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  in.read(reinterpret_cast<char*>(b.data), static_cast<std::streamsize>(count * sizeof(T)));
  if (static_cast<size_t>(in.gcount()) != count * sizeof(T)) throw std::runtime_error("short file " + path);
  return b;
}

template <typename T>
void write_array(const std::string& path, const T* data, size_t count) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(T)));
}

void write_plan(const std::string& path, const LaunchPlan& p) {
  std::ofstream out(path);
  out << p.vec << ' ' << p.aligned << ' ' << p.slice << ' ' << p.blocks << ' ' << p.slices << ' ' << p.shared_bytes
      << ' ' << p.scratch_bytes << '\n';
}

struct Case {
  std::string name, op, dtype, basis, grad_y, form;
  int64_t n;
  int degree, coeffs_grad, resident;
  double bound, alpha;
  size_t x_offset, out_offset;
};

template <typename scalar_t>
void run(const std::string& dir, const Case& c) {
  using acc_t = pnn::acc_type_t<scalar_t>;
  const std::string base = dir + "/" + c.name;
  const size_t n = static_cast<size_t>(c.n), ncoef = static_cast<size_t>(c.degree) + 1;
  const pnn::Basis basis = c.basis == "monomial" ? pnn::Basis::kMonomial : pnn::Basis::kChebyshev;
  auto x = read_array<scalar_t>(base + ".x", n, c.x_offset);
  auto coeffs = read_array<acc_t>(base + ".c", ncoef, 0);
  const pnn::BoundaryForm form = c.form == "quadratic" ? pnn::BoundaryForm::kQuadratic : pnn::BoundaryForm::kExp;
  const auto poly = pnn::make_poly_params<acc_t>(coeffs.data, c.degree, basis, c.bound, c.alpha, form);
  EmulatedDevice device{c.resident};
  if (c.op == "fwd") {
    Buffer<scalar_t> y(n, c.out_offset);
    Buffer<acc_t> stats(3, 0);
    pnn::cuda::ForwardArgs<scalar_t> args{x.data, y.data, c.n, poly, stats.data, nullptr};
    const LaunchPlan plan = pnn::cuda::plan_forward_on(args, device);
    Buffer<pnn::ForwardPartial> partials(plan.scratch_bytes / sizeof(pnn::ForwardPartial), 0);
    args.partials = partials.data;
    pnn::cuda::launch_forward_on(args, plan, device);
    write_array(base + ".y", y.data, n);
    write_array(base + ".stats", stats.data, 3);
    write_plan(base + ".plan", plan);
  } else {
    const bool broadcast = c.grad_y == "broadcast";
    auto grad_y = read_array<scalar_t>(base + ".gy", broadcast ? 1 : n, broadcast ? 0 : c.x_offset);
    auto grad_stats = read_array<acc_t>(base + ".gs", 3, 0);
    Buffer<scalar_t> grad_x(n, c.out_offset);
    Buffer<acc_t> grad_coeffs(ncoef, 0);
    pnn::cuda::BackwardArgs<scalar_t> args{
        grad_y.data, broadcast, x.data,          grad_x.data,
        c.n,         poly,      grad_stats.data, c.coeffs_grad ? grad_coeffs.data : nullptr,
        nullptr};
    const LaunchPlan plan = pnn::cuda::plan_backward_on(args, device);
    Buffer<double> partials(plan.scratch_bytes / sizeof(double), 0);
    args.coeff_partials = plan.scratch_bytes ? partials.data : nullptr;
    pnn::cuda::launch_backward_on(args, plan, device);
    write_array(base + ".gx", grad_x.data, n);
    if (c.coeffs_grad) write_array(base + ".gc", grad_coeffs.data, ncoef);
    write_plan(base + ".plan", plan);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: run_kernels DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream list(dir + "/cases.txt");
  if (!list) {
    std::cerr << "run_kernels: cannot read " << dir << "/cases.txt\n";
    return 2;
  }
  std::string line;
  int done = 0;
  while (std::getline(list, line)) {
    if (line.empty()) continue;
    std::istringstream in(line);
    Case c;
    in >> c.name >> c.op >> c.dtype >> c.n >> c.degree >> c.basis >> c.bound >> c.alpha >> c.x_offset >> c.out_offset >>
        c.grad_y >> c.coeffs_grad >> c.resident >> c.form;
    if (!in || (c.form != "exp" && c.form != "quadratic")) {
      std::cerr << "run_kernels: bad case line: " << line << "\n";
      return 2;
    }
    if (c.dtype == "f32")
      run<float>(dir, c);
    else if (c.dtype == "f64")
      run<double>(dir, c);
    else if (c.dtype == "f16")
      run<c10::Half>(dir, c);
    else if (c.dtype == "bf16")
      run<c10::BFloat16>(dir, c);
    else {
      std::cerr << "run_kernels: unknown dtype " << c.dtype << "\n";
      return 2;
    }
    ++done;
  }
  std::cout << "ran " << done << " cases\n";
  return 0;
}
