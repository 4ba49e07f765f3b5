"""convert()'s module pass: activation modules replaced by PolyActivation in place (the
model keeps its class), max-pooling modules by average pooling when asked."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import nn

from ..activations import BY_MODULE
from .pooling import avg_pool_module


def replace_modules(parent: nn.Module, make: Callable[[str, dict], nn.Module], types: tuple[type, ...],
                    max_pool: str) -> None:
    """Replace, under ``parent``, every module whose exact type is in ``types`` by
    ``make(target, params)`` and (``max_pool="avg"``) max-pooling by average pooling."""
    for name, child in parent.named_children():
        kind = type(child)
        if kind in types:
            row = BY_MODULE[kind]
            setattr(parent, name, make(row.name, row.params_of(child)))
        elif max_pool == "avg" and (avg := avg_pool_module(child)) is not None:
            setattr(parent, name, avg)
        else:
            _transformer_activation(child, make)
            replace_modules(child, make, types, max_pool)


def _transformer_activation(layer: nn.Module, make: Callable[[str, dict], nn.Module]) -> None:
    """nn.Transformer*Layer(activation="relu" / "gelu") keeps F.relu / F.gelu as an
    attribute, inside a torch.nn module torch.fx does not enter: it gets a module."""
    if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) \
            and layer.activation in (F.relu, F.gelu):
        layer.activation = make("relu" if layer.activation is F.relu else "gelu", {})
        if hasattr(layer, "activation_relu_or_gelu"):
            layer.activation_relu_or_gelu = 0  # the fused fast path would call F.relu / F.gelu itself
