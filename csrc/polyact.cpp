// Op schemas of pnn_ext (TORCH_LIBRARY) and their CPU implementations.
//
//   poly_act(x, coeffs, bound, alpha, basis, boundary_form="exp") -> (y, stats)
//     y     = p(x / B), x's shape, dtype and memory format
//     stats = [boundary term L (mean over x), max |x|, fraction of |x| > B],
//             float32 (float64 for float64 x); boundary_form "exp" or "quadratic" (polyact.h)
//   poly_act_backward(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
//                     boundary_form="exp") -> (grad_x, grad_coeffs)
//     grad_stats[0] is the incoming gradient of L (the statistics have none);
//     grad_coeffs has degree + 1 entries if coeffs_grad, else 0.
//
// The autograd formula and the fake (meta) implementations are registered
// from Python (pnn_ext/ops.py), as the PyTorch custom-op tutorial recommends.
#include <ATen/ATen.h>
#include <Python.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "cpu/huge_pages.h"
#include "cpu/polyact_cpu.h"
#include "polyact_checks.h"

namespace pnn {
namespace {

enum class CpuCapability { kDefault, kAvx2, kAvx512 };

CpuCapability detect_cpu_capability() {
  CpuCapability best = CpuCapability::kDefault;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuCapability::kAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    best = CpuCapability::kAvx512;
#endif
  // PNN_EXT_CPU_CAPABILITY=default|avx2|avx512 lowers the choice (tests use it to
  // run every build on one machine); it never raises it above what the CPU has.
  if (const char* env = std::getenv("PNN_EXT_CPU_CAPABILITY")) {
    const std::string want(env);
    CpuCapability asked = want == "avx512" ? CpuCapability::kAvx512
                          : want == "avx2" ? CpuCapability::kAvx2
                                           : CpuCapability::kDefault;
    TORCH_CHECK(want == "default" || want == "avx2" || want == "avx512",
                "PNN_EXT_CPU_CAPABILITY must be default, avx2 or avx512, got '", want, "'");
    if (static_cast<int>(asked) < static_cast<int>(best)) best = asked;
  }
  return best;
}

CpuCapability cpu_capability() {
  static const CpuCapability cap = detect_cpu_capability();
  return cap;
}

std::tuple<at::Tensor, at::Tensor> poly_act_cpu(const at::Tensor& x, const at::Tensor& coeffs, double bound,
                                                double alpha, std::string_view basis, std::string_view boundary_form) {
  check_forward_args(x, coeffs, bound, alpha);
  const Basis b = parse_basis(basis);
  const BoundaryForm f = parse_boundary_form(boundary_form);
  at::Tensor y = empty_output_like(x);  // keeps x's strides when x is dense (channels_last too)
  at::Tensor stats = at::empty({3}, x.options().dtype(accumulate_type(x.scalar_type())));
  const at::Tensor c = coeffs.contiguous();
  switch (cpu_capability()) {
    case CpuCapability::kAvx512: cpu::AVX512::forward(x, c, bound, alpha, b, f, y, stats); break;
    case CpuCapability::kAvx2: cpu::AVX2::forward(x, c, bound, alpha, b, f, y, stats); break;
    default: cpu::DEFAULT::forward(x, c, bound, alpha, b, f, y, stats); break;
  }
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> poly_act_backward_cpu(const at::Tensor& grad_y, const at::Tensor& grad_stats,
                                                         const at::Tensor& x, const at::Tensor& coeffs, double bound,
                                                         double alpha, std::string_view basis, bool coeffs_grad,
                                                         std::string_view boundary_form) {
  check_forward_args(x, coeffs, bound, alpha);
  check_backward_args(grad_y, grad_stats, x);
  const Basis b = parse_basis(basis);
  const BoundaryForm f = parse_boundary_form(boundary_form);
  at::Tensor grad_x = empty_output_like(x);
  at::Tensor grad_coeffs = at::empty({coeffs_grad ? coeffs.numel() : 0}, coeffs.options());
  const at::Tensor c = coeffs.contiguous();
  const double g_boundary = grad_stats[0].item<double>();  // a CPU tensor: no device sync
  at::Tensor* gc = coeffs_grad ? &grad_coeffs : nullptr;
  switch (cpu_capability()) {
    case CpuCapability::kAvx512: cpu::AVX512::backward(grad_y, g_boundary, x, c, bound, alpha, b, f, grad_x, gc); break;
    case CpuCapability::kAvx2: cpu::AVX2::backward(grad_y, g_boundary, x, c, bound, alpha, b, f, grad_x, gc); break;
    default: cpu::DEFAULT::backward(grad_y, g_boundary, x, c, bound, alpha, b, f, grad_x, gc); break;
  }
  return {grad_x, grad_coeffs};
}

const char* cpu_capability_name() {
  switch (cpu_capability()) {
    case CpuCapability::kAvx512: return "avx512";
    case CpuCapability::kAvx2: return "avx2";
    default: return "default";
  }
}

}  // namespace
}  // namespace pnn

TORCH_LIBRARY(pnn_ext, m) {
  m.def(
      "poly_act(Tensor x, Tensor coeffs, float bound, float alpha, str basis, str boundary_form=\"exp\") "
      "-> (Tensor, Tensor)");
  m.def(
      "poly_act_backward(Tensor grad_y, Tensor grad_stats, Tensor x, Tensor coeffs, float bound, "
      "float alpha, str basis, bool coeffs_grad, str boundary_form=\"exp\") -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pnn_ext, CPU, m) {
  m.impl("poly_act", &pnn::poly_act_cpu);
  m.impl("poly_act_backward", &pnn::poly_act_backward_cpu);
}

// A plain Python module, so that `import pnn_ext._C` loads the library (and runs
// the registrations above); it also reports which CPU build is in use.
static PyObject* py_cpu_capability(PyObject*, PyObject*) { return PyUnicode_FromString(pnn::cpu_capability_name()); }

// arith_peak(threads, kind="fma"): FLOP/s of the build in use (cpu/roofline_impl.h), for
// bench/roofline.py. The GIL is released while it measures; errors become ValueError.
static PyObject* py_arith_peak(PyObject*, PyObject* args) {
  long long threads = 0;
  const char* kind = "fma";
  if (!PyArg_ParseTuple(args, "L|s", &threads, &kind)) return nullptr;
  const std::string k(kind);
  if (k != "fma" && k != "add" && k != "clenshaw") {
    PyErr_Format(PyExc_ValueError, "arith_peak: kind must be 'fma', 'add' or 'clenshaw', got '%s'", kind);
    return nullptr;
  }
  const pnn::cpu::ArithKind ak = k == "fma"   ? pnn::cpu::ArithKind::kFma
                                 : k == "add" ? pnn::cpu::ArithKind::kAdd
                                              : pnn::cpu::ArithKind::kClenshaw;
  double flops = 0;
  std::string error;
  PyThreadState* saved = PyEval_SaveThread();  // no GIL held while it measures
  try {
    switch (pnn::cpu_capability()) {
      case pnn::CpuCapability::kAvx512: flops = pnn::cpu::AVX512::arith_peak(ak, threads); break;
      case pnn::CpuCapability::kAvx2: flops = pnn::cpu::AVX2::arith_peak(ak, threads); break;
      default: flops = pnn::cpu::DEFAULT::arith_peak(ak, threads); break;
    }
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  PyEval_RestoreThread(saved);
  if (!error.empty()) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  return PyFloat_FromDouble(flops);
}

static PyMethodDef kMethods[] = {
    {"cpu_capability", py_cpu_capability, METH_NOARGS,
     "Instruction set of the CPU kernels in use: 'avx512', 'avx2' or 'default'."},
    {"arith_peak", py_arith_peak, METH_VARARGS,
     "arith_peak(threads, kind='fma') -> FLOP/s of the CPU build in use on `threads` threads "
     "(at most torch.get_num_threads()); kind 'fma', 'add' or 'clenshaw' (1 FMA + 1 sub)."},
    {nullptr, nullptr, 0, nullptr}};

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, kMethods};
  return PyModule_Create(&module);
}
