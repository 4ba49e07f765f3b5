"""Benchmark cases shared by the pytest-benchmark suite and the report.

Five implementations of one polynomial-activation layer with its boundary term:

  fused      pnn_ext.poly_act (one pass forward, one pass backward)
  lean       torch.compile(lean): the baseline a user would write, a Clenshaw loop in
             t = x / B and expm1(clamp(|x| - alpha*B, min=0)).mean(), nothing else (no
             range statistics, no overflow rules); the primary baseline of every table
  compiled   torch.compile(pnn_ext.reference.poly_act): the reference with its statistics
             and overflow rules, which no user writes; a second column
  reference  pnn_ext.reference.poly_act in eager PyTorch (Clenshaw, one op per step)
  power      the published approach: sum(coeffs_x * x.unsqueeze(-1).pow(exponents)) in x,
             boundary loss as a separate eager expression
Compilation is warm-up, not timed.

Modes: forward (the training forward: autograd records), backward (the backward of
one forward done in an untimed setup), full (both). Inputs: N(0, (B/4)^2) clamped
to +-1.1 B, so about 4.6 % of them lie past alpha*B = B/2 as in a network whose
boundary loss mostly holds (and the power basis stays below float32 overflow).
"""
from __future__ import annotations

import functools
import os

import torch

import error_bounds
import pnn_ext
from pnn_ext import reference

VARIANTS = ("fused", "lean", "compiled", "reference", "power")
BASELINE = "lean"  # the baseline of every ratio in the tables
LABELS = {"fused": "fused", "lean": "torch.compile(lean)", "compiled": "torch.compile(reference)",
          "reference": "eager reference", "power": "power basis"}  # column names of the variants
# Memory layouts of x and grad_y (see Case._layout): the fused step should cost about the
# same in each (bench/layouts.py reports them against dense).
LAYOUTS = ("dense", "grad_broadcast", "transposed", "grad_transposed", "sliced", "channels_last")
MODES = ("forward", "backward", "full")
DEGREES = (2, 4, 8, 16, 22)
SIZES = {"64K": 64 * 2 ** 10, "1M": 2 ** 20, "16M": 16 * 2 ** 20}
# Variants that compute in x's own dtype (their rounding bounds use its unit roundoff).
OWN_DTYPE = ("power", "lean")


def degrees_from_env() -> tuple[int, ...]:
    """PNN_BENCH_DEGREES="2,22" picks degrees (default: all of DEGREES)."""
    spec = os.environ.get("PNN_BENCH_DEGREES")
    return tuple(int(d) for d in spec.split(",")) if spec else DEGREES


def sizes_from_env() -> dict[str, int]:
    """PNN_BENCH_SIZES="64K,1M" picks sizes; "tiny" is CI's smoke size (4096)."""
    spec = os.environ.get("PNN_BENCH_SIZES")
    if not spec:
        return dict(SIZES)
    out = {}
    for name in spec.split(","):
        out[name] = 4096 if name == "tiny" else SIZES[name]
    return out


def power_poly_act(x: torch.Tensor, coeffs_x: torch.Tensor, bound: float, alpha: float):
    """The published evaluation: all powers of x materialized, boundary loss apart."""
    exponents = torch.arange(coeffs_x.numel(), device=x.device, dtype=x.dtype)
    y = (coeffs_x * x.unsqueeze(-1).pow(exponents)).sum(-1)
    boundary = torch.mean(torch.exp(torch.clamp(x.abs() - alpha * bound, min=0)) - 1)
    return y, boundary


def lean(x: torch.Tensor, c: torch.Tensor, bound: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user writes: p(x/B) by Clenshaw's recurrence, and the boundary term."""
    t = x / bound
    b1 = torch.zeros_like(t)
    b2 = torch.zeros_like(t)
    for k in range(c.numel() - 1, 0, -1):
        b1, b2 = 2 * t * b1 - b2 + c[k], b1
    y = t * b1 - b2 + c[0]
    return y, torch.expm1(torch.clamp(x.abs() - alpha * bound, min=0)).mean()


@functools.cache
def compiled_reference():
    return torch.compile(reference.poly_act)


@functools.cache
def compiled_lean():
    return torch.compile(lean)


class Case:
    """One layer: input, coefficients, incoming gradients, for a degree/size/dtype/device."""

    def __init__(self, degree: int, numel: int, dtype=torch.float32, device="cpu", seed=0, layout="dense"):
        self.degree, self.numel, self.dtype, self.device, self.layout = degree, numel, dtype, device, layout
        self.bound, self.alpha = pnn_ext.preset(degree)
        fit = pnn_ext.fit("relu", degree, self.bound)
        self.coeffs = torch.tensor(fit.coeffs, dtype=torch.float32, device=device)
        self.coeffs_x = torch.tensor(fit.monomial_coeffs("low"), dtype=dtype, device=device)
        g = torch.Generator().manual_seed(seed)

        def values(n):
            x = (torch.randn(n, generator=g) * self.bound / 4).clamp(-1.1 * self.bound, 1.1 * self.bound)
            return x.to(device=device, dtype=dtype)

        x, grad_y = self._layout(layout, numel, values, lambda n: torch.randn(n, generator=g).to(device, dtype))
        self.x = x.requires_grad_()
        self.grad_y = grad_y
        self.grad_boundary = torch.tensor(1000.0, device=device)  # the paper's lambda

    @staticmethod
    def _layout(layout, n, values, noise):
        """(x, grad_y) of n elements (a power of two >= 64) in one of LAYOUTS:
        dense            both contiguous
        grad_broadcast   grad_y one value expanded (stride 0), as autograd gives for y.sum()
        transposed       x and grad_y a transposed (r, c) matrix, dense in memory
        grad_transposed  x contiguous (r, c), grad_y transposed against it
        sliced           x every other column of a (r, 2c) matrix (not dense), grad_y contiguous
        channels_last    x and grad_y (N, 16, 8, 8) in channels_last
        """
        r = 2 ** (n.bit_length() // 2)
        c = n // r
        if layout == "dense":
            return values(n), noise(n)
        if layout == "grad_broadcast":
            return values(n), torch.ones((), dtype=noise(1).dtype, device=noise(1).device).expand(n)
        if layout == "transposed":
            return values(n).view(c, r).t(), noise(n).view(c, r).t()
        if layout == "grad_transposed":
            return values(n).view(r, c), noise(n).view(c, r).t()
        if layout == "sliced":
            return values(2 * n).view(r, 2 * c)[:, ::2], noise(n).view(r, c)
        if layout == "channels_last":
            shape = (n // 1024, 16, 8, 8)
            return (values(n).view(shape).contiguous(memory_format=torch.channels_last),
                    noise(n).view(shape).contiguous(memory_format=torch.channels_last))
        raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")

    def forward(self, variant: str):
        """(y, boundary term) of one variant, recorded for autograd."""
        if variant == "fused":
            y, stats = pnn_ext.poly_act(self.x, self.coeffs, self.bound, self.alpha, "chebyshev")
            return y, stats[0]
        if variant == "reference":
            y, stats = reference.poly_act(self.x, self.coeffs, self.bound, self.alpha, "chebyshev")
            return y, stats[0]
        if variant == "compiled":
            y, stats = compiled_reference()(self.x, self.coeffs, self.bound, self.alpha, "chebyshev")
            return y, stats[0]
        if variant == "lean":
            return compiled_lean()(self.x, self.coeffs, self.bound, self.alpha)
        if variant == "power":
            return power_poly_act(self.x, self.coeffs_x, self.bound, self.alpha)
        raise ValueError(f"unknown variant {variant!r}")

    def backward(self, outputs):
        y, boundary = outputs
        return torch.autograd.grad((y, boundary), self.x,
                                   (self.grad_y, self.grad_boundary.to(boundary.dtype)))[0]

    def full(self, variant: str):
        return self.backward(self.forward(variant))

    def check_agreement(self, variant: str) -> None:
        """y, L and grad_x of ``variant`` against float64 closed forms (numpy's p, p' and
        f, f'), element by element within the rounding bounds of bench/error_bounds.py
        (before any timing). grad_x is judged in three runs: its polynomial part alone
        (g_L = 0), its boundary part alone (grad_y = 0) and both, so neither hides the other.
        The power variant evaluates monomial coefficients in x: its bound adds theirs; power and
        lean compute in x's own dtype (no float32 accumulation for bfloat16): their bounds say so."""
        x, c, b, a = self.x.detach(), self.coeffs, self.bound, self.alpha
        y, boundary = self.forward(variant)
        error_bounds.check(f"{variant} y", y, error_bounds.poly_value64(x, c, b, "chebyshev"),
                           self._value_bound(variant), error_bounds.inside_interval(x, b))
        want = error_bounds.boundary_closed_form(x, b, a, "exp")
        tol = (error_bounds.boundary_value_bound(x, b, a, "exp", x.dtype, own_dtype=variant in OWN_DTYPE)
               + error_bounds.compute_roundoff(x.dtype) * want)
        if not abs(float(boundary.detach()) - want) <= tol:
            raise AssertionError(f"{variant} boundary term {float(boundary.detach())} != {want} (bound {tol:.2e})")
        grad_l = float(self.grad_boundary)
        for part, grad_y, g_l in (("polynomial part", self.grad_y, 0.0), ("boundary part", 0 * self.grad_y, grad_l),
                                  ("both parts", self.grad_y, grad_l)):
            y, boundary = self.forward(variant)
            gx, = torch.autograd.grad((y, boundary), self.x, (grad_y, torch.tensor(g_l, dtype=boundary.dtype,
                                                                                   device=boundary.device)))
            want = (error_bounds.poly_grad64(x, grad_y, c, b, "chebyshev")
                    + error_bounds.boundary_grad64(x, g_l, b, a, "exp"))
            tol = error_bounds.grad_x_bound(x, grad_y, g_l, c, b, a, "chebyshev", "exp", x.dtype)
            if variant == "power":  # evaluated in x's own dtype
                tol = (tol + error_bounds.poly_grad_bound(x, grad_y, self.coeffs_x, 1.0, "monomial", x.dtype, True)
                       + error_bounds.boundary_grad_bound(x, g_l, b, a, "exp", x.dtype, True))
            elif variant == "lean":  # Clenshaw and the boundary slope in x's own dtype
                tol = (tol + error_bounds.poly_grad_bound(x, grad_y, c, b, "chebyshev", x.dtype, True)
                       + error_bounds.boundary_grad_bound(x, g_l, b, a, "exp", x.dtype, True))
            error_bounds.check(f"{variant} grad_x, {part}", gx, want, tol, error_bounds.inside_interval(x, b))

    def _value_bound(self, variant):
        x = self.x.detach()
        tol = error_bounds.value_bound(x, self.coeffs, self.bound, "chebyshev", x.dtype)
        if variant == "power":  # the monomial sum in x, in x's own dtype, with coefficients rounded to it
            tol = tol + error_bounds.value_bound(x, self.coeffs_x, 1.0, "monomial", x.dtype, own_dtype=True)
        elif variant == "lean":  # Clenshaw in x's own dtype
            tol = tol + error_bounds.value_bound(x, self.coeffs, self.bound, "chebyshev", x.dtype, own_dtype=True)
        return tol

    def runner(self, variant: str, mode: str):
        """(setup, target) for a timing loop: setup's result is passed to target."""
        if mode == "forward":
            return (lambda: ()), (lambda: self.forward(variant))
        if mode == "backward":
            return (lambda: (self.forward(variant),)), self.backward
        if mode == "full":
            return (lambda: ()), (lambda: self.full(variant))
        raise ValueError(f"unknown mode {mode!r}")

    # Traffic and arithmetic models of the fused kernels, used to express every variant's
    # time as effective bandwidth and work rate (same numerator for all).
    def bytes_moved(self, mode: str) -> int:
        per = {"forward": 2, "backward": 3, "full": 5}[mode]  # x,y | x,grad_y,grad_x | both
        return per * self.numel * self.x.element_size()

    def flops(self, mode: str) -> int:
        modes = ("forward", "backward") if mode == "full" else (mode,)
        return sum(flops_per_element(self.degree, m) for m in modes) * self.numel


# The arithmetic of the fused CPU kernels per element, Chebyshev basis, float32: the
# polynomial's vector operations as csrc/polyact.h writes them (poly_value_n), and the
# scaling around them in csrc/cpu/polyact_cpu_impl.h. Range statistics, the boundary term,
# NaN/overflow checks and masks are bookkeeping, not counted: they are what keeps the op
# from its arithmetic limit. Update this with the kernels (bench/roofline.py and the
# GFLOP/s columns of docs/benchmarks.md use it).
def _clenshaw(degree: int) -> dict[str, int]:
    """poly_value_n at one degree D: 2t (add); D - 1 steps b = 2t b1 + (c_k - b2) (1 FMA + 1 sub);
    p = t b1 + (c_0 - b2) (1 FMA + 1 sub). Degree 0 is the constant: no arithmetic."""
    return {"fma": degree, "add": degree + 1} if degree >= 1 else {"fma": 0, "add": 0}


def op_counts(degree: int, mode: str) -> dict[str, int]:
    """{"fma", "mul", "add"}: vector operations per element of one forward or backward.

    forward   t = x / B (mul), Clenshaw of degree d over the coefficients
    backward  t = x / B (mul), Clenshaw of degree d - 1 over the derivative's coefficients
              (derivative_coeffs in csrc/polyact_common.h, 1/B folded in), grad_y * p' (mul)
    """
    if mode == "forward":
        return {**_clenshaw(degree), "mul": 1}
    if mode == "backward":
        return {**_clenshaw(degree - 1), "mul": 2}
    raise ValueError(f"mode must be 'forward' or 'backward', got {mode!r}")


def flops_per_element(degree: int, mode: str) -> int:
    """Flops of op_counts: an FMA is 2, a multiply or an add 1."""
    n = op_counts(degree, mode)
    return 2 * n["fma"] + n["mul"] + n["add"]


def saved_bytes(case: Case, variant: str) -> tuple[int, int]:
    """(bytes, count) of the tensors autograd saves for one forward of one layer."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        case.forward(variant)
    seen, total = set(), 0
    big = 0
    for t in saved:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
        big += t.numel() >= case.numel
    return total, big
