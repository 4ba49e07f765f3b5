"""The comparison helper itself (bench/error_bounds.py): the op's results pass it at every
degree 1-128, and wrong answers fail it — a forward off by 1e-3 max|y| inside [-B, B] (or
outside it alone), a grad_x without its polynomial part or with the boundary part's sign
flipped, a coefficient gradient of the wrong sign, a NaN or a finite overflow."""
import numpy as np
import pytest
import torch

import error_bounds
import pnn_ext
from testing import BASES, random_coeffs, random_input

B, ALPHA = 20.0, 0.75
CHECKED_DEGREES = [1, 2, 3, 4, 8, 16, 22, 32, 48, 64, 96, 128]


def spread(degree):
    """Past B where float32 keeps p finite (T_128(1.3) ~ 1e41), a little past it above."""
    return 1.2 if degree <= 32 else 1.05


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", CHECKED_DEGREES)
def test_wrong_forward_fails_and_right_one_passes(basis, degree):
    c = random_coeffs(degree, seed=degree)
    x = random_input((4000,), B, seed=degree, spread=spread(degree))
    y, _ = pnn_ext.poly_act(x, c, B, ALPHA, basis)
    error_bounds.check_forward("y", y, x, c, B, basis)
    inside = torch.from_numpy(error_bounds.inside_interval(x, B))
    assert inside.any() and (~inside).any()
    max_inside = float(y[inside].abs().max())
    with pytest.raises(AssertionError, match=r"inside \[-B, B\]"):
        error_bounds.check_forward("y", torch.where(inside, y + 1e-3 * max_inside, y), x, c, B, basis)
    # Off by 1e-3 of the largest |y| past B, there only: named as outside.
    max_outside = float(y[~inside].abs().max())
    with pytest.raises(AssertionError, match=r"outside \[-B, B\]"):
        error_bounds.check_forward("y", torch.where(inside, y, y + 1e-3 * max_outside), x, c, B, basis)


@pytest.mark.parametrize("form", ["exp", "quadratic"])
@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", CHECKED_DEGREES)
def test_wrong_grad_x_fails_and_right_one_passes(basis, degree, form):
    c = random_coeffs(degree, seed=degree)
    x = random_input((4000,), B, seed=degree, spread=spread(degree)).requires_grad_()
    gy = torch.randn(4000, generator=torch.Generator().manual_seed(degree))
    y, stats = pnn_ext.poly_act(x, c, B, ALPHA, basis, boundary_form=form)
    parts = {}
    for name, g, g_l in (("poly", gy, 0.0), ("boundary", torch.zeros_like(gy), 7.0), ("both", gy, 7.0)):
        parts[name], = torch.autograd.grad((y, stats[0]), x, (g, torch.tensor(g_l)), retain_graph=True)
    x = x.detach()

    def check(gx):
        error_bounds.check_grad_x("grad_x", gx, x, gy, 7.0, c, B, ALPHA, basis, form)

    check(parts["both"])
    with pytest.raises(AssertionError, match="grad_x"):
        check(parts["boundary"])                    # the polynomial part missing
    with pytest.raises(AssertionError, match="grad_x"):
        check(parts["poly"] - parts["boundary"])    # the boundary part's sign flipped
    with pytest.raises(AssertionError, match="grad_x"):
        check(parts["poly"])                        # the boundary part missing


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", [1, 8, 22, 128])
def test_wrong_coefficient_gradient_fails(basis, degree):
    c = random_coeffs(degree, seed=degree).requires_grad_()
    x = random_input((3000,), B, seed=degree, spread=1.0)
    gy = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    y, _ = pnn_ext.poly_act(x, c, B, ALPHA, basis)
    gc, = torch.autograd.grad(y, c, gy)
    phi = np.stack([error_bounds.poly_value64(x, np.eye(degree + 1)[k], B, basis) for k in range(degree + 1)])
    want = phi @ gy.double().numpy()
    tol = error_bounds.coeff_grad_bound(x, gy, c.detach(), B, basis, torch.float32)
    error_bounds.check("grad_c", gc, want, tol)
    with pytest.raises(AssertionError, match="grad_c"):
        error_bounds.check("grad_c", -gc, want, tol)


def test_nan_and_overflow_are_judged_exactly():
    want = np.array([1.0, np.nan, 1e300, -1e300])
    error_bounds.check("v", torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]), want, 0.0)
    with pytest.raises(AssertionError, match="NaN"):
        error_bounds.check("v", torch.tensor([float("nan"), float("nan"), float("inf"), -float("inf")]), want, 0.0)
    with pytest.raises(AssertionError, match="overflows"):
        error_bounds.check("v", torch.tensor([1.0, float("nan"), 3e38, -float("inf")]), want, 0.0)
    with pytest.raises(AssertionError, match="overflows"):
        error_bounds.check("v", torch.tensor([1.0, float("nan"), -float("inf"), -float("inf")]), want, 0.0)


def test_boundary_closed_forms():
    """The closed forms the oracles use, at hand-computed points (cap E = 30 included)."""
    x = np.array([0.0, 15.0, -16.0, 17.5, 50.0])  # alpha*B = 15: excesses 0, 0, 1, 2.5, 35
    exp_terms = [0, 0, np.expm1(1.0), np.expm1(2.5), np.expm1(30.0) + np.exp(30.0) * 5]
    assert error_bounds.boundary_closed_form(x, B, ALPHA, "exp") == pytest.approx(np.mean(exp_terms), rel=1e-15)
    assert error_bounds.boundary_closed_form(x, B, ALPHA, "quadratic") == pytest.approx((1 + 6.25 + 35 ** 2) / 5)
    grad = error_bounds.boundary_grad64(x, 5.0, B, ALPHA, "exp")
    np.testing.assert_allclose(grad, [0, 0, -np.e, np.exp(2.5), np.exp(30.0)], rtol=1e-15)
    np.testing.assert_allclose(error_bounds.boundary_grad64(x, 5.0, B, ALPHA, "quadratic"), [0, 0, -2, 5, 70])


@pytest.mark.parametrize("fault", ["forward off by 1e-3 max|y|", "backward without p'"])
def test_bench_agreement_check_catches(fault, monkeypatch):
    """The benchmark's agreement check (bench/cases.py) uses the same bounds: at degree 22,
    where the boundary gradient reaches 1e10, a backward that drops p' still fails."""
    from cases import Case

    case = Case(22, 4096)
    real = case.forward

    def broken(variant):
        y, boundary = real(variant)
        if fault.startswith("forward"):
            return y + 1e-3 * float(y.detach().abs().max()), boundary
        return y.detach() + 0 * case.x, boundary   # same values, no gradient through p
    case.check_agreement("fused")
    monkeypatch.setattr(case, "forward", broken)
    with pytest.raises(AssertionError, match="inside" if fault.startswith("forward") else "polynomial part"):
        case.check_agreement("fused")
