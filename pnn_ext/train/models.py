"""Models of the training framework. Each is built with nn.ReLU and, for a
polynomial network, converted by :func:`pnn_ext.convert` (one fit shared by all
layers, boundary terms tracked per forward).

* ``small-cnn``: two conv blocks with average pooling and a hidden linear layer;
  quick on CPU, and built only of operations an HE evaluator can run.
* ``mlp``: linear blocks (published hidden sizes 256-128-64-32-16), for feature or
  sequence inputs (flattened).
* ``resnet18``: the published CIFAR form: 3x3 stem, no max-pool, global average pool.
* ``torchvision:NAME``: any torchvision classifier, converted.

``act_position`` "after-bn" gives linear -> BN -> act, "before-bn" linear -> act -> BN.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import convert


def _norm(kind: str, dim: int, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels)


def _block(layer: nn.Module, norm: nn.Module, act_position: str) -> list[nn.Module]:
    return [layer, norm, nn.ReLU()] if act_position == "after-bn" else [layer, nn.ReLU(), norm]


class MLP(nn.Sequential):
    """x (N, ...) flattened -> [Linear, BN, act, Dropout] per hidden size -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden=(256, 128, 64, 32, 16), norm: str = "batch",
                 act_position: str = "after-bn", dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += _block(nn.Linear(width, h), _norm(norm, 1, h), act_position)
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """x (N, C, H, W) -> [Conv3x3(16), BN, act, AvgPool2] -> [Conv3x3(32), BN, act,
    AvgPool2] -> Linear(64), BN, act, Dropout -> Linear. H and W are cut by 4
    (floor); 8x8 digits and 28x28 MNIST both fit."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: str = "batch",
                 act_position: str = "after-bn", dropout: float = 0.0, widths=(16, 32, 64)):
        h, w = image_size[0] // 4, image_size[1] // 4
        if h < 1 or w < 1:
            raise ValueError(f"small-cnn needs images of at least 4x4, got {image_size}")
        c1, c2, hidden = widths
        super().__init__(
            *_block(nn.Conv2d(in_channels, c1, 3, padding=1), _norm(norm, 2, c1), act_position), nn.AvgPool2d(2),
            *_block(nn.Conv2d(c1, c2, 3, padding=1), _norm(norm, 2, c2), act_position), nn.AvgPool2d(2),
            nn.Flatten(),
            *_block(nn.Linear(c2 * h * w, hidden), _norm(norm, 1, hidden), act_position),
            *([nn.Dropout(dropout)] if dropout else []),
            nn.Linear(hidden, num_classes))


class BasicBlock(nn.Module):
    """ResNet basic block. after-bn: conv-BN-act-conv-BN (+shortcut) act.
    before-bn: conv-act-BN-conv (+shortcut) act-BN. Each activation is its own module."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act_position: str):
        super().__init__()
        self.after = act_position == "after-bn"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.act1 = _norm(norm, 2, cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2, self.act2 = _norm(norm, 2, cout), nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, 2, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.after:
            out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
            return self.act2(out + self.shortcut(x))
        out = self.conv2(self.bn1(self.act1(self.conv1(x))))
        return self.bn2(self.act2(out + self.shortcut(x)))


class ResNet18(nn.Module):
    """ResNet-18 for small images: 3x3 stem (no max-pool), 4 stages of 2 basic
    blocks (64, 128, 256, 512 channels), global average pool, dropout, linear."""

    def __init__(self, in_channels: int, num_classes: int, norm: str = "batch", act_position: str = "after-bn",
                 dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(*_block(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), _norm(norm, 2, 64),
                                          act_position))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride, norm, act_position), BasicBlock(cout, cout, 1, norm, act_position)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


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


def kaiming_uniform_init(model: nn.Module) -> None:
    """Kaiming-uniform weights (ReLU gain) and zero biases for every conv and linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(cfg, in_shape: tuple[int, ...], layout: str, num_classes: int) -> nn.Module:
    """The model a TrainConfig asks for, for samples of ``in_shape``; polynomial when
    cfg.activation == "poly"."""
    name = cfg.model
    if name in ("small-cnn", "resnet18") or name.startswith("torchvision:"):
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
    elif name == "resnet18":
        model = ResNet18(in_shape[0], num_classes, cfg.norm, cfg.act_position, cfg.dropout)
    else:
        model = _torchvision(name.split(":", 1)[1], in_shape, num_classes)
    kaiming_uniform_init(model)
    if cfg.activation == "poly":
        convert(model, degree=cfg.degree, bound=cfg.bound, alpha=cfg.alpha, basis=cfg.basis,
                learnable=cfg.learnable, method=cfg.fit_method, target=cfg.target)
    return model
