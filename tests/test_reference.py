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


# ---------------------------------------------------------------- the pieces, on exact cases

def test_compute_dtype():
    assert [reference.compute_dtype(d) for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)] == \
        [torch.float32, torch.float32, torch.float32, torch.float64]


def test_poly_eval_horner_and_clenshaw_exactly():
    t = torch.tensor([2.0, 0.5, -1.0], dtype=torch.float64)
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert reference.poly_eval(t, c, "monomial").tolist() == [17.0, 2.75, 2.0]     # 1 + 2t + 3t^2
    assert reference.poly_eval(t, c, "chebyshev").tolist() == [26.0, 0.5, 2.0]     # T_2 = 2t^2 - 1
    c4 = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)                  # T_3 = 4t^3 - 3t
    assert reference.poly_eval(t, c4, "chebyshev").tolist() == [1 - 2 + 0.5 * 7 + 2 * 26, 1 - 0.5 - 0.25 - 2,
                                                                1 + 1 + 0.5 - 2]
    assert reference.poly_eval(t, c4, "monomial").tolist() == [1 - 2 + 2 + 16, 1 - 0.5 + 0.125 + 0.25,
                                                               1 + 1 + 0.5 - 2]
    c2 = torch.tensor([0.25, 3.0], dtype=torch.float64)                            # degree 1 in both bases
    for basis in BASES:
        assert reference.poly_eval(t, c2, basis).tolist() == [6.25, 1.75, -2.75]


def test_overflow_fixup_takes_the_sign_of_the_highest_nonzero_term():
    nan, inf = math.nan, math.inf
    t = torch.tensor([2.0, -2.0, -2.0, 1.0])
    x = torch.tensor([4.0, -4.0, nan, 2.0])
    p = torch.tensor([nan, nan, nan, 5.0])
    # highest non-zero: -2 t (odd): +t gives -inf, -t gives +inf; a NaN x stays NaN; finite p untouched
    out = reference.overflow_fixup(p, x, t, torch.tensor([1.0, -2.0, 0.0]))
    assert out[:2].tolist() == [-inf, inf] and out[2].isnan() and out[3] == 5.0
    small = reference.overflow_fixup(torch.tensor([nan]), torch.tensor([1.0]), torch.tensor([0.5]),
                                     torch.tensor([1.0, -2.0]))
    assert small.tolist() == [-inf]                       # 0 < t < 1 is positive t too
    out = reference.overflow_fixup(p, x, t, torch.tensor([1.0, 0.0, 3.0]))         # even: the sign of the lead
    assert out[:2].tolist() == [inf, inf]
    out = reference.overflow_fixup(p, x, t, torch.tensor([1.0, 0.0, -3.0, 0.0]))
    assert out[:2].tolist() == [-inf, -inf]
    out = reference.overflow_fixup(p, x, t, torch.tensor([1.0, nan, 3.0]))         # a NaN coefficient: not overflow
    assert out[:3].isnan().all()


@pytest.mark.parametrize("form", FORMS)
def test_boundary_term_exact_values(form):
    x = torch.tensor([0.0, 3.0, -5.0, 2.0, 33.0])                                   # B = 2, alpha = 1: e = |x| - 2
    f = (lambda e: math.expm1(min(e, 30.0)) + math.exp(30.0) * max(e - 30.0, 0.0)) if form == "exp" else \
        (lambda e: e * e)
    want = (f(1.0) + f(3.0) + f(31.0)) / 5
    got = reference.boundary_term(x, 2.0, 1.0, form)
    assert got.dtype == torch.float64 and float(got) == pytest.approx(want, rel=1e-14)
    rows = reference.boundary_term(x.reshape(1, 5).expand(2, 5) * torch.tensor([[1.0], [0.5]]), 2.0, 1.0, form,
                                   per_row=True)
    assert rows.shape == (2,) and float(rows[0]) == pytest.approx(want, rel=1e-14)
    assert float(rows[1]) == pytest.approx((f(0.5) + f(14.5)) / 5, rel=1e-14)
    assert float(reference.boundary_term(torch.empty(0), 2.0, 1.0, form)) == 0.0
    assert float(reference.boundary_term(torch.tensor([5.0]), 2.0, 1.0, form)) == pytest.approx(f(3.0), rel=1e-14)
    one = reference.boundary_term(torch.tensor([[5.0], [3.0]]), 2.0, 1.0, form, per_row=True)
    assert one.tolist() == pytest.approx([f(3.0), f(1.0)], rel=1e-14)
    assert reference.boundary_term(torch.empty(3, 0), 2.0, 1.0, form, per_row=True).tolist() == [0.0] * 3
    assert reference.boundary_term(torch.tensor([1.0, math.nan]), 2.0, 1.0, form).isnan()
    assert float(reference.boundary_term(torch.tensor([2.0, -1.0]), 2.0, 1.0, form)) == 0.0   # |x| = alpha B: none


def test_poly_act_statistics_and_dtypes():
    x = torch.tensor([1.0, -3.0, 2.0, 2.5], dtype=torch.float16)                  # B = 2: 2.0 is not past B
    c = torch.tensor([0.0, 0.0, 1.0])                                               # t^2 (monomial)
    y, stats = reference.poly_act(x, c, 2.0, 0.5, "monomial")
    assert y.dtype == torch.float16 and stats.dtype == torch.float32
    assert y.tolist() == [0.25, 2.25, 1.0, 1.5625]
    want_l = (math.expm1(0.0) + math.expm1(2.0) + math.expm1(1.0) + math.expm1(1.5)) / 4
    assert stats.tolist() == pytest.approx([want_l, 3.0, 0.5], rel=1e-6)
    x64 = x.double()
    _, s64 = reference.poly_act(x64, c.double(), 2.0, 0.5, "monomial", "quadratic")
    assert s64.dtype == torch.float64 and s64.tolist() == pytest.approx([(4 + 1 + 1.5 ** 2) / 4, 3.0, 0.5])
    _, one = reference.poly_act(torch.tensor([3.0]), c, 2.0, 0.5, "monomial")    # one element, past B
    assert one.tolist() == pytest.approx([math.expm1(2.0), 3.0, 1.0])


def test_poly_act_backward_exact_gradients():
    """p(t) = t^2 with t = x / 2: dy/dx = x / 2; dL/dx = g_L sign(x) f'(e) / N; dL/dc_k = sum g_y t^k."""
    x = torch.tensor([1.0, -3.0, 4.0], dtype=torch.float64)
    c = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    gy = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    gs = torch.tensor([0.5, 7.0, 9.0], dtype=torch.float64)                         # only g_L counts
    gx, gc = reference.poly_act_backward(gy, gs, x, c, 2.0, 1.0, "monomial", True)
    t = x / 2
    boundary = torch.tensor([0.0, -math.exp(1.0), math.exp(2.0)], dtype=torch.float64) * 0.5 / 3
    torch.testing.assert_close(gx, gy * x / 2 + boundary, rtol=1e-14, atol=0)
    torch.testing.assert_close(gc, torch.stack([gy.sum(), (gy * t).sum(), (gy * t * t).sum()]), rtol=1e-14, atol=0)
    gx2, gc2 = reference.poly_act_backward(gy, gs, x, c, 2.0, 1.0, "monomial", False)
    assert torch.equal(gx2, gx) and gc2.shape == (0,) and gc2.dtype == torch.float64
    gx16, _ = reference.poly_act_backward(gy.half(), gs.float(), x.half(), c.float(), 2.0, 1.0, "monomial", False)
    assert gx16.dtype == torch.float16


def test_backward_checks_name_the_argument():
    x = torch.zeros(2, 3)
    ok = torch.zeros(3)
    for gy, gs, msg in ((torch.zeros(3, 2), ok, "grad_y must have x's shape [2, 3], got [3, 2]"),
                        (torch.zeros(2, 3, dtype=torch.float64), ok,
                         "grad_y must have x's dtype torch.float32, got torch.float64"),
                        (torch.zeros(2, 3, device="meta"), ok, "grad_y must be on x's device cpu, got meta"),
                        (torch.zeros(2, 3), torch.zeros(4), "grad_stats must have shape (3,), got [4]"),
                        (torch.zeros(2, 3), torch.zeros(1, 3), "grad_stats must have shape (3,), got [1, 3]"),
                        (torch.zeros(2, 3), torch.zeros(3, device="meta"),
                         "grad_stats must be on x's device cpu, got meta")):
        with pytest.raises(RuntimeError) as e:
            reference.check_backward_args(gy, gs, x)
        assert str(e.value) == "pnn_ext: " + msg


def test_argument_checks_name_the_argument():
    x, c = torch.zeros(3), torch.zeros(3)
    for args, msg in (((torch.zeros(3, dtype=torch.int32), c, 1.0, 1.0, "chebyshev"),
                       "x must be float16, bfloat16, float32 or float64, got torch.int32"),
                      ((x, torch.zeros(1, 3), 1.0, 1.0, "chebyshev"),
                       "coeffs must be 1-D (degree + 1 entries), got shape (1, 3)"),
                      ((x, torch.zeros(1), 1.0, 1.0, "chebyshev"),
                       "degree must be >= 1, i.e. coeffs needs >= 2 entries, got 1"),
                      ((x, c.double(), 1.0, 1.0, "chebyshev"),
                       "coeffs must be torch.float32 for x of dtype torch.float32, got torch.float64"),
                      ((x.half(), c.half(), 1.0, 1.0, "chebyshev"),
                       "coeffs must be torch.float32 for x of dtype torch.float16, got torch.float16"),
                      ((x, torch.zeros(3, device="meta"), 1.0, 1.0, "chebyshev"),
                       "coeffs must be on x's device cpu, got meta"),
                      ((x, c, 0.0, 1.0, "chebyshev"), "bound (B) must be finite and > 0, got 0.0"),
                      ((x, c, math.inf, 1.0, "chebyshev"), "bound (B) must be finite and > 0, got inf"),
                      ((x, c, 1.0, -1.0, "chebyshev"), "alpha must be finite and > 0, got -1.0"),
                      ((x, c, 1.0, math.nan, "chebyshev"), "alpha must be finite and > 0, got nan"),
                      ((x, c, 1.0, 1.0, "power"), "basis must be 'monomial' or 'chebyshev', got 'power'"),
                      ((x, c, 1.0, 1.0, "monomial", "cubic"),
                       "boundary_form must be 'exp' or 'quadratic', got 'cubic'")):
        with pytest.raises(RuntimeError) as e:
            reference.check_args(*args)
        assert str(e.value) == "pnn_ext: " + msg
    reference.check_args(x, torch.zeros(2), 1e-30, 1e-30, "monomial", "quadratic")   # the smallest degree, tiny B
    reference.check_args(x, c, 1.0, 1.0, "chebyshev")                                # the default form is valid
    with pytest.raises(RuntimeError, match=r"^pnn_ext: coeffs must be torch\.float64 for x of dtype torch\.float64, "
                                           r"got torch\.float32$"):
        reference.check_args(x.double(), c, 1.0, 1.0, "chebyshev")


def test_half_precision_input_is_computed_in_float32():
    """t = x / B in float32, not float16: p = 1e4 (t - t0) with t0 the float32 t is 0 exactly
    (float16 arithmetic would leave ~1e4 * 1e-4)."""
    x = torch.tensor([1.1], dtype=torch.float16)
    t0 = float(x.float() * (1.0 / 3.0))
    c = torch.tensor([-1e4 * t0, 1e4], dtype=torch.float32)
    y, _ = reference.poly_act(x, c, 3.0, 1.0, "monomial")
    assert y.dtype == torch.float16 and y.tolist() == [0.0]
