"""Pure-PyTorch polynomial activation: the oracle of the tests, the fallback when
the compiled extension is missing, and the "reference" of the benchmarks.

Same semantics as the fused op (csrc/polyact.h documents the math):

    y     = p(x / B)                       monomial (Horner) or Chebyshev (Clenshaw) basis
    stats = [L, max|x|, fraction of |x| > B]
    L     = mean_j f(|x_j| - alpha*B),  f(e) = 0 (e <= 0), expm1(e) (0 < e <= E),
                                        expm1(E) + exp(E) (e - E) (e > E),  E = 30
            (boundary_form="quadratic": f(e) = e^2 for e > 0, 0 otherwise)

computed in float32 (float64 for float64 inputs; L always summed in float64) and
returned in x's dtype (stats in the computation dtype). A NaN coefficient makes y NaN
everywhere (no overflow fix-up turns it into inf). Gradients come from
PyTorch's autograd through these expressions.
"""
from __future__ import annotations

import math

import torch

BOUNDARY_EXP_CAP = 30.0
BASES = ("monomial", "chebyshev")
BOUNDARY_FORMS = ("exp", "quadratic")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 computes in float64, every other floating type in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_args(x: torch.Tensor, coeffs: torch.Tensor, bound: float, alpha: float, basis: str,
               boundary_form: str = "exp") -> None:
    """The fused op's argument checks, with the same messages."""
    if not x.is_floating_point():
        raise RuntimeError(f"pnn_ext: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if coeffs.dim() != 1:
        raise RuntimeError(f"pnn_ext: coeffs must be 1-D (degree + 1 entries), got shape {tuple(coeffs.shape)}")
    if coeffs.numel() < 2:
        raise RuntimeError(f"pnn_ext: degree must be >= 1, i.e. coeffs needs >= 2 entries, got {coeffs.numel()}")
    if coeffs.dtype != compute_dtype(x.dtype):
        raise RuntimeError(f"pnn_ext: coeffs must be {compute_dtype(x.dtype)} for x of dtype {x.dtype}, "
                           f"got {coeffs.dtype}")
    if coeffs.device != x.device:
        raise RuntimeError(f"pnn_ext: coeffs must be on x's device {x.device}, got {coeffs.device}")
    if not (math.isfinite(bound) and bound > 0):
        raise RuntimeError(f"pnn_ext: bound (B) must be finite and > 0, got {bound}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise RuntimeError(f"pnn_ext: alpha must be finite and > 0, got {alpha}")
    if basis not in BASES:
        raise RuntimeError(f"pnn_ext: basis must be 'monomial' or 'chebyshev', got '{basis}'")
    if boundary_form not in BOUNDARY_FORMS:
        raise RuntimeError(f"pnn_ext: boundary_form must be 'exp' or 'quadratic', got '{boundary_form}'")


def check_backward_args(grad_y: torch.Tensor, grad_stats: torch.Tensor, x: torch.Tensor) -> None:
    """The fused backward op's checks of its incoming gradients, with the same messages."""
    if grad_y.shape != x.shape:
        raise RuntimeError(f"pnn_ext: grad_y must have x's shape {list(x.shape)}, got {list(grad_y.shape)}")
    if grad_y.dtype != x.dtype:
        raise RuntimeError(f"pnn_ext: grad_y must have x's dtype {x.dtype}, got {grad_y.dtype}")
    if grad_y.device != x.device:
        raise RuntimeError(f"pnn_ext: grad_y must be on x's device {x.device}, got {grad_y.device}")
    if grad_stats.dim() != 1 or grad_stats.numel() != 3:
        raise RuntimeError(f"pnn_ext: grad_stats must have shape (3,), got {list(grad_stats.shape)}")
    if grad_stats.device != x.device:
        raise RuntimeError(f"pnn_ext: grad_stats must be on x's device {x.device}, got {grad_stats.device}")


def poly_eval(t: torch.Tensor, coeffs: torch.Tensor, basis: str) -> torch.Tensor:
    """p(t) = sum_k c_k phi_k(t): Horner (monomial) or Clenshaw (Chebyshev)."""
    d = coeffs.numel() - 1
    if basis == "monomial":
        p = coeffs[d].expand_as(t)
        for k in range(d - 1, -1, -1):
            p = p * t + coeffs[k]
        return p
    b1, b2 = coeffs[d].expand_as(t), torch.zeros_like(t)
    for k in range(d - 1, 0, -1):
        b1, b2 = 2 * t * b1 - b2 + coeffs[k], b1
    return t * b1 - b2 + coeffs[0]


def overflow_fixup(p: torch.Tensor, x: torch.Tensor, t: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Where evaluation overflowed into NaN for a non-NaN x, return +-inf with the sign
    of the leading term (lead * t^m, m = index of the highest non-zero coefficient).
    A NaN coefficient makes p NaN everywhere: that NaN is not an overflow and stays."""
    bad = p.isnan() & ~x.isnan() & ~coeffs.detach().isnan().any()
    # Index of the highest non-zero coefficient, as a tensor (no host sync, no graph break
    # under torch.compile).
    k = torch.arange(coeffs.numel(), device=coeffs.device)
    m = torch.where(coeffs != 0, k, torch.zeros_like(k)).max()
    lead = coeffs.detach().gather(0, m.reshape(1)).squeeze(0)  # not coeffs[m]: a tensor index is an item()
    sign = torch.where((t < 0) & (m % 2 == 1), -1.0, 1.0) * torch.sign(lead)
    return torch.where(bad, sign.to(p.dtype) * math.inf, p)


def boundary_term(x: torch.Tensor, bound: float, alpha: float, boundary_form: str = "exp",
                  per_row: bool = False) -> torch.Tensor:
    """L = mean f(|x| - alpha*B), summed in float64; 0 for an empty x, NaN if x has NaN.
    ``per_row``: x is (samples, elements), one L per sample (the op's vmap rule)."""
    e = x.double().abs() - alpha * bound
    if boundary_form == "quadratic":
        term = torch.where(e > 0, e.clamp(min=0).square(), torch.where(e.isnan(), e, torch.zeros_like(e)))
        return _mean(term, per_row)
    # The linear part as relu(e - E), not e - min(e, E): the latter's gradient is
    # exp(E) - exp(E) added to exp(e) in float64, which loses ~1e-7 of it (1e13 + 7e3).
    term = torch.expm1(e.clamp(max=BOUNDARY_EXP_CAP)) + math.exp(BOUNDARY_EXP_CAP) * (e - BOUNDARY_EXP_CAP).clamp(min=0)
    term = torch.where(e > 0, term, torch.where(e.isnan(), e, torch.zeros_like(e)))
    return _mean(term, per_row)


def _mean(term: torch.Tensor, per_row: bool) -> torch.Tensor:
    if per_row:
        return term.sum(1) / max(term.shape[1], 1)
    return term.sum() / max(term.numel(), 1)


def poly_act(x: torch.Tensor, coeffs: torch.Tensor, bound: float, alpha: float,
             basis: str = "chebyshev", boundary_form: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``torch.ops.pnn_ext.poly_act``: returns (y, stats)."""
    check_args(x, coeffs, bound, alpha, basis, boundary_form)
    acc = compute_dtype(x.dtype)
    xa = x.to(acc)
    t = xa * (1.0 / bound)
    y = overflow_fixup(poly_eval(t, coeffs, basis), xa, t, coeffs).to(x.dtype)
    ax = xa.detach().abs()
    n = max(x.numel(), 1)
    max_abs = ax.max() if x.numel() else ax.new_zeros(())
    frac = (ax > bound).sum().double() / n
    stats = torch.stack([boundary_term(xa, bound, alpha, boundary_form).to(acc), max_abs.to(acc), frac.to(acc)])
    return y, stats


def poly_act_backward(grad_y: torch.Tensor, grad_stats: torch.Tensor, x: torch.Tensor,
                      coeffs: torch.Tensor, bound: float, alpha: float, basis: str,
                      coeffs_grad: bool, boundary_form: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``torch.ops.pnn_ext.poly_act_backward``, by autograd through poly_act."""
    check_backward_args(grad_y, grad_stats, x)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        cr = coeffs.detach().requires_grad_(coeffs_grad)
        y, stats = poly_act(xr, cr, bound, alpha, basis, boundary_form)
        # Only stats[0] (the boundary term) carries a gradient.
        inputs = (xr, cr) if coeffs_grad else (xr,)
        grads = torch.autograd.grad((y, stats[0]), inputs, (grad_y, grad_stats[0]), allow_unused=True)
    gx = grads[0] if grads[0] is not None else torch.zeros_like(x)
    gc = grads[1] if coeffs_grad else coeffs.new_empty(0)
    return gx.to(x.dtype), gc
