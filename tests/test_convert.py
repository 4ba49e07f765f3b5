"""convert(): activation modules and functional calls (torch.fx, torch.export) ->
PolyActivation, max-pooling -> average pooling, targets and their registry.
The torchvision zoo is in test_convert_zoo.py, the report in test_readiness.py."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pnn_ext
from pnn_ext import fitting
from pnn_ext.activations import BY_MODULE
from pnn_ext.conversion import ConvertedGraphModule, ConvertError
from pnn_ext.nn import PolyActivation, poly_modules

DEGREE = 8
# Every module type convert() knows, several with parameters that are not torch's defaults.
MODULES = [nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardtanh(-2.0, 3.0), nn.LeakyReLU(0.2), nn.LeakyReLU(),
           nn.ELU(0.5), nn.SELU(), nn.CELU(2.0), nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Mish(), nn.Hardswish(),
           nn.Hardsigmoid(), nn.Sigmoid(), nn.Tanh(), nn.Softplus(), nn.Softplus(beta=2.0, threshold=5.0)]


def terms(model) -> int:
    return sum(len(m.boundary_terms) for m in poly_modules(model))


@pytest.mark.parametrize("module", MODULES, ids=repr)
def test_each_target_is_the_module_function(module):
    """The numpy target a module is fitted to is that module's function, parameters included."""
    row = BY_MODULE[type(module)]
    key = fitting.target_key(row.name, **row.params_of(module))
    _, f = fitting._target_fn(key)
    x = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    expected = copy.deepcopy(module)(x.clone())
    np.testing.assert_allclose(f(x.numpy()), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_modules_converted_to_their_own_fits():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(3, 3), copy.deepcopy(m)) for m in MODULES])
    model = pnn_ext.convert(model, degree=DEGREE)
    acts = [block[1] for block in model]
    assert all(isinstance(a, PolyActivation) for a in acts)
    keys = [a.target for a in acts]
    assert keys[:5] == ["relu", "relu6", "hardtanh(max_val=3.0, min_val=-2.0)", "leaky_relu(negative_slope=0.2)",
                        "leaky_relu"]
    assert keys[8:10] == ["gelu", "gelu(approximate='tanh')"] and keys[-1] == "softplus(beta=2.0, threshold=5.0)"
    assert len(set(keys)) == len(keys)  # each parametrised target has its own fit...
    for a, key in zip(acts, keys):
        np.testing.assert_allclose(a.coeffs.double().numpy(), fitting.fit(key, DEGREE).coeffs, rtol=1e-6, atol=1e-6)
    shared = pnn_ext.convert(nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(2, 2), nn.LeakyReLU(0.2)), degree=DEGREE)
    assert torch.equal(shared[0].coeffs, shared[2].coeffs)  # ... shared by equal targets
    assert shared[0].coeffs is not shared[2].coeffs


class Functional(nn.Module):
    """Every functional spelling convert() rewrites, in one chain."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = self.lin(x)
        x = F.relu(x)
        x = torch.relu(x) * 0.5
        x = x.relu() - 1
        x = F.gelu(x, approximate="tanh")
        x = torch.sigmoid(x) + x.sigmoid()
        x = F.silu(x) + F.hardswish(x)
        x = torch.tanh(x) - F.relu6(x)
        x = F.leaky_relu(x, 0.2) + F.leaky_relu(x, negative_slope=0.3)
        x = F.elu(x, alpha=0.5) + F.softplus(x, beta=2.0) + F.mish(x) + F.hardsigmoid(x) + F.selu(x) + F.celu(x)
        return x


FUNCTIONAL_TARGETS = ["relu", "relu", "relu", "gelu(approximate='tanh')", "sigmoid", "sigmoid", "silu", "hardswish",
                      "tanh", "relu6", "leaky_relu(negative_slope=0.2)", "leaky_relu(negative_slope=0.3)",
                      "elu(alpha=0.5)", "softplus(beta=2.0)", "mish", "hardsigmoid", "selu", "celu"]


def _poly(key):
    return PolyActivation(DEGREE, target=key, impl="reference")


def test_functional_calls_rewritten():
    torch.manual_seed(0)
    model = Functional()
    gm = pnn_ext.convert(model, degree=DEGREE, impl="reference")
    assert isinstance(gm, ConvertedGraphModule) and gm.lin is model.lin
    polys = [m for n, m in gm.named_children() if n.startswith("pnn_")]
    assert sorted(p.target for p in polys) == sorted(FUNCTIONAL_TARGETS)
    assert not any(n.startswith("pnn_") for n, _ in model.named_children())  # the original is left alone
    x = torch.randn(5, 4, dtype=torch.float64)
    gm.double()
    out = gm(x)
    assert terms(gm) == len(FUNCTIONAL_TARGETS)  # boundary_loss counts every call
    assert pnn_ext.boundary_loss(gm).requires_grad
    report = pnn_ext.polynomial_report(gm, x)
    assert report.ok and report.polynomial_calls == len(FUNCTIONAL_TARGETS)
    # The same chain with each call replaced by its polynomial, written out by hand.
    p = {k: _poly(k).double() for k in set(FUNCTIONAL_TARGETS)}
    h = model.lin.double()(x)
    h = p["relu"](h)
    h = p["relu"](h) * 0.5
    h = p["relu"](h) - 1
    h = p["gelu(approximate='tanh')"](h)
    h = 2 * p["sigmoid"](h)
    h = p["silu"](h) + p["hardswish"](h)
    h = p["tanh"](h) - p["relu6"](h)
    h = p["leaky_relu(negative_slope=0.2)"](h) + p["leaky_relu(negative_slope=0.3)"](h)
    h = (p["elu(alpha=0.5)"](h) + p["softplus(beta=2.0)"](h) + p["mish"](h) + p["hardsigmoid"](h) + p["selu"](h)
         + p["celu"](h))
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-5)  # the modules hold float32 coefficients


class InPlace(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        y = x * 2
        if self.kind == "F.relu_":
            F.relu_(y)
        elif self.kind == "torch.relu_":
            torch.relu_(y)
        elif self.kind == "method":
            y.relu_()
        else:
            F.relu(y, inplace=True)
        return y + 1  # reads y, which the in-place call changed


@pytest.mark.parametrize("kind", ["F.relu_", "torch.relu_", "method", "inplace=True"])
def test_inplace_calls_keep_their_meaning(kind):
    gm = pnn_ext.convert(InPlace(kind), degree=DEGREE, impl="reference")
    x = torch.linspace(-3, 3, 11, dtype=torch.float64)
    (poly,) = poly_modules(gm)
    torch.testing.assert_close(gm(x), poly.double()(2 * x) + 1)


class Mode(nn.Module):
    """The graph depends on the mode torch.fx traces it in."""

    def forward(self, x):
        return F.dropout(F.relu(x), 0.5, self.training)


def test_train_and_eval_graphs_and_copies():
    gm = pnn_ext.convert(Mode(), degree=DEGREE).eval()
    x = torch.ones(1000)
    torch.testing.assert_close(gm(x), gm(x))  # eval: no dropout baked in
    gm.train()
    assert (gm(x) == 0).any()
    clone = copy.deepcopy(gm).eval()
    torch.testing.assert_close(clone(x), gm.eval()(x))
    clone(x)
    assert terms(clone) == 1  # still tracked: the terms of one forward
    state = gm.state_dict()
    again = pnn_ext.convert(Mode(), degree=DEGREE)
    again.load_state_dict(state)
    assert state.keys() == again.state_dict().keys() and any(k.startswith("pnn_relu") for k in state)


def test_no_functional_call_keeps_the_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert pnn_ext.convert(model, degree=DEGREE) is model


class Untraceable(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: neither torch.fx nor torch.export follows it
            return torch.relu(x)
        return x


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(ConvertError, match="torch.fx cannot trace Untraceable.*example_input.*functional=False"):
        pnn_ext.convert(Untraceable(), degree=DEGREE)
    with pytest.raises(ConvertError, match="neither torch.fx nor torch.export can trace Untraceable"):
        pnn_ext.convert(Untraceable(), degree=DEGREE, example_input=torch.ones(3))
    model = pnn_ext.convert(Untraceable(), degree=DEGREE, functional=False)
    ops = pnn_ext.polynomial_report(model, torch.ones(3)).ops()
    assert ops == {"comparison (gt)": 1, "value read by Python (item, if on a tensor)": 1, "relu": 1}


class ShapeBranch(nn.Module):
    """torch.fx cannot branch on a shape; torch.export, given an input, can."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        if x.shape[0] > 1:
            x = F.gelu(self.lin(x), approximate="tanh")
            F.relu_(x)
        return F.max_pool1d(self.act(x)[:, None], 2) + F.adaptive_max_pool1d(torch.sigmoid(x)[:, None], 1)


def test_torch_export_where_fx_cannot_trace():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    model = ShapeBranch().eval()
    gm = pnn_ext.convert(model, degree=DEGREE, example_input=x, max_pool="avg", impl="reference")
    assert gm.act is model.act  # the module converted in place, at its own path
    targets = sorted(m.target for m in poly_modules(gm))
    assert targets == sorted(["gelu(approximate='tanh')", "relu", "leaky_relu(negative_slope=0.2)", "sigmoid"])
    assert pnn_ext.polynomial_report(gm, x).ok
    out = gm(x)
    assert terms(gm) == 4
    p = {m.target: m for m in poly_modules(gm)}
    h = p["relu"](p["gelu(approximate='tanh')"](model.lin(x)))
    expected = F.avg_pool1d(p["leaky_relu(negative_slope=0.2)"](h)[:, None], 2) + p["sigmoid"](h)[:, None].mean(
        -1, keepdim=True)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("degree", [0, 129, True, 2.0, "8"])
def test_degree_validated(degree):
    with pytest.raises(ValueError, match="degree must be an integer from 1 to 128"):
        pnn_ext.convert(nn.ReLU(), degree=degree)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_pool"):
        pnn_ext.convert(nn.ReLU(), degree=2, max_pool="min")
    with pytest.raises(ValueError, match="he_ready"):
        pnn_ext.convert(nn.ReLU(), degree=2, he_ready=True, max_pool="keep", example_input=torch.ones(1))
    with pytest.raises(ValueError, match="example_input"):
        pnn_ext.convert(nn.ReLU(), degree=2, strict=True)
    with pytest.raises(ValueError, match="types"):
        pnn_ext.convert(nn.ReLU(), degree=2, types=(nn.Softmax,))


def test_types_and_target_override():
    model = pnn_ext.convert(nn.Sequential(nn.ReLU(), nn.SiLU()), degree=4, types=(nn.SiLU,))
    assert isinstance(model[0], nn.ReLU) and model[1].target == "silu"
    model = pnn_ext.convert(nn.Sequential(nn.ReLU(), nn.Sigmoid()), degree=4, target="tanh")
    assert [m.target for m in model] == ["tanh", "tanh"]


def test_register_target():
    name = "test_convert_square_clip"
    pnn_ext.register_target(name, lambda x, cap=4.0: np.minimum(x * x, cap))
    try:
        with pytest.raises(ValueError, match="already registered"):
            pnn_ext.register_target(name, np.abs)
        with pytest.raises(ValueError, match="identifier"):
            pnn_ext.register_target("not a name", np.abs)
        key = fitting.target_key(name, cap=9.0)
        assert key == f"{name}(cap=9.0)" and fitting.target_key(name, cap=4.0) == name
        fit = pnn_ext.fit(key, 4, 3.0)
        t = np.linspace(-3, 3, 7)  # x^2 below the cap on all of [-3, 3]: exact at degree 4
        np.testing.assert_allclose(fit(t), t * t, atol=1e-9)
        model = pnn_ext.convert(nn.Sequential(nn.ReLU()), degree=4, target=key)
        assert model[0].target == key
        with pytest.raises(ValueError, match="no parameter"):
            fitting.target_key(name, slope=1.0)
    finally:
        del fitting.TARGETS[name]


def test_max_pool_to_average_pool_same_geometry():
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
    model = pnn_ext.convert(nn.Sequential(pool, nn.AdaptiveMaxPool2d(2)), degree=2, max_pool="avg")
    assert isinstance(model[0], nn.AvgPool2d) and isinstance(model[1], nn.AdaptiveAvgPool2d)
    assert model[0](x).shape == pool(x).shape
    # The padding is not counted: the corner window averages its 4 real inputs.
    torch.testing.assert_close(model[0](x)[..., 0, 0], x[..., :2, :2].mean((-1, -2)))
    torch.testing.assert_close(model(x), F.adaptive_avg_pool2d(F.avg_pool2d(x, 3, 2, 1, True, False), 2))
    kept = pnn_ext.convert(nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(2, dilation=2)), degree=2)
    assert isinstance(kept[0], nn.MaxPool2d)  # off by default
    dilated = pnn_ext.convert(nn.Sequential(nn.MaxPool2d(2, dilation=2)), degree=2, max_pool="avg")
    assert isinstance(dilated[0], nn.MaxPool2d)  # no average-pooling counterpart: kept, and reported
    assert pnn_ext.polynomial_report(dilated, x).ops() == {"max_pool2d": 1}


class FunctionalPool(nn.Module):
    def forward(self, x):
        return F.adaptive_max_pool2d(F.max_pool2d(x, 3, 2, 1, ceil_mode=True), 2) + torch.max_pool2d(x, 11)


def test_functional_max_pool_to_average():
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    gm = pnn_ext.convert(FunctionalPool(), degree=2, max_pool="avg")
    expected = F.adaptive_avg_pool2d(F.avg_pool2d(x, 3, 2, 1, True, False), 2) + F.avg_pool2d(x, 11)
    torch.testing.assert_close(gm(x), expected)
    assert pnn_ext.polynomial_report(gm, x).ok


def test_transformer_layers_activation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
                          nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", batch_first=True),
                          nn.TransformerEncoderLayer(8, 2, 16, activation=nn.SiLU(), batch_first=True))
    x = torch.randn(2, 5, 8)
    model = pnn_ext.convert(model, degree=DEGREE)
    assert [layer.activation.target for layer in model] == ["relu", "gelu", "silu"]
    report = pnn_ext.polynomial_report(model, x)
    assert report.ops() == {"layer_norm": 6, "attention (native_multi_head_attention)": 3}
    assert report.polynomial_calls == 3
    model(x)
    assert terms(model) == 3
