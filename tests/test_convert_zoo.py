"""convert() on the torchvision zoo of issue 14 (weights=None, 32x32 inputs): converted
counts, what the report says remains, a training step; HE folding of a converted,
avg-pooled CNN; pnn-train's torchvision models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pnn_ext
from pnn_ext.activations import BY_MODULE
from pnn_ext.conversion import NotPolynomialError, fx_pass
from pnn_ext.nn import poly_modules

DEGREE = 8


def terms(model) -> int:
    return sum(len(m.boundary_terms) for m in poly_modules(model))


# name -> (PolyActivation modules, calls per forward, what the report says remains)
ZOO = {
    "resnet18": (9, 17, {}),
    "mobilenet_v2": (35, 35, {}),
    "mobilenet_v3_small": (42, 42, {}),
    "efficientnet_b0": (65, 65, {}),
    "regnet_y_400mf": (81, 81, {}),
    "densenet121": (121, 121, {}),  # 120 modules + the F.relu of its forward
    "squeezenet1_0": (26, 26, {}),
    "vit_b_16": (12, 12, {"layer_norm": 25, "attention (native_multi_head_attention)": 12}),
    "convnext_tiny": (18, 18, {"layer_norm": 23}),
}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _zoo_model(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    kw = {"image_size": 32} if name.startswith("vit") else {}  # 32x32 is 2x2 patches of 16
    return torchvision.models.get_model(name, weights=None, num_classes=10, **kw)


@pytest.fixture(scope="module")
def zoo():
    return {}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_he_ready(name, zoo):
    layers, calls, remains = ZOO[name]
    model = _zoo_model(name)
    before = pnn_ext.polynomial_report(model, X)
    assert before.polynomial_layers == 0 and before.ops()  # activations (and pooling) to convert
    try:
        converted = pnn_ext.convert(model, degree=DEGREE, he_ready=True, example_input=X)
        report = pnn_ext.polynomial_report(converted, X)
    except NotPolynomialError as e:  # strict refused; the converted model comes with the error
        converted, report = e.model, e.report
    assert dict(report.ops()) == remains
    assert report.polynomial_layers == layers and report.polynomial_calls == calls
    kinds = tuple(BY_MODULE) + (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
    assert not any(isinstance(m, kinds) for m in converted.modules())
    if isinstance(converted, torch.fx.GraphModule):
        for node in converted.graph.nodes:
            assert fx_pass._activation_call(node) is None and fx_pass._pool_call(node) is None
    zoo[name] = converted


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_training_step(name, zoo):
    if name not in zoo:
        pytest.skip("test_zoo_he_ready failed")
    model = zoo[name].train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = model(X)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert terms(model) == ZOO[name][1]
    bl = pnn_ext.boundary_loss(model)
    loss = F.cross_entropy(out, torch.tensor([1, 2])) + pnn_ext.nn.LAMBDA * bl
    before = [p.detach().clone() for p in model.parameters()]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_convert_resnet18_and_boundary_loss():
    torchvision = pytest.importorskip("torchvision")
    model = pnn_ext.convert(torchvision.models.resnet18(num_classes=10), degree=8)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    acts = [m for m in model.modules() if isinstance(m, pnn_ext.PolyActivation)]
    assert len(acts) == 9  # stem + one (reused) per BasicBlock
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):  # terms are per forward, not accumulated across forwards
        model(x)
        assert sum(len(a.boundary_terms) for a in acts) == 17  # the block ReLU is called twice
    loss = pnn_ext.boundary_loss(model)
    assert loss.requires_grad
    expected = sum(t for a in acts for t in a.boundary_terms)
    torch.testing.assert_close(loss, expected)


def test_he_fold_accepts_converted_avg_pooled_cnn():
    from pnn_ext.he import fold

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(16, 5))
    x = torch.randn(4, 1, 8, 8)
    cnn(x)  # BatchNorm running statistics that are not the identity
    model = pnn_ext.convert(cnn, degree=4, he_ready=True, example_input=x).eval()
    assert isinstance(model[3], nn.AvgPool2d) and isinstance(model[6], nn.AdaptiveAvgPool2d)
    he = fold(model, (1, 8, 8))
    assert [type(layer).__name__ for layer in he.layers] == ["Affine", "Poly", "Affine", "Poly", "Affine"]
    np.testing.assert_allclose(he(x), model.double()(x.double()).detach().numpy(), rtol=1e-9, atol=1e-9)


def test_pnn_train_torchvision_report_and_refusal(capsys, monkeypatch):
    pytest.importorskip("torchvision")
    from pnn_ext.train import build_model
    from pnn_ext.train.config import TrainConfig

    model = build_model(TrainConfig(model="torchvision:mobilenet_v2", degree=4), (1, 16, 16), "image", 10)
    assert {m.target for m in poly_modules(model)} == {"relu6"}  # its own target, not --target's relu
    out = capsys.readouterr().out
    assert out.startswith("torchvision:mobilenet_v2: 35 PolyActivation modules, 35 calls; nothing else")
    vit = build_model(TrainConfig(model="torchvision:vit_b_16", degree=4), (3, 32, 32), "image", 10)
    assert len(list(poly_modules(vit))) == 12 and "layer_norm" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"torchvision:squeezenet1_0 cannot run on samples of shape \(1, 8, 8\)"):
        build_model(TrainConfig(model="torchvision:squeezenet1_0", degree=4), (1, 8, 8), "image", 10)
    import torchvision

    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda *a, **k: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)))
    with pytest.raises(ValueError, match="torchvision:linear has no activation convert.. makes polynomial") as e:
        build_model(TrainConfig(model="torchvision:linear", degree=4), (3, 1, 1), "image", 2)
    assert "\n" not in str(e.value)
    from pnn_ext.train import cli

    args = ["--model", "torchvision:linear", "--dataset", "digits", "--epochs", "1", "--out-dir", "/nonexistent/x"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pnn-train: error: model torchvision:linear has no activation") and "\n" not in err
