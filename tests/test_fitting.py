"""Fitting: least squares and Remez, the monomial export, the presets."""
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
