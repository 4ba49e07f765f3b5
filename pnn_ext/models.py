"""The model zoo, shared by pnn-train, the benchmarks, the tests and the HE tools.
Each model is built with nn.ReLU and, for a polynomial network, converted by
:func:`pnn_ext.convert` (one fit shared by all layers, boundary terms tracked per
forward)::

    model = pnn_ext.convert(SmallCNN(1, 10, (28, 28)), degree=22)

* ``SmallCNN``: two conv blocks with average pooling and a hidden linear layer;
  quick on CPU, and built only of operations an HE evaluator can run.
* ``CNN1d``: 1-D conv blocks with average pooling and a global average pool, for
  sequences (N, C, T) such as audio or inertial windows; HE-foldable like SmallCNN.
* ``MLP``: linear blocks (published hidden sizes 256-128-64-32-16), for feature or
  sequence inputs (flattened).
* ``ResNet18``: the published CIFAR form: 3x3 stem, no max-pool, global average pool.
* ``CryptoNets``: the network of CryptoNets (ICML 2016), the encrypted-inference
  anchor: one 5x5 stride-2 conv with 5 maps, 100 hidden units.

pnn-train's ``--model`` names map to these in :func:`pnn_ext.train.build_model`
(which also offers any torchvision classifier).

``act_position`` "before-bn" (the default, as published) gives linear -> act -> BN,
"after-bn" linear -> BN -> act. The defaults below are also pnn-train's.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ACT_POSITION", "ACT_POSITIONS", "MLP", "MLP_HIDDEN", "NORM", "NORMS", "BasicBlock", "CNN1d", "CryptoNets",
           "ResNet18", "SmallCNN", "kaiming_uniform_init"]

# Defaults shared with pnn-train's flags (pnn_ext.train.config reads them from here).
ACT_POSITION = "before-bn"
ACT_POSITIONS = ("before-bn", "after-bn")
NORM = "batch"
NORMS = ("batch", "none")
MLP_HIDDEN = (256, 128, 64, 32, 16)  # the published MLP


def _norm(kind: str, dim: int, channels: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")
    if kind == "none":
        return nn.Identity()
    return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels)


def _block(layer: nn.Module, norm: nn.Module, act_position: str) -> list[nn.Module]:
    if act_position not in ACT_POSITIONS:
        raise ValueError(f"act_position must be one of {list(ACT_POSITIONS)}, got {act_position!r}")
    return [layer, norm, nn.ReLU()] if act_position == "after-bn" else [layer, nn.ReLU(), norm]


class MLP(nn.Sequential):
    """x (N, ...) flattened -> [Linear, act, BN, Dropout] per hidden size -> Linear
    (BN before act with ``act_position="after-bn"``)."""

    def __init__(self, in_features: int, num_classes: int, hidden=MLP_HIDDEN, norm: str = NORM,
                 act_position: str = ACT_POSITION, dropout: float = 0.0):
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
    """x (N, C, H, W) -> [Conv3x3(16), act, BN, AvgPool2] -> [Conv3x3(32), act, BN,
    AvgPool2] -> Linear(64), act, BN, Dropout -> Linear (BN before act with
    ``act_position="after-bn"``). H and W are cut by 4 (floor); 8x8 digits and
    28x28 MNIST both fit. Built only of operations an HE evaluator can run."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: str = NORM,
                 act_position: str = ACT_POSITION, dropout: float = 0.0, widths=(16, 32, 64)):
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


class CryptoNets(nn.Sequential):
    """x (N, C, H, W) -> Conv5x5 stride 2 (5 maps, padding 1), act, BN -> Linear(100),
    act, BN -> Linear (the CryptoNets network, ICML 2016, with BatchNorm that folds away
    for HE). 28x28 MNIST gives 5x13x13 = 845 activations after the convolution: small
    enough that a batch of ciphertexts, one per activation value, fits in memory."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: str = NORM,
                 act_position: str = ACT_POSITION, dropout: float = 0.0, maps: int = 5, hidden: int = 100):
        h, w = (image_size[0] - 3) // 2 + 1, (image_size[1] - 3) // 2 + 1
        if h < 1 or w < 1:
            raise ValueError(f"cryptonets needs images of at least 3x3, got {image_size}")
        super().__init__(
            *_block(nn.Conv2d(in_channels, maps, 5, stride=2, padding=1), _norm(norm, 2, maps), act_position),
            nn.Flatten(),
            *_block(nn.Linear(maps * h * w, hidden), _norm(norm, 1, hidden), act_position),
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

    def __init__(self, in_channels: int, num_classes: int, norm: str = NORM, act_position: str = ACT_POSITION,
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


class CNN1d(nn.Sequential):
    """x (N, C, T) -> [Conv1d(width, kernel, same padding), act, BN, AvgPool1d(2)] per
    width -> AdaptiveAvgPool1d(1) -> Flatten -> Dropout -> Linear (BN before act with
    ``act_position="after-bn"``). Each block halves T (floor), so T >= 2 ** len(widths).
    Only convolutions, polynomials and averages: an HE evaluator can run it."""

    def __init__(self, in_channels: int, num_classes: int, length: int, widths=(32, 64), kernel: int = 3,
                 norm: str = NORM, act_position: str = ACT_POSITION, dropout: float = 0.0):
        if length < 2 ** len(widths):
            raise ValueError(f"cnn1d with {len(widths)} blocks needs sequences of length >= {2 ** len(widths)}, "
                             f"got {length}")
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [*_block(nn.Conv1d(cin, w, kernel, padding=kernel // 2), _norm(norm, 1, w), act_position),
                       nn.AvgPool1d(2)]
            cin = w
        layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), *([nn.Dropout(dropout)] if dropout else []),
                   nn.Linear(cin, num_classes)]
        super().__init__(*layers)


def kaiming_uniform_init(model: nn.Module) -> None:
    """Kaiming-uniform weights (ReLU gain) and zero biases for every conv and linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
