"""Fitting: least squares and Remez, the monomial export, the presets."""
import re

import numpy as np
import pytest

import pnn_ext


@pytest.mark.parametrize("target", ["relu", "silu", "gelu", "sigmoid", "tanh"])
def test_fit_error_decreases_with_degree_and_remez_is_minimax(target):
    errs = [pnn_ext.fit(target, d, 10.0).max_error for d in (2, 8, 22)]
    assert errs[0] > errs[1] > errs[2]
    for d in (4, 8, 22):
        ls, mm = pnn_ext.fit(target, d, 10.0), pnn_ext.fit(target, d, 10.0, method="remez")
        assert mm.max_error <= ls.max_error * (1 + 1e-9)


def test_fit_relu_degree2_minimax_is_known():
    # Best degree-2 approximation of |x|/2 + x/2 on [-B, B]: error B/16.
    fit = pnn_ext.fit("relu", 2, 12.0, method="remez")
    assert fit.max_error == pytest.approx(12.0 / 16, rel=1e-6)


def test_monomial_export_matches_numpy_and_fit():
    fit = pnn_ext.fit("gelu", 8, 20.0)
    x = np.linspace(-20, 20, 101)
    assert np.allclose(np.polyval(fit.monomial_coeffs("high"), x), fit(x), atol=1e-9)
    assert np.allclose(np.polynomial.polynomial.polyval(x, fit.monomial_coeffs("low")), fit(x), atol=1e-9)
    mono = pnn_ext.fit("gelu", 8, 20.0, basis="monomial")
    assert np.allclose(mono(x), fit(x), atol=1e-9)
    # A callable target.
    cube = pnn_ext.fit(lambda v: v ** 3, 3, 2.0)
    assert cube.max_error < 1e-12


def test_presets():
    assert pnn_ext.preset(22) == (47.0, 0.5) and pnn_ext.preset(2) == (12.0, 1.0)
    assert pnn_ext.preset(6) == (27.5, 0.75) and pnn_ext.preset(1) == (12.0, 1.0)
    assert pnn_ext.preset(28)[0] == pytest.approx(54.0)
    with pytest.raises(ValueError, match="degree"):
        pnn_ext.preset(0)


def test_presets_between_and_beyond_the_table():
    """Between published degrees B is linear in the degree and alpha is that of the degree
    below; below 2 it is degree 2's; past 22 the 16 -> 22 slope (7/6 per degree) goes on."""
    table = {2: (12.0, 1.0), 4: (20.0, 0.75), 8: (35.0, 0.5), 16: (40.0, 0.5), 22: (47.0, 0.5)}
    assert {d: pnn_ext.preset(d) for d in table} == table
    assert pnn_ext.preset(1) == (12.0, 1.0)
    assert pnn_ext.preset(3) == (16.0, 1.0)                       # halfway 2 -> 4, alpha of 2
    assert pnn_ext.preset(5) == pytest.approx((23.75, 0.75))      # a quarter of 4 -> 8, alpha of 4
    assert pnn_ext.preset(12) == pytest.approx((37.5, 0.5))
    assert pnn_ext.preset(23) == pytest.approx((47.0 + 7 / 6, 0.5))
    for bad in (0, -3, 2.0, "8"):
        with pytest.raises(ValueError, match=r"degree must be an integer >= 1, got"):
            pnn_ext.preset(bad)


def test_target_names_and_parameters_are_checked_by_name():
    from pnn_ext import fitting

    with pytest.raises(ValueError, match=r"^target must be one of \['celu', 'elu', .*\], got 'swish2'$"):
        fitting.target_key("swish2")
    with pytest.raises(ValueError, match=r"^target 'elu' has no parameter 'beta' \(it has \['alpha'\]\)$"):
        fitting.target_key("elu", beta=2.0)
    assert fitting.target_key("elu", alpha=1.0) == "elu" and fitting.target_key("elu", alpha=0.5) == "elu(alpha=0.5)"
    assert fitting.target_key("softplus", threshold=20.0, beta=2) == "softplus(beta=2.0)"


def test_monomial_export_orders_and_bases():
    """The default order is low-to-high; a monomial-basis fit exports its own coefficients."""
    fit = pnn_ext.fit("silu", 6, 10.0)
    np.testing.assert_array_equal(fit.monomial_coeffs(), fit.monomial_coeffs("low"))
    np.testing.assert_array_equal(fit.monomial_coeffs("high"), fit.monomial_coeffs("low")[::-1])
    with pytest.raises(ValueError, match=r"^order must be 'low' or 'high', got 'middle'$"):
        fit.monomial_coeffs("middle")
    mono = pnn_ext.fit("silu", 6, 10.0, basis="monomial")
    np.testing.assert_allclose(mono.monomial_coeffs_t(), mono.coeffs, rtol=0, atol=0)
    np.testing.assert_allclose(mono.monomial_coeffs_t(), fit.monomial_coeffs_t(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("target,degree", [("relu", 4), ("gelu", 6), ("tanh", 5), ("silu", 8)])
def test_remez_error_equioscillates(target, degree):
    """Chebyshev's alternation theorem: the minimax error reaches its maximum, with
    alternating signs, at degree + 2 points. Least squares does not (its error peaks at
    the ends), so a Remez exchange that stopped early or kept its start fails here."""
    from pnn_ext import fitting

    x = np.linspace(-10.0, 10.0, 400_001)
    for method, alternating in (("remez", True), ("lstsq", False)):
        fit = pnn_ext.fit(target, degree, 10.0, method=method)
        err = fitting.TARGETS[target](x) - fit(x)
        peak = np.abs(err).max()
        sign = np.sign(err)
        starts = np.flatnonzero(np.r_[True, sign[1:] != sign[:-1]])
        runs = [np.abs(err[a:b]).max() for a, b in zip(starts, np.r_[starts[1:], err.size])]
        near_peak = sum(r >= (1 - 1e-4) * peak for r in runs)
        assert (near_peak >= degree + 2) == alternating, (method, near_peak)
        if method == "remez":
            assert fit.max_error == pytest.approx(peak, rel=1e-4)


# ---------------------------------------------------------------- the pieces, on exact cases

def test_check_degree_takes_ints_from_1_to_128_only():
    from pnn_ext import fitting
    assert [fitting.check_degree(d) for d in (1, 2, 127, 128)] == [1, 2, 127, 128]
    for bad in (0, -1, 129, True, False, 2.0, "8", None):
        with pytest.raises(ValueError) as e:
            fitting.check_degree(bad)
        assert str(e.value) == f"degree must be an integer from 1 to 128, got {bad!r}"


def test_register_target_checks_and_replaces_by_name():
    from pnn_ext import fitting

    def cap(x, c=4.0):
        return np.minimum(x * x, c)
    try:
        fitting.register_target("test_cap", cap)
        assert fitting.TARGETS["test_cap"] is cap
        fit = fitting.fit("test_cap(c=1.0)", 8, 2.0)
        assert fit.target == "test_cap(c=1.0)" and fit(np.array([2.0]))[0] == pytest.approx(1.0, abs=0.05)
        with pytest.raises(ValueError, match=r"^target 'test_cap' is already registered \(pass overwrite=True to "
                                             r"replace it\)$"):
            fitting.register_target("test_cap", np.abs)
        assert fitting.TARGETS["test_cap"] is cap
        fitting.register_target("test_cap", np.abs, overwrite=True)
        assert fitting.TARGETS["test_cap"] is np.abs
    finally:
        fitting.TARGETS.pop("test_cap", None)
    for bad in ("not a name", "2x", 3, ""):
        with pytest.raises(ValueError, match=rf"^target name must be an identifier, got {re.escape(repr(bad))}$"):
            fitting.register_target(bad, np.abs)
    with pytest.raises(TypeError, match=r"^target 'test_cap': fn must be callable, got float$"):
        fitting.register_target("test_cap", 1.5)
    assert "test_cap" not in fitting.TARGETS


def test_parse_target_reads_names_and_keyword_constants_only():
    from pnn_ext import fitting
    assert fitting.parse_target(" relu ") == ("relu", {})
    assert fitting.parse_target("leaky_relu(negative_slope=-0.2)") == ("leaky_relu", {"negative_slope": -0.2})
    assert fitting.parse_target("gelu(approximate='tanh')") == ("gelu", {"approximate": "tanh"})
    assert fitting.parse_target("f()") == ("f", {})
    for bad in ("f(1)", "a.b(x=1)", "f(x=y)", "f(**k)", "f(x=-y)", "1 +", "f(x=1", "3"):
        with pytest.raises(ValueError, match=rf"^target {re.escape(repr(bad))} is not a target name or "
                                             r"'name\(param=value, \.\.\.\)'$"):
            fitting.parse_target(bad)


def test_coefficients_in_each_basis_are_float64_copies():
    from pnn_ext import fitting
    cheb, mono = pnn_ext.fit("gelu", 6, 5.0), pnn_ext.fit("gelu", 6, 5.0, basis="monomial")
    np.testing.assert_allclose(mono.chebyshev_coeffs(), cheb.coeffs, atol=1e-12)
    assert np.array_equal(cheb.chebyshev_coeffs(), cheb.coeffs)             # already Chebyshev: as stored
    np.testing.assert_allclose(cheb.monomial_coeffs_t(), mono.coeffs, atol=1e-12)
    for fit in (cheb, mono):
        for get in (fit.chebyshev_coeffs, fit.monomial_coeffs_t):
            c = get()
            c[:] = 0                                      # the caller's copy: the fit is unchanged
        assert np.any(fit.coeffs != 0)
    c32 = np.array([1.0, 0.5, 0.25], dtype=np.float32)
    for basis in ("chebyshev", "monomial"):
        assert fitting.monomial_in_t(c32, basis).dtype == np.float64
    assert cheb(np.array([1.0, 2.0], dtype=np.float32)).dtype == np.float64   # float32 x is not kept
    x32 = np.array([1.1], dtype=np.float32)                                   # t = x / B in float64, not float32
    assert cheb(x32)[0] == cheb(x32.astype(np.float64))[0]
    assert mono(np.array([1.0], dtype=np.float32)).dtype == np.float64


@pytest.mark.parametrize("err, n, want", [
    ([1.0, 0.0, -2.0, 3.0], 3, [0, 2, 3]),                # a zero counts as positive: it joins its run
    ([1.0, -1.0, 1.0], 3, [0, 1, 2]),
    ([1.0, -5.0, 5.0, -2.0], 2, [1, 2]),                  # the smaller end goes first, then the other
    ([2.0, -5.0, 2.0], 2, [0, 1]),                        # ends equal: the last goes
    ([3.0, -5.0, 4.0, -1.0, 2.0], 3, [0, 1, 2]),
    ([1.0, 2.0, -3.0, -1.0, 4.0, 0.5], 3, [1, 2, 4]),     # the largest |err| of each run
    ([1.0, 1.0, 1.0], 2, None),                           # too few sign changes
])
def test_alternating_extrema(err, n, want):
    from pnn_ext import fitting
    got = fitting._alternating_extrema(np.array(err), n)
    assert (got is None and want is None) or got.tolist() == want


def test_remez_is_never_worse_than_least_squares_and_stops_on_an_exact_fit():
    from numpy.polynomial import chebyshev as npcheb

    from pnn_ext import fitting

    def step(x):
        return (x > 0.3).astype(np.float64)
    grid = np.cos(np.linspace(np.pi, 0.0, 2001))
    ls, mm = fitting._lstsq(step, 5, 1.0, 2001), fitting._remez(step, 5, 1.0, 2001)
    # on a step the first exchange does worse than least squares: the start is kept
    assert np.array_equal(fitting._remez(step, 5, 1.0, 2001, iters=1), ls)
    def worst(c):
        return np.max(np.abs(step(grid) - npcheb.chebval(grid, c)))
    assert worst(mm) <= worst(ls)
    zero = pnn_ext.fit(np.zeros_like, 3, 1.0, method="remez")   # no error to exchange on
    assert np.array_equal(zero.coeffs, np.zeros(4)) and zero.max_error == 0


def test_fit_checks_its_arguments_and_reports_its_error_on_a_uniform_grid():
    from pnn_ext import fitting
    for kw, msg in (({"degree": 0}, "degree must be an integer >= 1, got 0"),
                    ({"degree": 2.0}, "degree must be an integer >= 1, got 2.0"),
                    ({"bound": 0.0}, "bound must be finite and > 0, got 0.0"),
                    ({"bound": -1.0}, "bound must be finite and > 0, got -1.0"),
                    ({"bound": float("inf")}, "bound must be finite and > 0, got inf"),
                    ({"basis": "power"}, "basis must be 'chebyshev' or 'monomial', got 'power'"),
                    ({"method": "minimax"}, "method must be 'lstsq' or 'remez', got 'minimax'")):
        with pytest.raises(ValueError) as e:
            pnn_ext.fit(**{"target": "relu", "degree": 2, **kw})
        assert str(e.value) == msg
    one = pnn_ext.fit("relu", 1, 0.5)                                   # degree 1 and a bound below 1 are fine
    assert one.degree == 1 and one.bound == 0.5
    assert pnn_ext.fit("relu", 8).bound == 35.0 == fitting.preset(8)[0]   # default B: the preset's
    fit = pnn_ext.fit("gelu", 4, 10.0)
    t = np.linspace(-1.0, 1.0, 20001)
    err = np.polynomial.chebyshev.chebval(t, fit.coeffs) - fitting.TARGETS["gelu"](t * 10.0)
    assert fit.max_error == pytest.approx(np.max(np.abs(err)), rel=1e-12)
    assert fit.rms_error == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-12)


def test_remez_gives_up_after_60_exchanges(monkeypatch):
    """An exchange that does not converge (sin(50 x) at degree 5: its reference set keeps
    jumping between the oscillations) stops after 60 exchanges."""
    from pnn_ext import fitting
    calls = []
    real = fitting._alternating_extrema

    def counted(err, n):
        calls.append(n)
        return real(err, n)
    monkeypatch.setattr(fitting, "_alternating_extrema", counted)
    fitting._remez(lambda x: np.sin(50 * x), 5, 1.0, 2001)
    assert calls == [7] * 60


def test_weighted_least_squares_matches_numpys_weighted_fit():
    """fit(weight=w) minimises sum w (p - f)^2: the same coefficients as numpy's Chebyshev fit
    with residual weights sqrt(w), an independent solver."""
    from numpy.polynomial import chebyshev as C
    bound, degree = 20.0, 12

    def w(x):
        return np.exp(-0.5 * (x / 3.0) ** 2) + 0.01
    got = pnn_ext.fit("relu", degree, bound, weight=w, points=4001).coeffs
    t = np.linspace(-1, 1, 4001)
    want = C.chebfit(t, np.maximum(t * bound, 0), degree, w=np.sqrt(w(t * bound)))
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    # a constant weight is the uniform fit
    np.testing.assert_allclose(pnn_ext.fit("relu", degree, bound, weight=lambda x: np.full_like(x, 7.0)).coeffs,
                               pnn_ext.fit("relu", degree, bound).coeffs, rtol=1e-9, atol=1e-12)


def test_weighting_moves_the_accuracy_to_where_the_weight_is():
    bound = 47.0
    near = pnn_ext.fit("relu", 22, bound, weight=lambda x: np.exp(-0.5 * (x / 2.0) ** 2) + 1e-3)
    flat = pnn_ext.fit("relu", 22, bound)
    x_in, x_out = np.linspace(-3, 3, 601), np.linspace(20, 47, 601)

    def err(f, x):
        return np.max(np.abs(f(x) - np.maximum(x, 0)))
    assert err(near, x_in) < 0.6 * err(flat, x_in)
    assert err(near, x_out) > err(flat, x_out)


@pytest.mark.parametrize("weight, method, message", [
    (lambda x: -np.ones_like(x), "lstsq", "weight must give finite values >= 0"),
    (lambda x: np.zeros_like(x), "lstsq", "not all zero"),
    (lambda x: np.full_like(x, np.nan), "lstsq", "finite"),
    (lambda x: np.ones(3), "lstsq", "weight must give"),
    (lambda x: np.ones_like(x), "remez", "weight is for the least-squares fit"),
])
def test_bad_weights_are_refused_by_name(weight, method, message):
    with pytest.raises(ValueError, match=message):
        pnn_ext.fit("relu", 8, 10.0, method=method, weight=weight)
