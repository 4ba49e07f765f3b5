"""The fused ops: loads pnn_ext._C and makes its ops autograd- and compile-aware.

``poly_act(x, coeffs, bound, alpha, basis, impl) -> (y, stats)`` is the one entry
point. With the compiled extension it calls ``torch.ops.pnn_ext.poly_act`` (one
pass over x; backward is the op ``pnn_ext::poly_act_backward``, one pass over x
and grad_y). Without it (not built, or built without CUDA for a CUDA tensor) it
falls back to :mod:`pnn_ext.reference` and warns once; ``impl=`` chooses
explicitly. ``PNN_EXT_REQUIRE_EXTENSION=1`` (set by the test command) turns a
missing build into an ImportError instead of the fallback.
"""
from __future__ import annotations

import os
import warnings

import torch

from . import reference

try:
    from . import _C  # noqa: F401  (loading the library registers the ops)

    HAVE_EXTENSION = True
    _IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised on machines without a build
    if os.environ.get("PNN_EXT_REQUIRE_EXTENSION") == "1":
        raise ImportError("pnn_ext: the compiled extension pnn_ext._C is required "
                          f"(PNN_EXT_REQUIRE_EXTENSION=1) but failed to load: {exc}") from exc
    HAVE_EXTENSION = False
    _IMPORT_ERROR = exc

# Decided once, at import: a dispatcher query inside poly_act would end tracing under
# torch.compile(fullgraph=True) ("Unsupported torch.* op returned non-Tensor").
_CUDA_KERNELS = HAVE_EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key("pnn_ext::poly_act", "CUDA")
# Devices the compiled op serves: its CPU kernels, its CUDA kernels, meta (the fake kernels).
_FUSED_DEVICES = frozenset(({"cpu", "meta"} | ({"cuda"} if _CUDA_KERNELS else set())) if HAVE_EXTENSION else ())
IMPLS = ("auto", "fused", "reference")


def cpu_capability() -> str:
    """Instruction set the CPU kernels use ('avx512', 'avx2', 'default'), or 'none'."""
    return _C.cpu_capability() if HAVE_EXTENSION else "none"


def has_cuda_kernels() -> bool:
    """True when the compiled extension has CUDA kernels (decided at import)."""
    return _CUDA_KERNELS


if HAVE_EXTENSION:

    @torch.library.register_fake("pnn_ext::poly_act")
    def _poly_act_fake(x, coeffs, bound, alpha, basis, boundary_form="exp"):
        # Shapes and dtypes only: what torch.compile needs to trace through the op.
        reference.check_args(x, coeffs, bound, alpha, basis, boundary_form)
        return torch.empty_like(x), x.new_empty(3, dtype=reference.compute_dtype(x.dtype))

    @torch.library.register_fake("pnn_ext::poly_act_backward")
    def _poly_act_backward_fake(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
                                boundary_form="exp"):
        # The dispatcher sends a call with any meta tensor here, CPU tensors beside it
        # included: without the checks that call returned uninitialised CPU memory.
        reference.check_args(x, coeffs, bound, alpha, basis, boundary_form)
        reference.check_backward_args(grad_y, grad_stats, x)
        return torch.empty_like(x), coeffs.new_empty(coeffs.numel() if coeffs_grad else 0)

    def _setup_context(ctx, inputs, output):
        x, coeffs, bound, alpha, basis, boundary_form = inputs
        ctx.save_for_backward(x, coeffs)  # only x (and the d+1 coefficients), whatever the degree
        ctx.params = (bound, alpha, basis, boundary_form)

    def _backward(ctx, grad_y, grad_stats):
        x, coeffs = ctx.saved_tensors
        bound, alpha, basis, boundary_form = ctx.params
        if grad_y is None:
            grad_y = torch.zeros_like(x)
        if grad_stats is None:
            grad_stats = x.new_zeros(3, dtype=reference.compute_dtype(x.dtype))
        grad_x, grad_coeffs = torch.ops.pnn_ext.poly_act_backward(
            grad_y, grad_stats, x, coeffs, bound, alpha, basis, ctx.needs_input_grad[1], boundary_form)
        return (grad_x if ctx.needs_input_grad[0] else None,
                grad_coeffs if ctx.needs_input_grad[1] else None, None, None, None, None)

    torch.library.register_autograd("pnn_ext::poly_act", _backward, setup_context=_setup_context)

    def _no_double_backward(ctx, grad_x, grad_coeffs):
        raise RuntimeError("pnn_ext: poly_act has no second derivative yet (double backward, e.g. "
                           "torch.autograd.grad(..., create_graph=True) then differentiating the gradient); "
                           "impl='reference' supports it")

    # Without a formula, autograd let a second derivative through as None (with a
    # warning): a gradient penalty would silently drop the activation's part.
    torch.library.register_autograd("pnn_ext::poly_act_backward", _no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)

    # What poly_act() calls: the formula above as an autograd.Function that torch.func accepts.
    from .transforms import FusedPolyAct


_warned = False


def _fallback_warning(reason: str) -> None:
    global _warned
    if not _warned:
        warnings.warn(f"pnn_ext: {reason}; using the pure-PyTorch reference (slow)", RuntimeWarning,
                      stacklevel=3)
        _warned = True


def poly_act(x: torch.Tensor, coeffs: torch.Tensor, bound: float, alpha: float,
             basis: str = "chebyshev", impl: str = "auto",
             boundary_form: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """Polynomial activation with its boundary term, in one fused pass.

    Args:
        x: input of any shape, strides and floating dtype (float16, bfloat16,
            float32, float64).
        coeffs: (degree + 1,) coefficients c_0..c_d of p in t = x / bound; float32
            (float64 when x is float64), on x's device.
        bound: B > 0, the half-width of the fitted range.
        alpha: the boundary penalty starts at |x| = alpha * B.
        basis: "chebyshev" (Clenshaw) or "monomial" (Horner).
        impl: "auto" (the compiled op where it serves x's device, else the
            reference with a warning), "fused" (the compiled op, or an error) or
            "reference" (:func:`pnn_ext.reference.poly_act`, e.g. as a baseline).
        boundary_form: "exp" (the paper's f, below) or "quadratic" (f(e) = e^2
            for e > 0, the paper's suggested alternative), fused the same way.

    Returns:
        y: p(x / B), x's shape, dtype and memory format.
        stats: (3,) tensor [L, max|x|, fraction of |x| > B], float32 (float64 for
            float64 x). L = mean(f(|x| - alpha*B)) with f(e) = expm1(e) for
            0 < e <= 30 and continued linearly (slope e^30) beyond: its
            per-element values and sum are kept in float64, so a huge finite
            excess never overflows to NaN (float32 stats saturate to +inf only
            past |x| ~ 3e25). Only L carries a gradient.

    Numerics: accumulation in float32 (float64 for float64 x). Where p(t)
    overflows (|t|^d beyond the float range) the result is +-inf, never NaN; NaN
    inputs give NaN outputs and a NaN L.
    """
    if impl not in IMPLS:
        raise ValueError(f"pnn_ext: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    fused_here = x.device.type in _FUSED_DEVICES
    if impl == "fused" and not fused_here:
        raise RuntimeError(f"pnn_ext: impl='fused' but the compiled op is unavailable for {x.device.type} "
                           f"tensors ({_IMPORT_ERROR or 'extension built without kernels for it'})")
    if impl == "reference":
        return reference.poly_act(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    if fused_here and torch.compiler.is_compiling():
        # Dynamo cannot trace an autograd.Function with a jvp; the op's registered autograd serves it.
        return torch.ops.pnn_ext.poly_act(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    if fused_here:
        return FusedPolyAct.apply(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    _fallback_warning(f"compiled extension unavailable ({_IMPORT_ERROR})" if not HAVE_EXTENSION
                      else f"extension built without kernels for {x.device.type}")
    return reference.poly_act(x, coeffs, float(bound), float(alpha), basis, boundary_form)
