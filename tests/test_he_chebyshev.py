"""The Chebyshev evaluator under CKKS: the levels it consumes (counted on the library's
ciphertexts), its error against the float64 polynomial, and against TenSEAL's
monomial polyval."""
import math

import numpy as np
import pytest

import pnn_ext
from pnn_ext.he import chebyshev
from pnn_ext.he.params import coefficient_mass, needed_scale_bits, poly_depth

ts = pytest.importorskip("tenseal")
from pnn_ext.he.engine import Engine  # noqa: E402


def engine(levels, n=16384, bits=40):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=[60] + [bits] * levels + [60])
    ctx.global_scale = 2.0 ** bits
    return Engine(ctx)


def relu_fit_in_t(degree, basis="chebyshev"):
    """The folded activation p(t) / B: in the Chebyshev basis as pnn_ext.he.fold leaves it, or monomial."""
    fit = pnn_ext.fit("relu", degree)
    return (fit.chebyshev_coeffs() if basis == "chebyshev" else fit.monomial_coeffs_t()) / fit.bound


def test_plan_depth_is_log2_degree_plus_one():
    for d in range(1, 65):
        p = chebyshev.plan(np.ones(d + 1))
        assert p.depth == math.ceil(math.log2(d + 1)), d
        assert poly_depth(d) == p.depth
        # baby-step/giant-step: far fewer ciphertext products than the d - 1 of the power basis
        assert p.ct_mults <= 2 * math.isqrt(d) + d.bit_length() + 1, (d, p.ct_mults)


def test_division_identity():
    """q T_g + r reproduces the polynomial (the identity 2 T_g T_j = T_g+j + T_|g-j|)."""
    rng = np.random.default_rng(0)
    t = np.linspace(-1, 1, 101)
    for d, g in [(22, 16), (7, 4), (32, 32), (9, 8)]:
        c = rng.normal(size=d + 1)
        q, r = chebyshev.divide(c, g)
        T_g = np.polynomial.chebyshev.chebval(t, np.eye(g + 1)[g])
        got = chebyshev.reference(q, t) * T_g + chebyshev.reference(r, t)
        np.testing.assert_allclose(got, chebyshev.reference(c, t), atol=1e-12)
        assert len(q) <= g and len(r) <= g


@pytest.mark.parametrize("degree", [8, 22, 32])
def test_relu_fit_depth_and_error(degree):
    """ceil(log2(d+1)) levels actually consumed, one fewer fails, and the error vs float64 is tiny
    at a 2^40 scale, where TenSEAL's monomial polyval is off by orders of magnitude more at 22 and 32."""
    mono, c = relu_fit_in_t(degree, "monomial"), relu_fit_in_t(degree)
    p = chebyshev.plan(c)
    need = math.ceil(math.log2(degree + 1))
    assert p.depth == need
    e = engine(need)
    t = np.linspace(-1, 1, e.slots)
    x = e.encrypt(t)
    y = chebyshev.evaluate(e, x, p)
    assert e.level(y) - e.level(x) == need
    assert e.counts["ct_mult"] == p.ct_mults == {8: 4, 22: 7, 32: 9}[degree]
    err = np.abs(np.array(e.decrypt(y, e.slots)) - np.polynomial.polynomial.polyval(t, mono)).max()
    assert err < 1e-6, err
    assert needed_scale_bits_of(c) == 40
    short = engine(need - 1)
    with pytest.raises(ValueError, match="past the end of the modulus chain"):
        chebyshev.evaluate(short, short.encrypt(t[:8]), p)
    if degree >= 22:
        ctx = e.ctx
        mono_err = np.abs(np.array(ts.ckks_vector(ctx, t.tolist()).polyval(mono.tolist()).decrypt())
                          - np.polynomial.polynomial.polyval(t, mono)).max()
        assert mono_err > 100 * err


def needed_scale_bits_of(cheb):
    from pnn_ext.he.model import HEModel, Poly
    model = HEModel([Poly(cheb, len(cheb) - 1, 1.0, 1.0, "p")], (4,))
    assert coefficient_mass(model) < 2         # Chebyshev coefficients of a ReLU fit sum to ~1
    return needed_scale_bits(model)


def test_hostile_coefficients_and_sparse_polynomials():
    """Random coefficients (some exactly zero, odd-only and even-only patterns) at several degrees,
    all evaluated in one context: the error stays at the CKKS floor times the polynomial's
    own conditioning."""
    rng = np.random.default_rng(3)
    e = engine(6)
    t = np.cos(np.linspace(0, np.pi, e.slots))              # includes +-1 exactly
    x = e.encrypt(t)
    for d in [1, 2, 3, 5, 13, 16, 17, 31]:
        c = rng.normal(size=d + 1) / (d + 1)
        c[rng.random(d + 1) < 0.3] = 0.0
        c[d] = 0.7
        for pattern in (c, c * (np.arange(d + 1) % 2 == d % 2)):
            p = chebyshev.plan(pattern)
            y = chebyshev.evaluate(e, x, p)
            assert e.level(y) == p.depth <= poly_depth(d)
            err = np.abs(np.array(e.decrypt(y, e.slots)) - chebyshev.reference(pattern, t)).max()
            # T_d'(+-1) = d^2: the encoding error of t is amplified that much near the ends
            assert err < 1e-6 + 4e-8 * d * d * np.abs(pattern).sum(), (d, err)


def test_evaluation_at_a_deeper_level_and_given_scale():
    """The evaluator lands exactly on the level and scale asked for (what lets the batch runner add
    its outputs without correction)."""
    e = engine(6)
    c = relu_fit_in_t(8)
    x = e.encrypt(np.linspace(-1, 1, 16))
    y = chebyshev.evaluate(e, x, chebyshev.plan(c), level=6, scale=2.0 ** 39)
    assert e.level(y) == 6 and y.scale == 2.0 ** 39
    got = np.array(e.decrypt(y, 16))
    np.testing.assert_allclose(got, chebyshev.reference(c, np.linspace(-1, 1, 16)), atol=1e-6)


def test_evaluation_refuses_too_few_levels_and_a_constant():
    """A level below what the plan needs names both counts (from x's own level, here 1);
    a constant polynomial has no ciphertext to carry it. The reference takes integer
    coefficients as the float64 ones."""
    e = engine(6)
    x = e.multiply(e.encrypt(np.linspace(-1, 1, 16)), e.encrypt(np.ones(16)))   # at level 1
    p = chebyshev.plan(chebyshev.cheb_from_monomial(relu_fit_in_t(8)))
    with pytest.raises(ValueError, match=rf"^the polynomial needs {p.depth} levels, {p.depth - 1} given$"):
        chebyshev.evaluate(e, x, p, level=p.depth)
    with pytest.raises(ValueError, match="^a constant polynomial has no ciphertext to carry it$"):
        chebyshev.evaluate(e, x, chebyshev.plan(np.array([0.5])))
    np.testing.assert_array_equal(chebyshev.cheb_from_monomial([0, 0, 1]), [0.5, 0.0, 0.5])
    assert chebyshev.reference([1, 2], np.array([0.5])).dtype == np.float64
