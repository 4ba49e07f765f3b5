"""impl="decomposed" (pnn_ext.ops.decomposed): the activation in plain operations for inductor to
fuse, against the fused op: eager, and compiled inside a model (values, gradients of x and of the
coefficients, the boundary term and the range statistics), on random coefficients."""
import math

import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import ops
from testing import DEVICES, FORMS, cuda_only, random_coeffs, random_input

B, ALPHA = 6.0, 0.5


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max()) / max(float(b.double().abs().max()), 1e-30)


def fwd_bwd(impl, x, c, basis, form):
    """(y, stats, dL/dx, dL/dc) of L = sum(y * w) + 1000 * boundary term."""
    x, c = x.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    y, stats = pnn_ext.poly_act(x, c, B, ALPHA, basis, impl=impl, boundary_form=form)
    w = torch.linspace(-1, 1, x.numel(), dtype=x.dtype, device=x.device).reshape(x.shape)
    gx, gc = torch.autograd.grad((y * w).sum() + 1000 * stats[0], (x, c))
    return y.detach(), stats.detach(), gx, gc


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", ["chebyshev", "monomial"])
@pytest.mark.parametrize("degree", [1, 8, 22])
def test_decomposed_equals_the_fused_op(device, degree, basis, form):
    c = random_coeffs(degree, seed=degree, device=device)
    x = random_input((37, 29), B, device=device, seed=degree)  # 1.2 B: past alpha*B and B
    fused, dec = fwd_bwd("fused", x, c, basis, form), fwd_bwd("decomposed", x, c, basis, form)
    assert float(fused[1][0]) > 0  # the boundary term is exercised
    for name, a, b in zip(("y", "stats", "grad x", "grad coeffs"), dec, fused):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert rel_err(a, b) < 2e-5, (name, rel_err(a, b))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_decomposed_dtypes(dtype):
    c = random_coeffs(8, dtype)
    x = random_input((500,), B, dtype)
    (y1, s1), (y2, s2) = (pnn_ext.poly_act(x, c, B, ALPHA, impl=i) for i in ("fused", "decomposed"))
    assert y2.dtype == dtype and s2.dtype == s1.dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-2  # bfloat16: one rounding of y
    assert rel_err(y2, y1) < tol and rel_err(s2, s1) < max(tol, 1e-6)


def test_decomposed_overflow_nan_and_empty():
    c = random_coeffs(22)
    x = torch.tensor([math.nan, 1e30, -1e30, 1.0, 1e8])
    (y1, s1), (y2, s2) = (pnn_ext.poly_act(x, c, B, ALPHA, impl=i) for i in ("fused", "decomposed"))
    torch.testing.assert_close(y2, y1, equal_nan=True)  # +-inf where p overflows, never NaN; NaN stays
    assert math.isnan(s2[0]) and math.isnan(s1[0])
    (y1, s1), (y2, s2) = (pnn_ext.poly_act(torch.empty(0), c, B, ALPHA, impl=i) for i in ("fused", "decomposed"))
    assert y2.shape == (0,) and s2.tolist() == s1.tolist() == [0.0, 0.0, 0.0]


def test_decomposed_checks_arguments_as_the_op():
    with pytest.raises(RuntimeError, match="coeffs must be torch.float32"):
        ops.decomposed(torch.ones(3), torch.ones(3, dtype=torch.float64), B, ALPHA)
    with pytest.raises(ValueError, match="impl must be one of"):
        pnn_ext.PolyActivation(8, impl="decomposd")
    act = pnn_ext.PolyActivation(8, impl="decomposed")
    assert "impl=decomposed" in repr(act)


def small_net(impl, device):
    torch.manual_seed(0)
    # BatchNorm before each activation keeps its input O(1): some of it past alpha*B, none far out
    # (and no bias before it: its gradient is zero but for rounding, nothing to compare).
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                        pnn_ext.PolyActivation(8, 2.5, impl=impl), nn.Flatten(), nn.Linear(4 * 6 * 6, 8, bias=False),
                        nn.BatchNorm1d(8), pnn_ext.PolyActivation(8, 2.5, impl=impl, learnable=True), nn.Linear(8, 3))
    with torch.no_grad():  # random coefficients, not the fitted ReLU
        for i, m in enumerate(pnn_ext.nn.poly_modules(net)):
            m.coeffs.copy_(random_coeffs(8, seed=10 + i))
    return pnn_ext.track(net.to(device))


# aot_eager: Dynamo's trace and AOTAutograd's backward, quickly; inductor: the fused kernels
# themselves (a minute of C++ builds on CPU, hence slow there).
@pytest.mark.parametrize("device,backend", [
    ("cpu", "aot_eager"), pytest.param("cpu", "inductor", marks=pytest.mark.slow),
    pytest.param("cuda", "inductor", marks=[cuda_only, pytest.mark.cuda])])
def test_compiled_decomposed_model_equals_eager_fused(device, backend):
    """A model compiled with impl="decomposed" (inductor fuses the activation with BatchNorm and
    bias) gives what the eager model with the fused op gives: loss, boundary terms, range
    statistics and every parameter's gradient, learnable coefficients included."""
    torch._dynamo.reset()
    x = torch.randn(16, 2, 6, 6, device=device) * 3
    target = torch.randint(0, 3, (16,), device=device)
    results = []
    for impl, compile_it in (("fused", False), ("decomposed", True)):
        net = small_net(impl, device)

        def loss_fn(x, target, net=net):
            return nn.functional.cross_entropy(net(x), target) + 1000 * pnn_ext.boundary_loss(net)

        loss = (torch.compile(loss_fn, backend=backend, fullgraph=True) if compile_it else loss_fn)(x, target)
        loss.backward()
        polys = list(pnn_ext.nn.poly_modules(net))
        results.append((loss.detach(), [t.detach() for m in polys for t in m.boundary_terms],
                        [m.range_stats for m in polys], [p.grad for p in net.parameters()]))
    (loss_e, terms_e, stats_e, grads_e), (loss_c, terms_c, stats_c, grads_c) = results
    assert float(sum(terms_e)) > 0  # the boundary terms take part
    assert rel_err(loss_c, loss_e) < 1e-5
    for a, b in zip(terms_c + stats_c, terms_e + stats_e):
        assert rel_err(a, b) < 1e-5
    assert len(grads_c) == len(grads_e)
    for a, b in zip(grads_c, grads_e):
        assert rel_err(a, b) < 1e-4
