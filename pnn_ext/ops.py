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

import inspect
import math
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
IMPLS = ("auto", "fused", "reference", "decomposed")
_SECOND_DERIVATIVE = ("pnn_ext: poly_act has no second derivative yet (double backward, e.g. torch.autograd.grad(..., "
                      "create_graph=True) then differentiating the gradient, a hessian, jacfwd of jacrev); "
                      "impl='reference' supports it")


def _zero_stats_grad(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(3, dtype=reference.compute_dtype(x.dtype))


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

    # torch.func's transforms refuse the autograd.Function that register_autograd makes (it has
    # no setup_context): FusedPolyAct is the same formula as one they accept, with a forward-mode
    # rule (jvp) beside the backward; poly_act() calls it. The raw op keeps the registered formula
    # (torch.compile cannot trace a Function with a jvp, see poly_act). vmap rules on both ops make
    # a batched call one pass (poly_act) or one call per sample (poly_act_backward, whose
    # reductions are per sample) instead of PyTorch's fallback and its warning.
    class FusedPolyAct(torch.autograd.Function):
        """``torch.ops.pnn_ext.poly_act`` with its backward and forward-mode derivatives."""

        generate_vmap_rule = True  # the ops' own vmap rules (below) serve every stage

        @staticmethod
        def forward(x, coeffs, bound, alpha, basis, boundary_form):
            return torch.ops.pnn_ext.poly_act(x, coeffs, bound, alpha, basis, boundary_form)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, coeffs, bound, alpha, basis, boundary_form = inputs
            ctx.save_for_backward(x, coeffs)  # only x (and the d+1 coefficients), whatever the degree
            ctx.save_for_forward(x, coeffs)
            ctx.params = (bound, alpha, basis, boundary_form)

        @staticmethod
        def backward(ctx, grad_y, grad_stats):
            x, coeffs = ctx.saved_tensors
            bound, alpha, basis, boundary_form = ctx.params
            grad_y = torch.zeros_like(x) if grad_y is None else grad_y
            grad_stats = _zero_stats_grad(x) if grad_stats is None else grad_stats
            args = (grad_y, grad_stats, x, coeffs, bound, alpha, basis, ctx.needs_input_grad[1], boundary_form)
            # Grad mode is off in a backward unless it builds a graph (create_graph=True, torch.func's
            # transforms): then FusedPolyActBackward records the node that refuses a second derivative.
            # Otherwise nothing is recorded, and the op alone costs less Python per call.
            grad_x, grad_coeffs = (FusedPolyActBackward.apply(*args) if torch.is_grad_enabled()
                                   else torch.ops.pnn_ext.poly_act_backward(*args))
            return (grad_x if ctx.needs_input_grad[0] else None,
                    grad_coeffs if ctx.needs_input_grad[1] else None, None, None, None, None)

        @staticmethod
        def jvp(ctx, x_t, coeffs_t, *_):
            """y' = p'(x) x' + p_{c'}(x) (p is linear in its coefficients); L' = sum_j dL/dx_j x'_j;
            max|x| and the fraction outside [-B, B] carry no derivative, as in the backward."""
            x, coeffs = ctx.saved_tensors
            bound, alpha, basis, boundary_form = ctx.params
            acc = reference.compute_dtype(x.dtype)
            y_t, dl = torch.zeros_like(x), x.new_zeros((), dtype=acc)
            if x_t is not None:
                backward = torch.ops.pnn_ext.poly_act_backward
                # The backward with grad_y = x' is p'(x) x', elementwise; with grad_L = 1 it is dL/dx.
                y_t, _ = backward(x_t, _zero_stats_grad(x), x, coeffs, bound, alpha, basis, False, boundary_form)
                dl_dx, _ = backward(torch.zeros_like(x), torch.tensor([1.0, 0.0, 0.0], dtype=acc, device=x.device),
                                    x, coeffs, bound, alpha, basis, False, boundary_form)
                dl = (dl_dx.to(acc) * x_t.to(acc)).sum()
            if coeffs_t is not None:
                y_t = y_t + torch.ops.pnn_ext.poly_act(x, coeffs_t, bound, alpha, basis, boundary_form)[0]
            return y_t, torch.stack([dl, dl.new_zeros(()), dl.new_zeros(())])


    class FusedPolyActBackward(torch.autograd.Function):
        """``torch.ops.pnn_ext.poly_act_backward``, refusing a second derivative in one clear line
        (under torch.func as under autograd)."""

        generate_vmap_rule = True

        @staticmethod
        def forward(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad, boundary_form):
            return torch.ops.pnn_ext.poly_act_backward(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
                                                       boundary_form)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, *grads):
            raise RuntimeError(_SECOND_DERIVATIVE)

        @staticmethod
        def jvp(ctx, *tangents):
            raise RuntimeError(_SECOND_DERIVATIVE)


    def _sample(t: torch.Tensor, dim: int | None, i: int) -> torch.Tensor:
        return t if dim is None else t.select(dim, i)


    @torch.library.register_vmap("pnn_ext::poly_act")
    def _poly_act_vmap(info, in_dims, x, coeffs, bound, alpha, basis, boundary_form="exp"):
        x_dim, coeffs_dim = in_dims[0], in_dims[1]
        op = torch.ops.pnn_ext.poly_act
        if coeffs_dim is not None:  # coefficients per sample (e.g. an ensemble): one call each
            outs = [op(_sample(x, x_dim, i), coeffs.select(coeffs_dim, i), bound, alpha, basis, boundary_form)
                    for i in range(info.batch_size)]
            return (torch.stack([y for y, _ in outs]), torch.stack([s for _, s in outs])), (0, 0)
        # y is elementwise: one pass over the whole batch; the statistics are reduced per sample.
        y, _ = op(x, coeffs, bound, alpha, basis, boundary_form)
        samples = x.movedim(x_dim, 0).detach().reshape(info.batch_size, -1)
        acc = reference.compute_dtype(x.dtype)
        ax = samples.to(acc).abs()
        n = max(samples.shape[1], 1)
        max_abs = ax.amax(1) if samples.shape[1] else ax.new_zeros(info.batch_size)
        frac = (ax > bound).sum(1).double() / n
        loss = reference.boundary_term(samples.to(acc), bound, alpha, boundary_form, per_row=True)
        return (y, torch.stack([loss.to(acc), max_abs, frac.to(acc)], dim=1)), (x_dim, 0)


    @torch.library.register_vmap("pnn_ext::poly_act_backward")
    def _poly_act_backward_vmap(info, in_dims, grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
                                boundary_form="exp"):
        # One call per sample: L, its gradient's 1/N and the coefficient gradients are
        # per-sample reductions, and the per-sample call gives exactly the unbatched result.
        dims = in_dims[:4]
        outs = [torch.ops.pnn_ext.poly_act_backward(*(_sample(t, d, i) for t, d in zip((grad_y, grad_stats, x, coeffs),
                                                                                         dims)),
                                                    bound, alpha, basis, coeffs_grad, boundary_form)
                for i in range(info.batch_size)]
        return (torch.stack([g for g, _ in outs]), torch.stack([c for _, c in outs])), (0, 0)

    # Function.apply binds its arguments to forward's signature on every call (for setup_context);
    # inspect.signature reads __signature__ when set, instead of rebuilding the signature each time.
    for _fn in (FusedPolyAct, FusedPolyActBackward):
        _fn.forward.__signature__ = inspect.signature(_fn.forward)

    torch.library.register_autograd("pnn_ext::poly_act", FusedPolyAct.backward,
                                    setup_context=FusedPolyAct.setup_context)
    # Without a formula, autograd let a second derivative through as None (with a
    # warning): a gradient penalty would silently drop the activation's part.
    torch.library.register_autograd("pnn_ext::poly_act_backward", FusedPolyActBackward.backward,
                                    setup_context=FusedPolyActBackward.setup_context)


def decomposed(x: torch.Tensor, coeffs: torch.Tensor, bound: float, alpha: float, basis: str = "chebyshev",
               boundary_form: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`poly_act` in plain PyTorch operations, for inductor to fuse with the activation's
    neighbours (BatchNorm, bias, residual add) under ``torch.compile``, where the fused op is
    opaque to it. Same (y, stats) and gradients as the op, to float32 rounding: y with the
    overflow rule (+-inf, never NaN), L summed in float64 with its linear continuation, the
    detached max|x| and fraction outside [-B, B]; its backward is autograd's through these
    operations. Eager, it is slow (one kernel per step of the recurrence). ``impl="decomposed"``
    of :func:`poly_act` runs it."""
    reference.check_args(x, coeffs, bound, alpha, basis, boundary_form)
    acc = reference.compute_dtype(x.dtype)
    xa = x.to(acc)
    t = xa * (1.0 / bound)
    y = reference.overflow_fixup(reference.poly_eval(t, coeffs, basis), xa, t, coeffs).to(x.dtype)
    # e's clamps keep a NaN x's NaN in L (clamp propagates NaN) without the reference's where().
    e = xa.abs() - alpha * bound
    if boundary_form == "quadratic":
        term = e.clamp(min=0).square()
    else:
        cap = reference.BOUNDARY_EXP_CAP
        term = torch.expm1(e.clamp(0, cap)) + math.exp(cap) * (e - cap).clamp(min=0)
    n = max(x.numel(), 1)
    ax = xa.detach().abs()
    max_abs = ax.amax() if x.numel() else ax.new_zeros(())
    frac = (ax > bound).sum(dtype=torch.float64) / n
    stats = torch.stack([(term.sum(dtype=torch.float64) / n).to(acc), max_abs, frac.to(acc)])
    return y, stats


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
            "reference" (:func:`pnn_ext.reference.poly_act`, e.g. as a baseline) or
            "decomposed" (:func:`decomposed`: plain operations that inductor can fuse with
            their neighbours under ``torch.compile``; one kernel per operation in eager mode).
            "auto" keeps the fused op under ``torch.compile``: on CPU the compiled model is
            faster with it (bench/train_step.py measures both).
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
    if impl == "decomposed":
        return decomposed(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    if fused_here and torch.compiler.is_compiling():
        # Dynamo cannot trace an autograd.Function with a jvp; the op's registered autograd serves it.
        return torch.ops.pnn_ext.poly_act(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    if fused_here:
        return FusedPolyAct.apply(x, coeffs, float(bound), float(alpha), basis, boundary_form)
    _fallback_warning(f"compiled extension unavailable ({_IMPORT_ERROR})" if not HAVE_EXTENSION
                      else f"extension built without kernels for {x.device.type}")
    return reference.poly_act(x, coeffs, float(bound), float(alpha), basis, boundary_form)
