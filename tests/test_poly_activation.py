"""The PolyActivation module: arguments, state, boundary forms, coefficients in x,
learnable coefficients, the fused / reference switch."""
import numpy as np
import pytest
import torch
from torch import nn

import error_bounds
import pnn_ext


def test_module_bad_arguments():
    for kwargs, name in [({"degree": 0}, "degree"), ({"degree": 4, "bound": -1.0}, "bound"),
                         ({"degree": 4, "alpha": 0.0}, "alpha"), ({"degree": 4, "basis": "x"}, "basis"),
                         ({"degree": 4, "target": "swish2"}, "target"),
                         ({"degree": 4, "boundary_form": "cubic"}, "boundary_form")]:
        with pytest.raises(ValueError, match=name):
            pnn_ext.PolyActivation(**kwargs)


def test_poly_activation_drop_in_and_state():
    act = pnn_ext.PolyActivation.from_preset(22)
    assert "degree=22" in repr(act) and "bound=47" in repr(act) and "chebyshev" in repr(act)
    x = torch.linspace(-40, 40, 1001)
    assert (act(x) - torch.relu(x)).abs().max() < 1.0
    assert act.boundary_terms[0].shape == () and act.range_stats.shape == (2,)
    # state_dict round-trips, including bound / alpha / basis.
    other = pnn_ext.PolyActivation(22, bound=10.0, alpha=1.0, learnable=True)
    other.load_state_dict({"coeffs": act.coeffs, "_extra_state": act.get_extra_state()})
    assert other.bound == 47.0 and other.alpha == 0.5
    torch.testing.assert_close(other(x), act(x))


def test_poly_activation_boundary_form():
    """The quadratic form changes the boundary term only (y is the same), travels in the
    state dict, and a state saved before the form existed loads as the exponential one."""
    exp, quad = pnn_ext.PolyActivation(8), pnn_ext.PolyActivation(8, boundary_form="quadratic")
    assert "boundary_form=quadratic" in repr(quad) and "boundary_form" not in repr(exp)
    x = torch.linspace(-60, 60, 1001)
    assert torch.equal(exp(x), quad(x))
    for m in (exp, quad):   # each against its closed form, within its rounding bound
        want = error_bounds.boundary_closed_form(x, m.bound, m.alpha, m.boundary_form)
        tol = error_bounds.boundary_value_bound(x, m.bound, m.alpha, m.boundary_form, x.dtype) + 2 ** -24 * want
        assert abs(float(m.boundary_terms[0]) - want) <= tol
    assert float(exp.boundary_terms[0]) > float(quad.boundary_terms[0]) > 0
    other = pnn_ext.PolyActivation(8)
    other.load_state_dict(quad.state_dict())
    assert other.boundary_form == "quadratic"
    old_state = {k: v for k, v in quad.get_extra_state().items() if k != "boundary_form"}
    other.load_state_dict({"coeffs": quad.coeffs, "_extra_state": old_state})
    assert other.boundary_form == "exp"


def test_from_coefficients_x_monomial():
    fit = pnn_ext.fit("relu", 8, 35.0)
    act = pnn_ext.PolyActivation.from_coefficients(fit.monomial_coeffs("high"), 35.0, basis="monomial",
                                                   variable="x", order="high")
    x = torch.linspace(-35, 35, 501, dtype=torch.float64)
    # The module keeps float32 coefficients: float32 rounding of c (u32 times the condition
    # sum, which float32's bound covers), not of the (float64) evaluation.
    tol = error_bounds.value_bound(x, act.coeffs, 35.0, "monomial", torch.float32)
    error_bounds.check("y from coefficients in x", act(x), fit(x.numpy()), tol)


def test_learnable_coefficients_take_the_expected_step():
    """One SGD step on mean(p(x/B)^2) moves c_k by -lr * (2/N) sum_j p(t_j) phi_k(t_j),
    computed here in float64 by numpy; a gradient of the wrong sign would move them the
    other way, and the loss down."""
    act = pnn_ext.PolyActivation(4, learnable=True)
    before = act.coeffs.detach().double().numpy()
    x = torch.randn(100, generator=torch.Generator().manual_seed(0)) * 5
    opt = torch.optim.SGD(act.parameters(), lr=1e-2)
    loss = act(x).pow(2).mean()
    loss.backward()
    opt.step()
    p = error_bounds.poly_value64(x, before, act.bound, "chebyshev")
    phi = np.stack([error_bounds.poly_value64(x, np.eye(5)[k], act.bound, "chebyshev") for k in range(5)])
    step = -1e-2 * 2 * (phi @ p) / x.numel()
    np.testing.assert_allclose(act.coeffs.detach().double().numpy() - before, step, rtol=1e-4, atol=1e-9)
    assert float(act(x).pow(2).mean()) < float(loss)


def test_impl_switch_on_modules():
    x = torch.linspace(-60, 60, 301)
    fused = pnn_ext.PolyActivation(8)
    ref = pnn_ext.PolyActivation(8, impl="reference")
    assert "impl=reference" in repr(ref) and "impl" not in repr(fused)
    # Both against numpy's float64 p and the closed-form boundary term, not against each other.
    for m in (ref, fused):
        error_bounds.check_forward(f"{m.impl} module", m(x), x, m.coeffs, m.bound, "chebyshev")
        want = error_bounds.boundary_closed_form(x, m.bound, m.alpha, "exp")
        tol = error_bounds.boundary_value_bound(x, m.bound, m.alpha, "exp", x.dtype) + 2 ** -24 * want
        assert abs(float(m.boundary_terms[0]) - want) <= tol
    model = pnn_ext.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU()), degree=4, impl="reference")
    assert [m.impl for m in model if isinstance(m, pnn_ext.PolyActivation)] == ["reference", "reference"]
    pnn_ext.set_impl(model, "fused")
    assert [m.impl for m in model if isinstance(m, pnn_ext.PolyActivation)] == ["fused", "fused"]
    with pytest.raises(ValueError, match="impl"):
        pnn_ext.PolyActivation(4, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        pnn_ext.set_impl(model, "triton")


def test_from_preset_and_from_coefficients_defaults_and_refusals():
    act = pnn_ext.PolyActivation.from_preset(8, learnable=True)
    assert (act.degree, act.bound, act.alpha, act.coeffs.requires_grad) == (8, 35.0, 0.5, True)
    c = [0.25, -1.0, 0.5]
    x = torch.linspace(-6, 6, 13, dtype=torch.float64)
    for given in (c, np.array(c), torch.tensor(c)):
        m = pnn_ext.PolyActivation.from_coefficients(given, 3.0)     # Chebyshev in t, low order, alpha 0.5
        assert (m.degree, m.bound, m.alpha, m.basis, m.target) == (2, 3.0, 0.5, "chebyshev", "custom")
        error_bounds.check("from_coefficients", m(x), np.polynomial.chebyshev.chebval(x.numpy() / 3.0, c),
                           error_bounds.value_bound(x, m.coeffs, 3.0, "chebyshev", torch.float32))
    high = pnn_ext.PolyActivation.from_coefficients(c[::-1], 3.0, basis="monomial", variable="x", order="high")
    np.testing.assert_allclose(high.coeffs.double().numpy(), [0.25, -3.0, 4.5], rtol=1e-7)   # c_k B^k, in t
    for kwargs, message in (({"coeffs": [1.0]}, r"^coeffs must be 1-D with >= 2 entries, got shape \(1,\)$"),
                            ({"coeffs": [[1.0, 2.0]]}, r"^coeffs must be 1-D with >= 2 entries, got shape \(1, 2\)$"),
                            ({"order": "middle"}, r"^order must be 'low' or 'high', got 'middle'$"),
                            ({"variable": "x"}, r"^coefficients in x are monomial: pass basis='monomial'$"),
                            ({"variable": "y"}, r"^variable must be 't' or 'x', got 'y'$")):
        with pytest.raises(ValueError, match=message):
            pnn_ext.PolyActivation.from_coefficients(**{"coeffs": c, "bound": 3.0, **kwargs})
    assert pnn_ext.PolyActivation.from_coefficients([0.0, 1.0], 2.0).degree == 1
