"""Op registration (opcheck, torch.compile), argument errors, module, fitting, clipping."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import reference
from testing import DEVICES, random_coeffs, random_input


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("coeffs_grad", [False, True])
def test_opcheck(device, dtype, coeffs_grad):
    c = random_coeffs(8, dtype, device).requires_grad_(coeffs_grad)
    for x in (random_input((3, 33), 20.0, dtype, device).requires_grad_(), random_input((7,), 20.0, dtype, device)):
        torch.library.opcheck(torch.ops.pnn_ext.poly_act, (x, c, 20.0, 0.75, "chebyshev"))
        torch.library.opcheck(torch.ops.pnn_ext.poly_act, (x, c, 20.0, 0.75, "chebyshev", "quadratic"))
    x = random_input((3, 33), 20.0, dtype, device)
    gs = torch.tensor([1.5, 0.0, 0.0], dtype=reference.compute_dtype(dtype), device=device)
    for form in ("exp", "quadratic"):
        torch.library.opcheck(torch.ops.pnn_ext.poly_act_backward,
                              (torch.randn_like(x), gs, x, c.detach(), 20.0, 0.75, "monomial", coeffs_grad, form))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    c = random_coeffs(22, device=device).requires_grad_()
    x = random_input((64, 33), 47.0, device=device).requires_grad_()

    def step(x, c):
        y, stats = pnn_ext.poly_act(x, c, 47.0, 0.5, "chebyshev")
        return (y.sin().sum() + 1000 * stats[0]), stats

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    out_e, st_e = step(x, c)
    ge = torch.autograd.grad(out_e, (x, c))
    out_c, st_c = compiled(x, c)
    gc = torch.autograd.grad(out_c, (x, c))
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(st_c, st_e)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)


def test_module_under_torch_compile_inductor_cpu():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), pnn_ext.PolyActivation(8), nn.Linear(16, 2))
    pnn_ext.track(model)
    x = torch.randn(32, 8) * 10
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager)


BAD_ARGS = [
    ("x", lambda x, c: (x.long(), c, 20.0, 0.5, "chebyshev")),
    ("x", lambda x, c: (x.int(), c, 20.0, 0.5, "chebyshev")),
    ("degree", lambda x, c: (x, c[:1], 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x, c.reshape(3, 3), 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x, c.double(), 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x.double(), c, 20.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, 0.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, -3.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, math.nan, 0.5, "chebyshev")),
    ("alpha", lambda x, c: (x, c, 20.0, 0.0, "chebyshev")),
    ("basis", lambda x, c: (x, c, 20.0, 0.5, "legendre")),
    ("degree", lambda x, c: (x, torch.zeros(200), 20.0, 0.5, "chebyshev")),
    ("boundary_form", lambda x, c: (x, c, 20.0, 0.5, "chebyshev", "cubic")),
]


@pytest.mark.parametrize("name,make", BAD_ARGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_ARGS)])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_bad_arguments_name_the_argument(name, make, impl):
    f = torch.ops.pnn_ext.poly_act if impl == "fused" else reference.poly_act
    x, c = torch.randn(10), torch.randn(9)
    args = make(x, c)
    if impl == "reference" and name == "degree" and args[1].numel() > 129:
        pytest.skip("the reference has no degree limit")
    with pytest.raises(RuntimeError, match=name):
        f(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_coeffs_on_wrong_device():
    with pytest.raises(RuntimeError, match="coeffs must be on x's device"):
        torch.ops.pnn_ext.poly_act(torch.randn(10, device="cuda"), torch.randn(9), 20.0, 0.5, "chebyshev")


def test_module_bad_arguments():
    for kwargs, name in [({"degree": 0}, "degree"), ({"degree": 4, "bound": -1.0}, "bound"),
                         ({"degree": 4, "alpha": 0.0}, "alpha"), ({"degree": 4, "basis": "x"}, "basis"),
                         ({"degree": 4, "target": "swish2"}, "target"),
                         ({"degree": 4, "boundary_form": "cubic"}, "boundary_form")]:
        with pytest.raises(ValueError, match=name):
            pnn_ext.PolyActivation(**kwargs)


# ---------------------------------------------------------------- fitting

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


# ---------------------------------------------------------------- module

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
    e = (x.double().abs() - quad.alpha * quad.bound).clamp(min=0)
    torch.testing.assert_close(quad.boundary_terms[0].double(), e.square().mean(), rtol=1e-5, atol=0)
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
    # The module keeps float32 coefficients: float32 rounding of c, not of the evaluation.
    torch.testing.assert_close(act(x), torch.from_numpy(fit(x.numpy())), rtol=0, atol=1e-5)


def test_learnable_coefficients_train():
    act = pnn_ext.PolyActivation(4, learnable=True)
    before = act.coeffs.detach().clone()
    opt = torch.optim.SGD(act.parameters(), lr=1e-3)
    loss = act(torch.randn(100) * 5).pow(2).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(before, act.coeffs.detach())


def test_selective_clipping_spares_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), pnn_ext.PolyActivation(2), nn.Flatten(),
                          nn.LazyLinear(3), nn.BatchNorm1d(3))
    model(torch.randn(5, 3, 8, 8))
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    total = pnn_ext.clip_grad_norm_selective_(model, max_norm=1.0)
    bn = {id(p) for m in (model[1], model[5]) for p in m.parameters()}
    others = [p for p in model.parameters() if id(p) not in bn]
    assert total == pytest.approx(10.0 * math.sqrt(sum(p.numel() for p in others)), rel=1e-5)
    assert torch.cat([p.grad.flatten() for p in others]).norm() == pytest.approx(1.0, rel=1e-4)
    for p in model.parameters():
        if id(p) in bn:
            assert torch.equal(p.grad, torch.full_like(p, 10.0))


def test_impl_switch_on_modules():
    x = torch.linspace(-60, 60, 301)
    fused = pnn_ext.PolyActivation(8)
    ref = pnn_ext.PolyActivation(8, impl="reference")
    assert "impl=reference" in repr(ref) and "impl" not in repr(fused)
    y_ref, s_ref = reference.poly_act(x, ref.coeffs, ref.bound, ref.alpha, "chebyshev")
    torch.testing.assert_close(ref(x), y_ref, rtol=0, atol=0)
    torch.testing.assert_close(ref.boundary_terms[0], s_ref[0], rtol=0, atol=0)
    torch.testing.assert_close(fused(x), y_ref, rtol=1e-5, atol=1e-5)
    model = pnn_ext.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU()), degree=4, impl="reference")
    assert [m.impl for m in model if isinstance(m, pnn_ext.PolyActivation)] == ["reference", "reference"]
    pnn_ext.set_impl(model, "fused")
    assert [m.impl for m in model if isinstance(m, pnn_ext.PolyActivation)] == ["fused", "fused"]
    with pytest.raises(ValueError, match="impl"):
        pnn_ext.PolyActivation(4, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        pnn_ext.set_impl(model, "triton")
