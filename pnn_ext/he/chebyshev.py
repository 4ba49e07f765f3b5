"""Depth-optimal evaluation of a polynomial in the Chebyshev basis under CKKS.

p(t) = sum c_k T_k(t) on |t| <= 1 (t = x / B, folded into the affine map before).
Chebyshev coefficients of a fitted activation are O(1), where its monomial ones
reach ~1e5 at degree 22 and force a larger scale; and every T_k(t) stays in
[-1, 1], so no intermediate value grows.

Baby-step/giant-step (Paterson-Stockmeyer style): the baby steps T_1..T_{m-1} and
the giant steps T_m, T_2m, T_4m, ... (m a power of two) are built by
T_2a = 2 T_a^2 - 1 and T_2a+1 = 2 T_a T_a+1 - T_1, so T_k costs ceil(log2 k)
levels. p is divided by the largest giant g <= deg p using
2 T_g T_j = T_g+j + T_|g-j|: p = q T_g + r with deg q, deg r < g, recursively,
until the pieces are linear combinations of baby steps (one plaintext product
per term, one rescale). The plan is built once per polynomial; m is chosen to
minimise the depth, then the ciphertext products. The depth is
ceil(log2(d+1)) for every degree tried (2..32; tests/test_he_chebyshev.py counts
the levels a ciphertext actually loses). A polynomial whose odd coefficients above
c_1 vanish (a fitted ReLU) is evaluated as c_1 t + e(T_2(t)), e of half the degree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np


def t_level(k: int) -> int:
    """Levels T_k costs when built by halving: ceil(log2 k)."""
    return (k - 1).bit_length() if k > 1 else 0


def cheb_from_monomial(coeffs) -> np.ndarray:
    return np.polynomial.chebyshev.poly2cheb(np.asarray(coeffs, dtype=np.float64))


def _trim(c: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(c)
    return c[: nz[-1] + 1] if len(nz) else c[:1] * 0


def divide(c: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """q, r with sum c_k T_k = q(T) T_g + r(T), for g <= deg c < 2g."""
    d = len(c) - 1
    q = np.zeros(d - g + 1)
    r = c[:g].astype(np.float64).copy()
    q[0] = c[g]
    for k in range(g + 1, d + 1):
        q[k - g] += 2 * c[k]
        r[2 * g - k] -= c[k]
    return _trim(q), _trim(r)


@dataclass
class Node:
    """A piece of the plan: a leaf (coeffs on baby steps), or q * T_g + r."""
    coeffs: np.ndarray | None = None     # leaf
    g: int = 0
    q: Node | None = None
    r: Node | None = None
    level: int = 0                      # levels it needs above the input's

    @property
    def const(self) -> bool:
        return self.coeffs is not None and len(self.coeffs) == 1


def _leaf(c: np.ndarray) -> Node:
    lv = max((t_level(k) + 1 for k in range(1, len(c)) if c[k]), default=0)
    return Node(coeffs=c, level=lv)


def _build(c: np.ndarray, giants: list[int]) -> Node:
    d = len(c) - 1
    usable = [g for g in giants if g <= d]
    if not usable:
        return _leaf(c)
    g = usable[-1]
    q, r = divide(c, g)
    qn, rn = _build(q, giants), _build(r, giants)
    if qn.const:       # c_g T_g: a plaintext product (merged into r's leaf when r is one)
        level = max(t_level(g) + 1, rn.level)
    else:
        level = max(max(t_level(g), qn.level) + 1, rn.level)
    return Node(g=g, q=qn, r=rn, level=level)


@dataclass
class Plan:
    coeffs: np.ndarray                  # Chebyshev, low to high
    m: int                              # baby steps T_1..T_{m-1}
    giants: list[int]
    root: Node
    steps: list[int] = field(default_factory=list)   # every T_k built, k >= 2
    even: Plan | None = None            # p = c_1 T_1 + e(u), u = T_2: the plan of e (see plan())

    @property
    def depth(self) -> int:
        return 1 + self.even.depth if self.even is not None else self.root.level

    @property
    def ct_mults(self) -> int:
        """Ciphertext-ciphertext products: one per T_k built, one per split with a non-constant q."""
        def splits(n: Node) -> int:
            return 0 if n.coeffs is not None else int(not n.q.const) + splits(n.q) + splits(n.r)
        if self.even is not None:
            return 1 + self.even.ct_mults
        return len(self.steps) + splits(self.root)


def _steps(c: np.ndarray, m: int, giants: list[int]) -> list[int]:
    need = set(range(2, min(m, len(c)))) | {g for g in giants if g < len(c)}
    built: set[int] = set()

    def add(k: int) -> None:
        if k < 2 or k in built:
            return
        add((k + 1) // 2)
        add(k // 2)
        built.add(k)
    for k in sorted(need):
        add(k)
    return sorted(built)


def plan(coeffs, rtol: float = 1e-14) -> Plan:
    """The shallowest, then cheapest, plan for sum coeffs[k] T_k (Chebyshev, low to high).
    Coefficients below rtol * max |c_k| are rounding noise (the odd terms of a ReLU fit come
    out of the basis change as ~1e-17) and are dropped."""
    c = np.asarray(coeffs, dtype=np.float64).copy()
    c[np.abs(c) < rtol * np.abs(c).max(initial=0.0)] = 0.0
    c = _trim(c)
    d = len(c) - 1
    best = None
    for lm in range(1, max(2, math.ceil(math.log2(d + 1))) + 1):
        m = 2 ** lm
        giants = [m * 2 ** j for j in range(0, 64) if m * 2 ** j <= d]
        root = _build(c, giants)
        p = Plan(c, m, giants, root, _steps(c, m, giants))
        if best is None or (p.depth, p.ct_mults) < (best.depth, best.ct_mults):
            best = p
    # A fitted ReLU is x/2 plus an even function: its odd coefficients above c_1 vanish. Since
    # T_2k(t) = T_k(T_2(t)), the even part is a polynomial of half the degree in u = T_2(t), at
    # the same depth and fewer products (7 instead of 9 at degree 22).
    if d >= 4 and not c[3::2].any():
        inner = plan(c[0::2], rtol=0.0)
        if (1 + inner.depth, 1 + inner.ct_mults) < (best.depth, best.ct_mults):
            best = Plan(c, best.m, best.giants, best.root, best.steps, even=inner)
    return best


@cache
def depth_for_degree(degree: int) -> int:
    """Levels a generic (all coefficients non-zero) polynomial of this degree needs."""
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    return plan(np.ones(degree + 1)).depth


def evaluate(engine, x, p: Plan, level: int | None = None, scale: float | None = None):
    """p(x) for a ciphertext x (slot-wise), at ``level`` (default: level(x) + p.depth) and
    ``scale`` (default: the context's)."""
    base = engine.level(x)
    level = base + p.depth if level is None else level
    scale = engine.scale if scale is None else scale
    if level < base + p.depth:
        raise ValueError(f"the polynomial needs {p.depth} levels, {level - base} given")
    if p.root.const:
        raise ValueError("a constant polynomial has no ciphertext to carry it")
    engine._check_level(level)
    if p.even is not None:
        u = engine.multiply(x, x)
        engine.add_inplace(u, u)
        engine.add_const(u, -1.0)                            # u = T_2(x)
        y = evaluate(engine, u, p.even, level, scale)
        if p.coeffs[1]:
            engine.add_inplace(y, engine.lincomb([(p.coeffs[1], x)], 0.0, level, scale))
        return y
    T = {1: x}

    def t(k: int):
        if k not in T:
            a, b = (k + 1) // 2, k // 2
            prod = engine.multiply(t(a), t(b))
            engine.add_inplace(prod, prod)                   # 2 T_a T_b
            if a == b:
                engine.add_const(prod, -1.0)                 # - T_0
            else:                                            # - T_1, brought to the product's level and scale
                engine.add_inplace(prod, engine.lincomb([(-1.0, T[1])], 0.0, engine.level(prod), prod.scale))
            T[k] = prod
        return T[k]

    for k in p.steps:
        t(k)

    def leaf_terms(c: np.ndarray):
        return [(c[k], t(k)) for k in range(1, len(c)) if c[k]]

    def node(n: Node, lv: int, sc: float):
        if n.coeffs is not None:
            return engine.lincomb(leaf_terms(n.coeffs), n.coeffs[0], lv, sc)
        G = t(n.g)
        if n.q.const:
            if n.r.coeffs is not None:          # c_g T_g + leaf: one lincomb
                return engine.lincomb([(n.q.coeffs[0], G)] + leaf_terms(n.r.coeffs), n.r.coeffs[0], lv, sc)
            prod = engine.lincomb([(n.q.coeffs[0], G)], 0.0, lv, sc)
        else:
            G = engine.at_level(G, lv - 1)
            q = node(n.q, lv - 1, sc * engine.primes[lv - 1] / G.scale)
            prod = engine.multiply(q, G)
            prod.scale = sc                    # equal but for double rounding
        if n.r.const:
            engine.add_const(prod, n.r.coeffs[0])
        else:
            engine.add_inplace(prod, node(n.r, lv, sc))
        return prod

    return node(p.root, level, scale)


def reference(coeffs, t: np.ndarray) -> np.ndarray:
    """The float64 value the encrypted evaluation approximates."""
    return np.polynomial.chebyshev.chebval(t, np.asarray(coeffs, dtype=np.float64))
