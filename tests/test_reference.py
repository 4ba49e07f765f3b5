"""The pure-PyTorch reference (the op's fallback) against numpy float64 and closed forms:
values, statistics, both gradients, NaN and overflow."""
import math

import numpy as np
import pytest
import torch

import error_bounds
from pnn_ext import reference
from testing import BASES, FORMS, random_coeffs, random_input

B, ALPHA = 20.0, 0.75


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", BASES)
def test_reference_within_rounding_bounds(basis, form, dtype):
    c = random_coeffs(22, dtype=dtype, seed=1)
    # Inside and past B, and past the exponential form's cap (|x| = 60: e = 45 > 30).
    x = torch.cat([random_input((3000,), B, dtype=dtype, seed=2), torch.tensor([-60.0, 47.0, 15.0], dtype=dtype)])
    y, stats = reference.poly_act(x, c, B, ALPHA, basis, form)
    assert y.dtype == dtype and stats.dtype == dtype
    error_bounds.check_forward("reference y", y, x, c, B, basis)
    want = error_bounds.boundary_closed_form(x, B, ALPHA, form)
    tol = error_bounds.boundary_value_bound(x, B, ALPHA, form, dtype) + error_bounds.compute_roundoff(dtype) * want
    assert abs(float(stats[0]) - want) <= tol
    assert float(stats[1]) == 60.0
    assert float(stats[2]) == pytest.approx(float((x.double().abs() > B).double().mean()), rel=1e-7)

    gy = torch.randn(x.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    gs = torch.tensor([7.0, 5.0, 5.0], dtype=dtype)  # only L's gradient counts
    gx, gc = reference.poly_act_backward(gy, gs, x, c, B, ALPHA, basis, True, form)
    error_bounds.check_grad_x("reference grad_x", gx, x, gy, 7.0, c, B, ALPHA, basis, form)
    phi = np.stack([error_bounds.poly_value64(x, np.eye(23)[k], B, basis) for k in range(23)])
    error_bounds.check("reference grad_c", gc, phi @ gy.double().numpy(),
                       error_bounds.coeff_grad_bound(x, gy, c, B, basis, dtype))
    gx_only, none = reference.poly_act_backward(gy, gs, x, c, B, ALPHA, basis, False, form)
    assert torch.equal(gx_only, gx) and none.numel() == 0
    if form == "exp":  # the default form, in the forward and the backward
        assert torch.equal(reference.poly_act(x, c, B, ALPHA, basis)[1], stats)
        assert torch.equal(reference.poly_act_backward(gy, gs, x, c, B, ALPHA, basis, False)[0], gx)
    zero, _ = reference.poly_act_backward(torch.zeros_like(gy), torch.zeros_like(gs), x, c, B, ALPHA, basis, False,
                                          form)
    assert torch.equal(zero, torch.zeros_like(x))


@pytest.mark.parametrize("basis", BASES)
def test_reference_overflow_takes_the_leading_terms_sign(basis):
    """p(t) past float32's range is +-inf with the sign of lead * t^m, never NaN; a NaN
    input stays NaN (y, L, max|x|), a NaN coefficient makes y NaN everywhere."""
    for c in (torch.tensor([0.5, -1.0, 2.0, -3.0, 0.0]), torch.tensor([0.5, 1.0, 2.0, 0.25, 4.0])):
        m = int(torch.nonzero(c).max())
        x = torch.tensor([1e30, -1e30, 3e38, -3e38, 2.0])
        y, _ = reference.poly_act(x, c, B, ALPHA, basis)
        lead = math.copysign(1.0, float(c[m]))
        assert y[:4].tolist() == [lead * math.inf, lead * (-1) ** m * math.inf] * 2
        error_bounds.check_forward("finite", y[4:], x[4:], c, B, basis)
    y, stats = reference.poly_act(torch.tensor([1.0, math.nan, 40.0]), c, B, ALPHA, basis)
    assert y.isnan().tolist() == [False, True, False] and stats[:2].isnan().all()
    y, stats = reference.poly_act(torch.tensor([1.0, 40.0]), torch.tensor([1.0, math.nan, 2.0]), B, ALPHA, basis)
    assert y.isnan().all() and not stats.isnan().any()


def test_reference_empty_and_degree_one():
    y, stats = reference.poly_act(torch.empty(0, 3), torch.tensor([1.0, 2.0]), B, ALPHA)
    assert y.shape == (0, 3) and stats.tolist() == [0.0, 0.0, 0.0]
    y, _ = reference.poly_act(torch.tensor([10.0, -30.0]), torch.tensor([1.0, 2.0]), B, ALPHA, "monomial")
    assert y.tolist() == [2.0, -2.0]   # 1 + 2 t at t = 1/2, -3/2
