// CUDA entry points of the ops (TORCH_LIBRARY_IMPL for CUDA): argument checks,
// layouts, allocation, then the launches of polyact_kernels.cu through the
// interface of polyact_launch.h. Compiled by the host compiler.
//
// Layouts: x is processed in memory order, so any dense x (contiguous,
// channels_last, permuted) is used in place; a non-dense one is copied to
// x.contiguous(suggest_memory_format), which keeps channels_last, and y / grad_x
// are allocated like that dense x (= empty_like(x), as on the CPU and in the fake
// kernels). grad_y is used in place when it has x's strides in every dimension of
// size > 1, read as one value when it is a broadcast scalar (every stride 0, as
// from y.sum()), and copied into x's layout otherwise.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <string_view>

#include "../polyact_checks.h"
#include "polyact_launch.h"

namespace pnn {
namespace {

at::Tensor dense_input(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous(x.suggest_memory_format());
}

// Same strides in every dimension that has more than one element.
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t i = 0; i < a.dim(); ++i)
    if (a.size(i) > 1 && a.stride(i) != b.stride(i)) return false;
  return true;
}

// One value seen at every index: an expanded scalar, as autograd passes for y.sum().
bool broadcast_scalar(const at::Tensor& t) {
  for (int64_t i = 0; i < t.dim(); ++i)
    if (t.size(i) > 1 && t.stride(i) != 0) return false;
  return true;
}

// grad_y as the backward kernel walks it, in the memory order of `walked` (grad_x,
// allocated like the dense x): itself when it has that layout or is a broadcast
// scalar (read as one value), else a copy in that layout (reading it with other
// strides would not coalesce; the CPU kernels walk any grad_y in place instead).
at::Tensor grad_y_in_layout_of(const at::Tensor& grad_y, const at::Tensor& walked) {
  if (broadcast_scalar(grad_y) || same_layout(grad_y, walked)) return grad_y;
  return at::empty_like(walked).copy_(grad_y);
}

std::tuple<at::Tensor, at::Tensor> poly_act_cuda(const at::Tensor& x_in, const at::Tensor& coeffs_in, double bound,
                                                 double alpha, std::string_view basis_name,
                                                 std::string_view boundary_form) {
  check_forward_args(x_in, coeffs_in, bound, alpha);
  const Basis basis = parse_basis(basis_name);
  const BoundaryForm form = parse_boundary_form(boundary_form);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_input(x_in);
  const at::Tensor coeffs = coeffs_in.contiguous();
  at::Tensor y = at::empty_like(x);
  at::Tensor stats = at::empty({3}, x.options().dtype(accumulate_type(x.scalar_type())));
  const int degree = static_cast<int>(coeffs.numel()) - 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_forward_cuda", [&] {
    using acc_t = acc_type_t<scalar_t>;
    cuda::ForwardArgs<scalar_t> args{
        x.const_data_ptr<scalar_t>(),
        y.data_ptr<scalar_t>(),
        x.numel(),
        make_poly_params<acc_t>(coeffs.const_data_ptr<acc_t>(), degree, basis, bound, alpha, form),
        stats.data_ptr<acc_t>(),
        nullptr};
    const cuda::LaunchPlan plan = cuda::plan_forward(args);
    at::Tensor scratch = at::empty({static_cast<int64_t>(plan.scratch_bytes)}, x.options().dtype(at::kByte));
    args.partials = reinterpret_cast<ForwardPartial*>(scratch.data_ptr());
    cuda::launch_forward(args, plan, at::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> poly_act_backward_cuda(const at::Tensor& grad_y_in, const at::Tensor& grad_stats_in,
                                                          const at::Tensor& x_in, const at::Tensor& coeffs_in,
                                                          double bound, double alpha, std::string_view basis_name,
                                                          bool coeffs_grad, std::string_view boundary_form) {
  check_forward_args(x_in, coeffs_in, bound, alpha);
  check_backward_args(grad_y_in, grad_stats_in, x_in);
  const Basis basis = parse_basis(basis_name);
  const BoundaryForm form = parse_boundary_form(boundary_form);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_input(x_in);
  const at::Tensor coeffs = coeffs_in.contiguous();
  const int64_t n = x.numel();
  const int degree = static_cast<int>(coeffs.numel()) - 1;
  at::Tensor grad_x = at::empty_like(x);
  if (n == 0) return {grad_x, at::zeros({coeffs_grad ? coeffs.numel() : 0}, coeffs.options())};
  const at::Tensor grad_y = grad_y_in_layout_of(grad_y_in, grad_x);
  const bool broadcast = broadcast_scalar(grad_y);
  // Every entry is written by the finalize kernel.
  at::Tensor grad_coeffs = at::empty({coeffs_grad ? coeffs.numel() : 0}, coeffs.options());
  const at::Tensor grad_stats = grad_stats_in.to(accumulate_type(x.scalar_type())).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnn_poly_backward_cuda", [&] {
    using acc_t = acc_type_t<scalar_t>;
    cuda::BackwardArgs<scalar_t> args{
        grad_y.const_data_ptr<scalar_t>(),
        broadcast,
        x.const_data_ptr<scalar_t>(),
        grad_x.data_ptr<scalar_t>(),
        n,
        make_poly_params<acc_t>(coeffs.const_data_ptr<acc_t>(), degree, basis, bound, alpha, form),
        grad_stats.const_data_ptr<acc_t>(),
        coeffs_grad ? grad_coeffs.data_ptr<acc_t>() : nullptr,
        nullptr};
    const cuda::LaunchPlan plan = cuda::plan_backward(args);
    at::Tensor scratch;
    if (plan.scratch_bytes > 0) {
      scratch = at::empty({static_cast<int64_t>(plan.scratch_bytes / sizeof(double))}, x.options().dtype(at::kDouble));
      args.coeff_partials = scratch.data_ptr<double>();
    }
    cuda::launch_backward(args, plan, at::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_coeffs};
}

}  // namespace
}  // namespace pnn

TORCH_LIBRARY_IMPL(pnn_ext, CUDA, m) {
  m.impl("poly_act", &pnn::poly_act_cuda);
  m.impl("poly_act_backward", &pnn::poly_act_backward_cuda);
}
