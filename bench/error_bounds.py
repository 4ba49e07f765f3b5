"""Rounding-error bounds of the polynomial activation, per element, and the comparison
that judges an evaluation against float64 with them.

One rule for the tests (tests/test_ops.py and the others that compare with float64) and
for the benchmark's agreement check (bench/cases.py); docs/numerics.md states it:

    |y - p(t)|        <= k_d u S_0(t) + 2u |t| |p'(t)| + u_out |p(t)|
    |grad_poly - g p'(t)/B| <= |g| (k_d u S_1(t) + 2u |t| |p''(t)|) / B + (2u + u_out) |g p'(t)| / B
    |grad_bnd - g_L s f'(e)/N| <= |g_L|/N (c_f u |f'(e)| + |f''(e)| de) + u_out |g_L f'(e)| / N

with S_0 = sum_k |c_k| |phi_k(t)|, S_1 = sum_k |c_k| |phi_k'(t)| (the condition sums of the
value and of dp/dt), u the unit roundoff of the computation dtype (float32 for every
input dtype but float64), u_out that of x's dtype (the rounding of the result), k_d the
degree factor (DEGREE_FACTOR below), t = x * (1/B) rounded twice (2u |t|), the excess
e = |x| - alpha*B rounded to de = 2u (|x| + alpha*B) and c_f the slope's own rounding.
Every quantity on the right is evaluated in float64 from the float64 inputs.

The bound is checked inside [-B, B] and outside it apart (``check`` names the region), so
a fault inside the fit's interval is not hidden by the larger values outside it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


# Degree factor k_d of the evaluation error: Horner's and Clenshaw's rounding errors
# are each bounded by gamma_{2d} ~ 2d u times the condition sum (Higham, Accuracy and
# Stability, 2nd ed., 5.1 and 3.1); the extra 2 covers d = 1 and the fused multiply-add
# versus separate multiply and add of the kernels. Measured worst ratios error/bound are
# in docs/numerics.md (well below 1 at every degree 1-128).
def degree_factor(degree: int) -> float:
    return 2.0 * degree + 2.0


# Rounding of the boundary slope: exp in float32 on the CPU's vector path is ATen's
# exp_u20 (20 ulp), then a product with g_L/N (itself rounded): 24 u in all; 2e is exact
# but for its product (4 u).
SLOPE_ULPS = {"exp": 24.0, "quadratic": 4.0}
BOUNDARY_EXP_CAP = 30.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1 to the next number of ``dtype``."""
    return torch.finfo(dtype).eps / 2


def underflow_step(dtype: torch.dtype) -> float:
    """Half the spacing of ``dtype``'s subnormals: the absolute rounding error of a result
    below its smallest normal number (float16 gradients of size 1e-5 land there)."""
    info = torch.finfo(dtype)
    return info.eps * info.tiny / 2


def compute_roundoff(dtype: torch.dtype) -> float:
    """u of the dtype the evaluation runs in: float64 for float64, float32 otherwise."""
    return unit_roundoff(torch.float64 if dtype == torch.float64 else torch.float32)


def _as_numpy(v) -> np.ndarray:
    if torch.is_tensor(v):
        return v.detach().double().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def condition_sums(t: np.ndarray, coeffs: np.ndarray, basis: str) -> tuple[np.ndarray, np.ndarray]:
    """(S_0, S_1) = (sum_k |c_k||phi_k(t)|, sum_k |c_k||phi_k'(t)|), with phi_k = t^k or
    T_k(t) and phi_k' = d phi_k / dt; one pass over k, O(len(t)) memory."""
    a = np.abs(coeffs)
    s0 = np.full_like(t, a[0])
    s1 = np.zeros_like(t)
    if basis == "monomial":
        power_km1 = np.ones_like(t)            # t^(k-1)
        for k in range(1, len(a)):
            s1 += a[k] * k * np.abs(power_km1)
            power_km1 = power_km1 * t
            s0 += a[k] * np.abs(power_km1)
        return s0, s1
    if basis != "chebyshev":
        raise ValueError(f"basis must be 'monomial' or 'chebyshev', got {basis!r}")
    # T_k' = k U_{k-1}: T and U by their three-term recurrences.
    t_prev, t_k = np.ones_like(t), t.copy()                # T_0, T_1
    u_prev, u_k = np.zeros_like(t), np.ones_like(t)        # U_{-1}, U_0
    for k in range(1, len(a)):
        s0 += a[k] * np.abs(t_k)
        s1 += a[k] * k * np.abs(u_k)
        t_prev, t_k = t_k, 2 * t * t_k - t_prev
        u_prev, u_k = u_k, 2 * t * u_k - u_prev
    return s0, s1


def _derivatives(t: np.ndarray, coeffs: np.ndarray, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, p', p'') in t, float64, from numpy's own polynomial modules (not pnn_ext)."""
    if basis == "chebyshev":
        der, val = np.polynomial.chebyshev.chebder, np.polynomial.chebyshev.chebval
    else:
        der, val = np.polynomial.polynomial.polyder, np.polynomial.polynomial.polyval
    d1 = der(coeffs) if len(coeffs) > 1 else np.zeros(1)
    d2 = der(d1) if len(d1) > 1 else np.zeros(1)
    return val(t, coeffs), val(t, d1), val(t, d2)


def _roundoffs(dtype: torch.dtype, own_dtype: bool) -> tuple[float, float]:
    """(u, u_out): ``own_dtype`` when the evaluation runs in x's dtype itself (the power
    variant of bench/cases.py), else in float32 (float64 for float64)."""
    return (unit_roundoff(dtype) if own_dtype else compute_roundoff(dtype)), unit_roundoff(dtype)


def value_bound(x, coeffs, bound: float, basis: str, dtype: torch.dtype, own_dtype: bool = False) -> np.ndarray:
    """Per-element bound on |y - p(x/B)| for y evaluated from x of ``dtype``."""
    u, u_out = _roundoffs(dtype, own_dtype)
    c = _as_numpy(coeffs)
    t = _as_numpy(x) / bound
    with np.errstate(over="ignore", invalid="ignore"):
        s0, _ = condition_sums(t, c, basis)
        p, p1, _ = _derivatives(t, c, basis)
        return (degree_factor(len(c) - 1) * u * s0 + 2 * u * np.abs(t * p1) + u_out * np.abs(p)
                + underflow_step(dtype))


def poly_grad_bound(x, grad_y, coeffs, bound: float, basis: str, dtype: torch.dtype,
                    own_dtype: bool = False) -> np.ndarray:
    """Per-element bound on |grad_x - grad_y p'(x/B)/B| (the polynomial part of grad_x)."""
    u, u_out = _roundoffs(dtype, own_dtype)
    c = _as_numpy(coeffs)
    t = _as_numpy(x) / bound
    g = np.abs(_as_numpy(grad_y))
    with np.errstate(over="ignore", invalid="ignore"):
        _, s1 = condition_sums(t, c, basis)
        _, p1, p2 = _derivatives(t, c, basis)
        own = degree_factor(len(c) - 1) * u * s1 + 2 * u * np.abs(t * p2)
        return g * own / bound + (2 * u + u_out) * g * np.abs(p1) / bound + underflow_step(dtype)


def boundary_slopes(x, bound: float, alpha: float, form: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(e, f'(e), f''(e)) per element in float64, from the closed forms of docs/numerics.md."""
    e = np.abs(_as_numpy(x)) - alpha * bound
    if form == "quadratic":
        return e, np.where(e > 0, 2 * e, 0.0), np.where(e > 0, 2.0, 0.0)
    if form != "exp":
        raise ValueError(f"form must be 'exp' or 'quadratic', got {form!r}")
    slope = np.where(e > 0, np.exp(np.minimum(e, BOUNDARY_EXP_CAP)), 0.0)
    return e, slope, np.where((e > 0) & (e < BOUNDARY_EXP_CAP), slope, 0.0)


def boundary_grad_bound(x, grad_boundary: float, bound: float, alpha: float, form: str,
                        dtype: torch.dtype, own_dtype: bool = False) -> np.ndarray:
    """Per-element bound on |grad_x - g_L sign(x) f'(e) / N| (the boundary part of grad_x).
    Where |e| is within its own rounding, the side of alpha*B is not decided: the bound
    then admits either side's slope."""
    u, u_out = _roundoffs(dtype, own_dtype)
    ax = np.abs(_as_numpy(x))
    scale = abs(grad_boundary) / max(ax.size, 1)
    with np.errstate(invalid="ignore", over="ignore"):  # infinite x: an infinite bound
        e, f1, f2 = boundary_slopes(x, bound, alpha, form)
        de = 2 * u * (ax + alpha * bound)
        _, f1_edge, _ = boundary_slopes(np.full_like(ax, alpha * bound) + de, bound, alpha, form)
        undecided = np.where(np.abs(e) <= de, f1_edge, 0.0)
        return scale * (SLOPE_ULPS[form] * u * f1 + f2 * de + u_out * f1 + undecided) + underflow_step(dtype)


def boundary_value_bound(x, bound: float, alpha: float, form: str, dtype: torch.dtype,
                         own_dtype: bool = False) -> float:
    """Bound on |L - mean f(e)|: each term's rounding (its slope times de, and c_f u of
    itself), summed in float64 by the fused op and the reference (gamma_n of that sum); ``own_dtype`` (the power
    variant of bench/cases.py: exp and mean in x's dtype) adds a float32 mean's pairwise
    summation error and the rounding of the result to x's dtype."""
    u, u_out = _roundoffs(dtype, own_dtype)
    ax = np.abs(_as_numpy(x))
    e, f1, _ = boundary_slopes(x, bound, alpha, form)
    de = 2 * u * (ax + alpha * bound)
    value = boundary_closed_form(x, bound, alpha, form, mean=False)
    terms = f1 * de + SLOPE_ULPS[form] * u * value
    n = max(ax.size, 1)
    # The float64 sum itself: at most 32768 terms in sequence (a CPU chunk; CUDA blocks fewer).
    total = float(terms.sum()) / n + min(n, 32768) * unit_roundoff(torch.float64) * float(value.sum()) / n
    if own_dtype:
        total += ((math.log2(n) + 2) * unit_roundoff(torch.float32) + u_out) * float(value.sum()) / n
    return total


def boundary_closed_form(x, bound: float, alpha: float, form: str, mean: bool = True):
    """L = mean f(|x| - alpha B) by its closed form in numpy: exp: exp(max(e, 0)) - 1 up to the
    cap E = 30 and linear beyond (expm1(E) + e^E (e - E)); quadratic: max(e, 0)^2."""
    e = np.abs(_as_numpy(x)) - alpha * bound
    if form == "quadratic":
        f = np.maximum(e, 0.0) ** 2
    else:
        ec = np.minimum(np.maximum(e, 0.0), BOUNDARY_EXP_CAP)
        f = np.expm1(ec) + math.exp(BOUNDARY_EXP_CAP) * np.maximum(e - BOUNDARY_EXP_CAP, 0.0)
    return float(f.mean()) if mean else f


def poly_value64(x, coeffs, bound: float, basis: str) -> np.ndarray:
    """p(x/B) in float64 by numpy.polynomial (chebval / polyval): an oracle independent of pnn_ext."""
    t = _as_numpy(x) / bound
    c = _as_numpy(coeffs)
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.polynomial.chebyshev.chebval if basis == "chebyshev" else np.polynomial.polynomial.polyval)(t, c)


def poly_grad64(x, grad_y, coeffs, bound: float, basis: str) -> np.ndarray:
    """grad_y p'(x/B) / B in float64 by numpy.polynomial."""
    t = _as_numpy(x) / bound
    with np.errstate(over="ignore", invalid="ignore"):
        _, p1, _ = _derivatives(t, _as_numpy(coeffs), basis)
        return _as_numpy(grad_y) * p1 / bound


def boundary_grad64(x, grad_boundary: float, bound: float, alpha: float, form: str) -> np.ndarray:
    """g_L sign(x) f'(|x| - alpha B) / N in float64 (closed form)."""
    xs = _as_numpy(x)
    _, f1, _ = boundary_slopes(xs, bound, alpha, form)
    return grad_boundary * np.sign(xs) * f1 / max(xs.size, 1)


def check(name: str, got, want, tol, inside=None) -> None:
    """Raise AssertionError unless |got - want| <= tol element by element, judged inside
    (``inside`` True) and outside [-B, B] apart; the message names the region, the worst
    element and its error against its bound. Where float64 ``want`` is past the range of
    got's dtype, got must be the infinity of the same sign; NaN must match NaN."""
    got_t = got.detach() if torch.is_tensor(got) else torch.as_tensor(got)
    big = torch.finfo(got_t.dtype).max if got_t.is_floating_point() else math.inf
    g, w = _as_numpy(got_t), _as_numpy(want)
    tol = np.broadcast_to(_as_numpy(tol), w.shape)
    inside = np.ones(w.shape, bool) if inside is None else np.broadcast_to(_as_numpy(inside).astype(bool), w.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        overflow = np.abs(w) > big
        nan_mismatch = np.isnan(g) != np.isnan(w)
        if nan_mismatch.any():
            raise AssertionError(f"{name}: NaN where float64 has none or the reverse, at "
                                 f"{np.argwhere(nan_mismatch)[:5]}")
        bad_inf = overflow & ~(np.isinf(g) & (np.sign(g) == np.sign(w)))
        if bad_inf.any():
            raise AssertionError(f"{name}: float64 overflows the range but the result is finite, at "
                                 f"{np.argwhere(bad_inf)[:5]}")
        err = np.where(overflow | np.isnan(w), 0.0, np.abs(g - w))
        for region, mask in (("inside [-B, B]", inside), ("outside [-B, B]", ~inside)):
            over = mask & ~(err <= tol)
            if over.any():
                ratio = np.where(mask, err / np.maximum(tol, 1e-300), 0.0)
                i = np.unravel_index(int(np.argmax(np.nan_to_num(ratio, nan=np.inf))), w.shape)
                raise AssertionError(f"{name} {region}: {int(over.sum())} of {int(mask.sum())} elements past "
                                     f"the rounding bound; worst at {tuple(int(v) for v in i)}: |error| "
                                     f"{err[i]:.3e} > bound {tol[i]:.3e} (got {g[i]!r}, float64 {w[i]!r})")


def grad_x_bound(x, grad_y, grad_boundary: float, coeffs, bound: float, alpha: float, basis: str, form: str,
                 dtype: torch.dtype) -> np.ndarray:
    """Bound on |grad_x - float64|, both parts, plus the rounding of their float32 sum."""
    want = poly_grad64(x, grad_y, coeffs, bound, basis) + boundary_grad64(x, grad_boundary, bound, alpha, form)
    return (poly_grad_bound(x, grad_y, coeffs, bound, basis, dtype)
            + boundary_grad_bound(x, grad_boundary, bound, alpha, form, dtype)
            + compute_roundoff(dtype) * np.abs(want))


def coeff_grad_bound(x, grad_y, coeffs, bound: float, basis: str, dtype: torch.dtype) -> np.ndarray:
    """Bound on |dL/dc_k - sum_j g_j phi_k(t_j)| per k: the recursive sum of n terms
    (gamma_n, n = min(N, 32768), the CPU chunk; a CUDA block reduces fewer in sequence)
    plus phi_k's own rounding (its recurrence, 2k u) and t's (2u |t| |phi_k'(t)|), each
    times the sum's mass sum_j |g_j| |phi_k(t_j)|."""
    u = compute_roundoff(dtype)
    t = _as_numpy(x).ravel() / bound
    g = np.abs(np.broadcast_to(_as_numpy(grad_y), _as_numpy(x).shape)).ravel()
    n_seq = min(t.size, 32768)
    out = np.zeros(len(_as_numpy(coeffs)))
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(len(out)):
            unit = np.zeros(k + 1)
            unit[k] = 1.0
            phi, dphi, _ = _derivatives(t, unit, basis)
            mass = float((g * np.abs(phi)).sum())
            out[k] = (n_seq + 2 * k + 2) * u * mass + 2 * u * float((g * np.abs(t * dphi)).sum())
    return out


def inside_interval(x, bound: float) -> np.ndarray:
    return np.abs(_as_numpy(x)) <= bound


def check_forward(name: str, y, x, coeffs, bound: float, basis: str) -> None:
    """y of the op (in x's dtype) against numpy's float64 p(x/B), within value_bound."""
    check(name, y, poly_value64(x, coeffs, bound, basis),
          value_bound(x, coeffs, bound, basis, x.dtype), inside_interval(x, bound))


def check_grad_x(name: str, grad_x, x, grad_y, grad_boundary: float, coeffs, bound: float, alpha: float,
                 basis: str, form: str) -> None:
    """grad_x against the closed forms: its polynomial part grad_y p'/B and its boundary
    part g_L sign(x) f'(e)/N, in float64, within grad_x_bound."""
    want = poly_grad64(x, grad_y, coeffs, bound, basis) + boundary_grad64(x, grad_boundary, bound, alpha, form)
    check(name, grad_x, want, grad_x_bound(x, grad_y, grad_boundary, coeffs, bound, alpha, basis, form, x.dtype),
          inside_interval(x, bound))


def check_stats(name: str, stats, x, bound: float, alpha: float, form: str) -> None:
    """stats = [L, max|x|, fraction of |x| > B] against numpy: L within its rounding bound
    (plus the rounding of the result to the stats dtype), max|x| exact, the fraction to
    the stats dtype's rounding; NaN and inf exactly where numpy has them."""
    s = [float(v) for v in _as_numpy(stats)]
    x64 = _as_numpy(x)
    u = compute_roundoff(x.dtype if torch.is_tensor(x) else torch.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        want = [boundary_closed_form(x64, bound, alpha, form) if x64.size else 0.0,
                float(np.abs(x64).max()) if x64.size else 0.0,
                float((np.abs(x64) > bound).mean()) if x64.size else 0.0]
        tol = [boundary_value_bound(x64, bound, alpha, form, x.dtype) + u * abs(want[0]) if x64.size else 0.0,
               0.0, u * want[2]]
    for label, got, w, t in zip(("L", "max|x|", "fraction past B"), s, want, tol):
        if math.isnan(w) or math.isinf(w):
            ok = (math.isnan(got) and math.isnan(w)) or got == w
        else:
            ok = abs(got - w) <= t
        if not ok:
            raise AssertionError(f"{name} {label}: {got!r}, float64 {w!r} (bound {t:.2e})")
