"""pnn-train's ``--model`` names: the models of :mod:`pnn_ext.models` and any
torchvision classifier, built from a TrainConfig, initialised and converted."""
from __future__ import annotations

import torch
from torch import nn

from ..models import MLP, CryptoNets, ResNet18, SmallCNN, kaiming_uniform_init
from ..nn import convert


class RepeatChannels(nn.Module):
    """Grey images for models that expect RGB."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, *x.shape[2:])


def _torchvision(name: str, in_shape, num_classes: int) -> nn.Module:
    import torchvision
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as e:
        raise ValueError(f"model torchvision:{name}: {e}") from None
    if in_shape[0] == 1:
        return nn.Sequential(RepeatChannels(3), model)
    if in_shape[0] != 3:
        raise ValueError(f"model torchvision:{name} expects 1- or 3-channel images, got {in_shape[0]} channels")
    return model


def build_model(cfg, in_shape: tuple[int, ...], layout: str, num_classes: int) -> nn.Module:
    """The model a TrainConfig asks for, for samples of ``in_shape``: kaiming-uniform
    initialised, and polynomial (converted) when cfg.activation == "poly"."""
    name = cfg.model
    if name in ("small-cnn", "cryptonets", "resnet18") or name.startswith("torchvision:"):
        if layout != "image":
            raise ValueError(f"model {name} needs images (N, C, H, W); {cfg.dataset} has layout {layout}: "
                             f"use --model mlp")
    if name == "mlp":
        features = 1
        for s in in_shape:
            features *= s
        model = MLP(features, num_classes, cfg.hidden_sizes(), cfg.norm, cfg.act_position, cfg.dropout)
    elif name == "small-cnn":
        model = SmallCNN(in_shape[0], num_classes, in_shape[1:], cfg.norm, cfg.act_position, cfg.dropout)
    elif name == "cryptonets":
        model = CryptoNets(in_shape[0], num_classes, in_shape[1:], cfg.norm, cfg.act_position, cfg.dropout)
    elif name == "resnet18":
        model = ResNet18(in_shape[0], num_classes, cfg.norm, cfg.act_position, cfg.dropout)
    else:
        model = _torchvision(name.split(":", 1)[1], in_shape, num_classes)
    kaiming_uniform_init(model)
    if cfg.activation == "poly":
        convert(model, degree=cfg.degree, bound=cfg.bound, alpha=cfg.alpha, basis=cfg.basis,
                learnable=cfg.learnable, method=cfg.fit_method, target=cfg.target)
    return model
