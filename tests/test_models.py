"""The model zoo (pnn_ext.models) and pnn-train's --model names (build_model)."""
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import models
from pnn_ext.train import build_model
from pnn_ext.train.config import TrainConfig


def test_image_model_on_features_is_a_clear_error():
    cfg = TrainConfig(model="small-cnn")
    with pytest.raises(ValueError, match="needs images.*use --model mlp"):
        build_model(cfg, (6,), "features", 3)


@pytest.mark.parametrize("position", ["before-bn", "after-bn"])
def test_resnet18_published_form(position):
    cfg = TrainConfig(model="resnet18", act_position=position, degree=8, dropout=0.1)
    model = build_model(cfg, (3, 32, 32), "image", 10)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    polys = list(pnn_ext.nn.poly_modules(model))
    assert len(polys) == 17 and all(p.degree == 8 for p in polys)
    stem_types = [type(m) for m in model.stem]
    assert stem_types.index(pnn_ext.PolyActivation) < stem_types.index(nn.BatchNorm2d) if position == "before-bn" \
        else stem_types.index(pnn_ext.PolyActivation) > stem_types.index(nn.BatchNorm2d)
    model.eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and len(pnn_ext.boundary_loss(model).shape) == 0


def test_torchvision_model_converted():
    cfg = TrainConfig(model="torchvision:resnet18", degree=4)
    model = build_model(cfg, (1, 28, 28), "image", 10)
    model.eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(len(m.boundary_terms) for m in pnn_ext.nn.poly_modules(model)) == 17
    with pytest.raises(ValueError, match="torchvision:no_such_net"):
        build_model(TrainConfig(model="torchvision:no_such_net"), (3, 8, 8), "image", 10)


def test_kaiming_uniform_init():
    model = models.MLP(100, 10, (50,))
    models.kaiming_uniform_init(model)
    w = model[1].weight
    limit = (6 / 100) ** 0.5                      # gain sqrt(2) * sqrt(3 / fan_in)
    assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit and model[1].bias.abs().max() == 0
