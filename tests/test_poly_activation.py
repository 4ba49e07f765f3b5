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


# ---------------------------------------------------------------- exact behaviour, piece by piece

def test_module_argument_messages():
    for kwargs, message in (({"degree": 0}, "degree must be an integer from 1 to 128, got 0"),
                            ({"degree": 4, "bound": -1.0}, "bound must be finite and > 0, got -1.0"),
                            ({"degree": 4, "bound": float("nan")}, "bound must be finite and > 0, got nan"),
                            ({"degree": 4, "alpha": 0.0}, "alpha must be finite and > 0, got 0.0"),
                            ({"degree": 4, "alpha": float("inf")}, "alpha must be finite and > 0, got inf"),
                            ({"degree": 4, "basis": "x"}, "basis must be 'chebyshev' or 'monomial', got 'x'"),
                            ({"degree": 4, "impl": "x"},
                             "impl must be one of ['auto', 'fused', 'reference', 'decomposed'], got 'x'"),
                            ({"degree": 4, "boundary_form": "x"},
                             "boundary_form must be one of ['exp', 'quadratic'], got 'x'"),
                            ({"degree": 2, "coeffs": [1.0, 2.0]},
                             "coeffs must have shape (3,) for degree 2, got (2,)")):
        with pytest.raises(ValueError) as e:
            pnn_ext.PolyActivation(**kwargs)
        assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        pnn_ext.set_impl(nn.Sequential(), "x")
    assert str(e.value) == "impl must be one of ['auto', 'fused', 'reference', 'decomposed'], got 'x'"


def test_module_settings_repr_and_storage():
    act = pnn_ext.PolyActivation(8)
    assert (act.degree, act.bound, act.alpha, act.target, act.basis, act.learnable, act.impl, act.boundary_form) == \
        (8, 35.0, 0.5, "relu", "chebyshev", False, "auto", "exp")
    assert act.extra_repr() == "degree=8, bound=35, alpha=0.5, basis=chebyshev, target=relu, learnable=False"
    other = pnn_ext.PolyActivation(3, 2.5, 0.25, "gelu", "monomial", True, "remez", impl="reference",
                                   boundary_form="quadratic")
    assert other.extra_repr() == ("degree=3, bound=2.5, alpha=0.25, basis=monomial, target=gelu, learnable=True, "
                                  "impl=reference, boundary_form=quadratic")
    want = pnn_ext.fit("gelu", 3, 2.5, basis="monomial", method="remez").coeffs
    np.testing.assert_allclose(other.coeffs.detach().numpy(), want, rtol=1e-6)
    assert isinstance(other.coeffs, nn.Parameter) and [n for n, _ in other.named_parameters()] == ["coeffs"]
    assert not list(act.parameters()) and [n for n, _ in act.named_buffers()] == ["coeffs"]
    assert act.coeffs.dtype == torch.float32 and act.boundary_terms == [] and act.range_stats is None
    src = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    m = pnn_ext.PolyActivation(1, coeffs=src)
    with torch.no_grad():
        src[0] = 9.0                                        # a copy: the module keeps its own
    assert m.coeffs.tolist() == [0.5, 1.0] and not m.coeffs.requires_grad and m.coeffs.dtype == torch.float32
    assert pnn_ext.PolyActivation(1, coeffs=np.array([0.25, 1])).coeffs.tolist() == [0.25, 1.0]


def test_forward_statistics_and_compute_dtype():
    act = pnn_ext.PolyActivation(2, 2.0, 1.0, basis="monomial", coeffs=[0.0, 0.0, 1.0])       # t^2
    x = torch.tensor([1.0, -3.0, 2.0, 4.0], dtype=torch.float64)
    y = act(x)
    assert y.dtype == torch.float64 and y.tolist() == [0.25, 2.25, 1.0, 4.0]                 # float64 throughout
    assert act.range_stats.tolist() == [4.0, 0.5] and not act.range_stats.requires_grad
    want = (np.expm1(1.0) + np.expm1(2.0)) / 4
    assert len(act.boundary_terms) == 1 and float(act.boundary_terms[0]) == pytest.approx(want, rel=1e-12)
    act(x[:1])
    assert len(act.boundary_terms) == 1 and float(act.boundary_terms[0]) == 0.0              # replaced, not added
    y16 = act(x.half())
    assert y16.dtype == torch.float16 and y16.tolist() == [0.25, 2.25, 1.0, 4.0]


def test_track_keeps_every_call_of_one_forward_and_boundary_loss_sums_them():
    act = pnn_ext.PolyActivation(2, 2.0, 1.0, basis="monomial", coeffs=[0.0, 0.0, 1.0])
    other = pnn_ext.PolyActivation(2, 1.0, 1.0, basis="monomial", coeffs=[0.0, 0.0, 1.0], boundary_form="quadratic")

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act, self.other = act, other

        def forward(self, x):
            return self.other(self.act(self.act(x)))
    model = Twice()
    assert float(pnn_ext.boundary_loss(model)) == 0.0 and pnn_ext.boundary_loss(model).shape == ()
    assert pnn_ext.track(model) is model and pnn_ext.track(model) is model
    assert len(model._forward_pre_hooks) == 1                                # tracked once
    x = torch.tensor([3.0, 0.0], dtype=torch.float64)                        # act: t = 1.5 -> 2.25 -> ...
    model(x)
    assert [len(act.boundary_terms), len(other.boundary_terms)] == [2, 1]
    e1 = np.expm1(1.0) / 2                                                   # |3| - 2 = 1
    h = 3.0 ** 2 / 4                                                         # the first call's output, 2.25
    e2 = np.expm1(h - 2.0) / 2 if h > 2.0 else 0.0
    z = (h * h / 4)                                                          # second output into other (B = 1)
    q = (z - 1.0) ** 2 / 2
    loss = pnn_ext.boundary_loss(model)
    assert loss.dtype == torch.float64 and float(loss) == pytest.approx(e1 + e2 + q, rel=1e-12)
    model(x[1:])                                                             # the next forward starts afresh
    assert [len(act.boundary_terms), len(other.boundary_terms)] == [2, 1] and float(pnn_ext.boundary_loss(model)) == 0
    model(x.float())
    assert pnn_ext.boundary_loss(model).dtype == torch.float32
    assert list(pnn_ext.nn.poly_modules(model)) == [act, other]
    assert pnn_ext.set_impl(model, "reference") is model and (act.impl, other.impl) == ("reference", "reference")


def test_set_bound_refits_in_place():
    act = pnn_ext.PolyActivation(4, 10.0, learnable=True, method="remez")
    param = act.coeffs
    act.set_bound(5.0)
    assert act.coeffs is param and act.bound == 5.0
    np.testing.assert_allclose(act.coeffs.detach().numpy(), pnn_ext.fit("relu", 4, 5.0).coeffs, rtol=1e-6)
    act.set_bound(6, method="remez")
    assert act.bound == 6.0 and isinstance(act.bound, float)
    np.testing.assert_allclose(act.coeffs.detach().numpy(), pnn_ext.fit("relu", 4, 6.0, method="remez").coeffs,
                               rtol=1e-6)
    leaky = pnn_ext.PolyActivation(2, 3.0, target="leaky_relu(negative_slope=0.2)", basis="monomial")
    leaky.set_bound(4.0)
    np.testing.assert_allclose(leaky.coeffs.numpy(), pnn_ext.fit("leaky_relu(negative_slope=0.2)", 2, 4.0,
                                                                 basis="monomial").coeffs, rtol=1e-6)
    for target in ("custom", "not a key(", "nosuch"):
        m = pnn_ext.PolyActivation.from_coefficients([0.0, 1.0], 2.0, target=target)
        with pytest.raises(ValueError) as e:
            m.set_bound(3.0)
        assert str(e.value) == f"set_bound refits the target function; this activation's target is {target!r}"
    with pytest.raises(ValueError) as e:
        act.set_bound(0.0)
    assert str(e.value) == "bound must be finite and > 0, got 0.0" and act.bound == 6.0


def test_extra_state_carries_the_settings():
    act = pnn_ext.PolyActivation(3, 2.5, 0.25, "gelu", "monomial", boundary_form="quadratic")
    assert act.get_extra_state() == {"degree": 3, "bound": 2.5, "alpha": 0.25, "basis": "monomial", "target": "gelu",
                                     "boundary_form": "quadratic"}
    other = pnn_ext.PolyActivation(3)
    other.set_extra_state({"degree": 3, "bound": 4, "alpha": 1, "basis": "monomial", "target": "tanh"})
    assert (other.bound, other.alpha, other.basis, other.target, other.boundary_form) == \
        (4.0, 1.0, "monomial", "tanh", "exp")
    assert isinstance(other.bound, float) and isinstance(other.alpha, float)
    with pytest.raises(ValueError) as e:
        other.set_extra_state({**act.get_extra_state(), "degree": 4})
    assert str(e.value) == "state_dict is for degree 4, this module has degree 3"


def test_torchscript_is_refused_with_one_line():
    with pytest.raises(RuntimeError) as e:
        torch.jit.script(nn.Sequential(pnn_ext.PolyActivation(2)))
    assert str(e.value) == ("pnn_ext: torch.jit.script (TorchScript, in maintenance) is not supported for "
                            "PolyActivation; use torch.export.export(model, (x,)), or pnn_ext.export_onnx(model, x, "
                            "'model.onnx') for ONNX (docs/export.md)")
    assert pnn_ext.nn._in_torchscript_onnx_export() is False


def test_from_coefficients_takes_tensors_with_gradients_and_passes_settings_on():
    c = torch.tensor([0.25, -1.0], requires_grad=True)
    m = pnn_ext.PolyActivation.from_coefficients(c, 2.0, learnable=True, impl="reference", boundary_form="quadratic")
    assert m.coeffs.tolist() == [0.25, -1.0] and isinstance(m.coeffs, nn.Parameter)
    assert (m.impl, m.boundary_form, m.learnable) == ("reference", "quadratic", True)


def test_onnx_torchscript_export_is_refused_with_one_line(monkeypatch):
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    monkeypatch.setattr(GLOBALS, "in_onnx_export", True)
    assert pnn_ext.nn._in_torchscript_onnx_export() is True
    with pytest.raises(RuntimeError) as e:
        pnn_ext.PolyActivation(2).get_extra_state()
    assert str(e.value).startswith("pnn_ext: torch.onnx.export(..., dynamo=False) (TorchScript, in maintenance) is not "
                                   "supported for PolyActivation; use torch.export.export")
