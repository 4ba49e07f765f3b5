"""Polynomial fits of activation functions on [-B, B], in float64.

A fit is stored in the normalized variable t = x / B, in a Chebyshev or monomial
basis, which is what the fused op evaluates. ``PolyFit.monomial_coeffs()``
exports coefficients in x for HE tools and ``numpy.polyval``.

Methods:
  * ``"lstsq"``: least squares on a dense uniform grid of [-B, B] (solved in the
    Chebyshev basis, which is well conditioned at any degree);
  * ``"remez"``: minimax (smallest maximum error) by the Remez exchange
    algorithm on a dense grid.

Least squares takes an optional ``weight`` w(x) >= 0 on [-B, B] (pnn-train's
``--fit-weight inputs`` passes the measured distribution of a layer's inputs): the fit
then minimises the integral of w (p - f)^2, accurate where the inputs are and looser
where few go.
"""
from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as npcheb
from numpy.polynomial import polynomial as npmono

from .activations import ACTIVATIONS

Target = str | Callable[[np.ndarray], np.ndarray]

# Defaults shared by fit(), PolyActivation, convert() and pnn-train's flags.
DEGREE = 22
TARGET = "relu"
BASIS = "chebyshev"
METHOD = "lstsq"
METHODS = ("lstsq", "remez")
MAX_DEGREE = 128  # the fused op's limit (kMaxDegree in csrc/polyact.h): its kernels keep d + 1 coefficients on chip

# Published settings (arXiv 2505.11589): degree -> (B, alpha).
PRESETS: dict[int, tuple[float, float]] = {
    2: (12.0, 1.0),
    4: (20.0, 0.75),
    8: (35.0, 0.5),
    16: (40.0, 0.5),
    22: (47.0, 0.5),
}


def check_degree(degree) -> int:
    """``degree`` as the int it must be: 1..MAX_DEGREE, an int and not a bool (True is not
    degree 1). The one rule for every place a degree enters (PolyActivation, convert,
    pnn-train's settings); a ValueError naming ``degree`` otherwise."""
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be an integer from 1 to {MAX_DEGREE}, got {degree!r}")
    return degree


def preset(degree: int) -> tuple[float, float]:
    """(B, alpha) for a degree.

    The published degrees 2, 4, 8, 16, 22 give their table entries. Other
    degrees: B is interpolated linearly in the degree between the neighbouring
    entries (below 2: 12; above 22: extended with the 16->22 slope, 7/6 per
    degree), and alpha is that of the nearest published degree below (1.0 for
    degree < 4, 0.75 for 4..7, 0.5 from 8 on).
    """
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
    if degree in PRESETS:
        return PRESETS[degree]
    known = sorted(PRESETS)
    if degree < known[0]:
        return PRESETS[known[0]]
    below = max(k for k in known if k < degree)
    above = min((k for k in known if k > degree), default=None)
    alpha = PRESETS[below][1]
    if above is None:
        (d0, (b0, _)), (d1, (b1, _)) = (known[-2], PRESETS[known[-2]]), (known[-1], PRESETS[known[-1]])
        return b1 + (b1 - b0) / (d1 - d0) * (degree - d1), alpha
    b_lo, b_hi = PRESETS[below][0], PRESETS[above][0]
    return b_lo + (b_hi - b_lo) * (degree - below) / (above - below), alpha


# Each target is f(x, **params) on float64 arrays; the keyword defaults are torch's,
# so a target key names only the parameters that differ (see target_key). The built-in
# ones are the rows of pnn_ext.activations; register_target adds more.
TARGETS: dict[str, Callable[..., np.ndarray]] = {a.name: a.target for a in ACTIVATIONS}


def register_target(name: str, fn: Callable[..., np.ndarray], *, overwrite: bool = False) -> None:
    """Add a target ``fn(x, **params)`` (numpy, float64 in and out) under ``name``.

    It can then be fitted (``fit(name)``), used as ``PolyActivation(target=name)``
    or ``convert(..., target=name)``, and given parameters in a key
    (``"name(p=1.5)"``, see :func:`target_key`). Fits are shared per key."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"target name must be an identifier, got {name!r}")
    if not callable(fn):
        raise TypeError(f"target {name!r}: fn must be callable, got {type(fn).__name__}")
    if name in TARGETS and not overwrite:
        raise ValueError(f"target {name!r} is already registered (pass overwrite=True to replace it)")
    TARGETS[name] = fn


def target_key(name: str, **params) -> str:
    """The canonical key of ``name`` with ``params``: ``"leaky_relu(negative_slope=0.2)"``.

    Parameters equal to the target's default are left out (``nn.GELU()`` and
    ``nn.GELU("none")`` are both ``"gelu"``), so equal targets share one fit."""
    if name not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {name!r}")
    defaults = {k: p.default for k, p in inspect.signature(TARGETS[name]).parameters.items()
                if p.default is not inspect.Parameter.empty}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"target {name!r} has no parameter {unknown[0]!r} (it has {sorted(defaults)})")
    kept = {k: v for k, v in sorted(params.items()) if v != defaults[k]}
    for k, v in kept.items():
        if not isinstance(v, (int, float, str)) or isinstance(v, bool):
            raise ValueError(f"target {name!r}: parameter {k} must be a number or a string, got {v!r}")
    if not kept:
        return name
    return name + "(" + ", ".join(f"{k}={float(v)!r}" if not isinstance(v, str) else f"{k}={v!r}"
                                  for k, v in kept.items()) + ")"


def parse_target(key: str) -> tuple[str, dict]:
    """(name, params) of a target key made by :func:`target_key` (or written by hand)."""
    try:
        tree = ast.parse(key.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if isinstance(tree, ast.Name):
        return tree.id, {}
    if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and not tree.args
            and all(isinstance(kw.value, (ast.Constant, ast.UnaryOp)) and kw.arg for kw in tree.keywords)):
        try:
            return tree.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
        except ValueError:
            pass
    raise ValueError(f"target {key!r} is not a target name or 'name(param=value, ...)'")


def _target_fn(target: Target) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    if callable(target):
        return getattr(target, "__name__", "custom"), target
    if not isinstance(target, str):
        raise ValueError(f"target must be one of {sorted(TARGETS)} or a callable, got {target!r}")
    name, params = parse_target(target)
    if name not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)} or a callable, got {target!r}")
    key = target_key(name, **params)
    fn = TARGETS[name]
    return key, (lambda x: fn(x, **params)) if params else fn


def monomial_in_t(coeffs: np.ndarray, basis: str) -> np.ndarray:
    """Coefficients c_0..c_d in t given in ``basis``, as monomial coefficients in t (low to high)."""
    c = np.asarray(coeffs, dtype=np.float64)
    return npcheb.cheb2poly(c) if basis == "chebyshev" else c.copy()


@dataclass(frozen=True)
class PolyFit:
    """A polynomial p(t), t = x / bound, approximating ``target`` on [-bound, bound]."""

    coeffs: np.ndarray  # c_0..c_d in t, float64, in ``basis``
    basis: str          # "chebyshev" or "monomial"
    bound: float
    target: str
    method: str
    max_error: float    # max |p - f| over a dense grid of [-B, B], in units of y
    rms_error: float

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def chebyshev_coeffs(self) -> np.ndarray:
        """Coefficients in t, Chebyshev basis."""
        return self.coeffs.copy() if self.basis == "chebyshev" else npcheb.poly2cheb(self.coeffs)

    def monomial_coeffs_t(self) -> np.ndarray:
        """Coefficients in t, monomial basis, low to high."""
        return monomial_in_t(self.coeffs, self.basis)

    def monomial_coeffs(self, order: str = "low") -> np.ndarray:
        """Coefficients a_k of p as a polynomial in x: p = sum_k a_k x^k.

        ``order="low"`` gives a_0..a_d (TenSEAL's ``polyval``, numpy.polynomial);
        ``order="high"`` gives a_d..a_0 (``numpy.polyval``, ``numpy.polyfit``).
        """
        if order not in ("low", "high"):
            raise ValueError(f"order must be 'low' or 'high', got {order!r}")
        a = self.monomial_coeffs_t() / self.bound ** np.arange(self.degree + 1)
        return a if order == "low" else a[::-1].copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """p(x) in float64."""
        t = np.asarray(x, dtype=np.float64) / self.bound
        return npcheb.chebval(t, self.coeffs) if self.basis == "chebyshev" else npmono.polyval(t, self.coeffs)


def _error_report(cheb: np.ndarray, f: Callable, bound: float, points: int = 20001) -> tuple[float, float]:
    t = np.linspace(-1.0, 1.0, points)
    err = npcheb.chebval(t, cheb) - f(t * bound)
    return float(np.max(np.abs(err))), float(np.sqrt(np.mean(err ** 2)))


def _lstsq(f: Callable, degree: int, bound: float, points: int,
           weight: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, points)
    vander, values = npcheb.chebvander(t, degree), f(t * bound)
    if weight is not None:  # rows scaled by sqrt(w): minimises sum w (p - f)^2
        w = np.asarray(weight(t * bound), dtype=np.float64)
        if w.shape != t.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError("weight must give finite values >= 0 on [-bound, bound], not all zero")
        root = np.sqrt(w / w.max())
        vander, values = vander * root[:, None], values * root
    coeffs, *_ = np.linalg.lstsq(vander, values, rcond=None)
    return coeffs


def _alternating_extrema(err: np.ndarray, n: int) -> np.ndarray | None:
    """Indices of n extrema of err with alternating signs (one per run of constant
    sign, the largest |err| in each), dropping the smaller end while too many."""
    sign = np.sign(err)
    sign[sign == 0] = 1
    starts = np.flatnonzero(np.r_[True, sign[1:] != sign[:-1]])
    ends = np.r_[starts[1:], len(err)]
    extrema = [s + int(np.argmax(np.abs(err[s:e]))) for s, e in zip(starts, ends)]
    while len(extrema) > n:
        extrema.pop(0 if abs(err[extrema[0]]) < abs(err[extrema[-1]]) else -1)
    return np.array(extrema) if len(extrema) == n else None


def _remez(f: Callable, degree: int, bound: float, points: int, iters: int = 60) -> np.ndarray:
    """Minimax fit by the Remez exchange on a dense grid (handles the kink of ReLU).

    Starts from the least-squares fit's error extrema (Chebyshev nodes are a
    degenerate start for even or odd targets) and keeps the best iterate, so the
    result is never worse than least squares in max error."""
    grid = np.cos(np.linspace(math.pi, 0.0, points))  # dense near the ends, like the error
    fg = f(grid * bound)
    n = degree + 2
    best = _lstsq(f, degree, bound, points)
    best_err = np.max(np.abs(fg - npcheb.chebval(grid, best)))
    coeffs = best
    for _ in range(iters):
        err = fg - npcheb.chebval(grid, coeffs)
        ref = _alternating_extrema(err, n)
        if ref is None:
            break
        system = np.hstack([npcheb.chebvander(grid[ref], degree), ((-1.0) ** np.arange(n))[:, None]])
        try:
            sol = np.linalg.solve(system, fg[ref])
        except np.linalg.LinAlgError:
            break
        coeffs, level = sol[:-1], abs(sol[-1])
        max_err = np.max(np.abs(fg - npcheb.chebval(grid, coeffs)))
        if max_err < best_err:
            best, best_err = coeffs, max_err
        if max_err - level <= 1e-9 * max_err:
            break
    return best


def fit(target: Target = TARGET, degree: int = DEGREE, bound: float | None = None, basis: str = BASIS,
        method: str = METHOD, points: int = 20001,
        weight: Callable[[np.ndarray], np.ndarray] | None = None) -> PolyFit:
    """Fit a degree-``degree`` polynomial to ``target`` on [-bound, bound].

    Args:
        target: a key of TARGETS ("relu", "gelu", "leaky_relu(negative_slope=0.2)", ...,
            see :func:`target_key`; :func:`register_target` adds names) or a numpy callable.
        degree: >= 1.
        bound: B > 0; default: the preset for the degree (see :func:`preset`).
        basis: basis of the stored coefficients, "chebyshev" or "monomial".
        method: "lstsq" (least squares) or "remez" (minimax).
        points: grid size of the fit.
        weight: least squares only: w(x) >= 0 on [-bound, bound] (numpy in, numpy out),
            the weight of each point in the fit (default: uniform).
    """
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
    if bound is None:
        bound = preset(degree)[0]
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be finite and > 0, got {bound!r}")
    if basis not in ("chebyshev", "monomial"):
        raise ValueError(f"basis must be 'chebyshev' or 'monomial', got {basis!r}")
    if method not in METHODS:
        raise ValueError(f"method must be 'lstsq' or 'remez', got {method!r}")
    if weight is not None and method != "lstsq":
        raise ValueError(f"weight is for the least-squares fit (method 'lstsq'), got method {method!r}")
    name, f = _target_fn(target)
    cheb = _lstsq(f, degree, bound, points, weight) if method == "lstsq" else _remez(f, degree, bound, points)
    max_err, rms_err = _error_report(cheb, f, bound)
    coeffs = cheb if basis == "chebyshev" else npcheb.cheb2poly(cheb)
    return PolyFit(np.asarray(coeffs, dtype=np.float64), basis, float(bound), name, method, max_err, rms_err)
