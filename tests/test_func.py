"""torch.func through poly_act, PolyActivation and converted models, on the fused op and the reference:
grad, jacrev, jacfwd, jvp, vmap and per-sample gradients vmap(grad(loss)), each against autograd
run one sample at a time."""
import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import pnn_ext
from pnn_ext.models import SmallCNN
from testing import random_coeffs, random_input

B, ALPHA = 4.0, 0.5
IMPLS = ["fused", "reference"]


def assert_rel(actual, expected, rel=1e-5):
    """|actual - expected| <= rel * max|expected| (and equal shapes)."""
    assert actual.shape == expected.shape
    err = float((actual.double() - expected.double()).abs().max())
    assert err <= rel * max(float(expected.double().abs().max()), 1e-30), err


def act_loss(impl, basis="chebyshev", form="exp"):
    """A scalar of y and the boundary term L, so both derivatives are exercised."""
    c = random_coeffs(8, seed=3)

    def f(x):
        y, stats = pnn_ext.poly_act(x, c, B, ALPHA, basis, impl=impl, boundary_form=form)
        return (y * y).sum() + 10 * stats[0]
    return f


def autograd_grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


@pytest.mark.parametrize("form", ["exp", "quadratic"])
@pytest.mark.parametrize("basis", ["chebyshev", "monomial"])
@pytest.mark.parametrize("impl", IMPLS)
def test_grad_and_per_sample_grad_of_the_op(impl, basis, form):
    f = act_loss(impl, basis, form)
    xs = random_input((6, 40), B, seed=1, spread=1.5)  # some samples past alpha*B: L has a gradient
    assert_rel(grad(f)(xs[0]), autograd_grad(f, xs[0]))
    per_sample = vmap(grad(f))(xs)
    loop = torch.stack([autograd_grad(f, x) for x in xs])
    assert_rel(per_sample, loop)


@pytest.mark.parametrize("impl", IMPLS)
def test_jacrev_jacfwd_jvp_of_the_module(impl):
    act = pnn_ext.PolyActivation(8, bound=B, alpha=ALPHA, impl=impl)
    x = random_input((7,), B, seed=2)
    rows = torch.stack([autograd_grad(lambda v, i=i: act(v)[i], x) for i in range(x.numel())])
    assert_rel(jacrev(act)(x), rows)
    assert_rel(jacfwd(act)(x), rows)
    v = random_input((7,), 1.0, seed=5)
    y, y_t = jvp(act, (x,), (v,))
    assert_rel(y, act(x))
    assert_rel(y_t, rows @ v)


@pytest.mark.parametrize("impl", IMPLS)
def test_jvp_of_the_boundary_term_and_coefficients(impl):
    """Forward mode through both outputs and both differentiable inputs (x and coeffs)."""
    c = random_coeffs(6, seed=4)
    x = random_input((50,), B, seed=6, spread=1.5)
    xt, ct = random_input((50,), 1.0, seed=7), random_coeffs(6, seed=8)

    def f(x, c):
        y, stats = pnn_ext.poly_act(x, c, B, ALPHA, impl=impl)
        return y, stats[0]
    (y, loss), (y_t, loss_t) = jvp(f, (x, c), (xt, ct))
    xr, cr = x.clone().requires_grad_(True), c.clone().requires_grad_(True)
    yr, lr = f(xr, cr)

    def row(out):  # d out / d (x, c); L does not depend on c (None: zeros)
        gs = torch.autograd.grad(out, (xr, cr), retain_graph=True, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(t)).flatten() for g, t in zip(gs, (xr, cr))])
    jy = torch.stack([row(yr[i]) for i in range(x.numel())])
    jl = row(lr)
    tangent = torch.cat([xt, ct])
    assert_rel(y_t, jy @ tangent)
    assert_rel(loss_t, jl @ tangent)
    assert float(loss) > 0  # the inputs reach past alpha*B: L' is not trivially 0


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_statistics_are_per_sample(impl):
    c = random_coeffs(4, seed=9)
    xs = random_input((5, 3, 11), B, seed=10, spread=1.6)
    ys, stats = vmap(lambda x: pnn_ext.poly_act(x, c, B, ALPHA, impl=impl))(xs)
    for x, y, s in zip(xs, ys, stats):
        y1, s1 = pnn_ext.poly_act(x, c, B, ALPHA, impl=impl)
        assert_rel(y, y1)
        torch.testing.assert_close(s, s1, rtol=1e-6, atol=0)


def test_vmap_over_coefficients():
    """Per-sample coefficients (an ensemble of activations): one call per sample."""
    cs = torch.stack([random_coeffs(5, seed=s) for s in range(3)])
    x = random_input((20,), B, seed=11)
    ys, _ = vmap(lambda c: pnn_ext.poly_act(x, c, B, ALPHA, impl="fused"))(cs)
    for c, y in zip(cs, ys):
        assert_rel(y, pnn_ext.poly_act(x, c, B, ALPHA, impl="reference")[0])


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("impl", IMPLS)
def test_per_sample_gradients_of_a_converted_cnn(impl, learnable):
    """Differentially private training's per-sample gradients: vmap(grad(loss)) over a batch
    equals autograd run on each sample alone, for every parameter (coefficients included)."""
    torch.manual_seed(0)
    model = pnn_ext.convert(SmallCNN(1, 10, (8, 8)), degree=8, bound=B, learnable=learnable)
    pnn_ext.set_impl(model, impl).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v for k, v in model.named_buffers()}
    xs, ys = torch.randn(5, 1, 8, 8) * 2, torch.randint(0, 10, (5,))

    def loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    for i in range(xs.shape[0]):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xs[i:i + 1]), ys[i:i + 1]).backward()
        for name, p in model.named_parameters():
            assert_rel(per_sample[name][i], p.grad)
    assert any("coeffs" in k for k in params) == learnable


def test_fused_second_derivative_is_refused_in_one_line():
    f = act_loss("fused")
    x = random_input((10,), B, seed=12)
    with pytest.raises(RuntimeError, match="no second derivative yet.*impl='reference' supports it"):
        jacrev(grad(f))(x)
    ref = jacrev(grad(act_loss("reference")))(x)  # the reference differentiates twice
    assert ref.shape == (10, 10) and torch.isfinite(ref).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_jacrev_jacfwd_jvp_of_a_converted_cnn(impl):
    """The input Jacobian of a converted small CNN (one sample), by reverse and forward mode,
    equals autograd's rows; jvp equals the Jacobian times the tangent."""
    torch.manual_seed(1)
    model = pnn_ext.set_impl(pnn_ext.convert(SmallCNN(1, 10, (8, 8)), degree=8, bound=B), impl).eval()
    x, v = torch.randn(1, 1, 8, 8) * 2, torch.randn(1, 1, 8, 8)
    rows = torch.stack([autograd_grad(lambda t, i=i: model(t)[0, i], x) for i in range(10)]).reshape(10, -1)
    assert_rel(jacrev(model)(x).reshape(10, -1), rows)
    assert_rel(jacfwd(model)(x).reshape(10, -1), rows)
    y, y_t = jvp(model, (x,), (v,))
    assert_rel(y, model(x))
    assert_rel(y_t.reshape(-1), rows @ v.reshape(-1))
