"""convert()'s module pass: activation modules replaced by PolyActivation in place (the
model keeps its class), max-pooling modules by average pooling when asked."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import nn

from ..activations import BY_MODULE
from .pooling import avg_pool_module


def replace_modules(parent: nn.Module, make: Callable[[str, dict], nn.Module], types: tuple[type, ...],
                    max_pool: str, done: dict[int, tuple[nn.Module, nn.Module]] | None = None) -> None:
    """Replace, under ``parent``, every module whose exact type is in ``types`` by
    ``make(target, params)`` and (``max_pool="avg"``) max-pooling by average pooling.

    Every attribute is visited, not every distinct module (``named_children`` lists a
    module once however often it is registered, and the other places kept it): a module
    held in several places, in one parent or several, gets one replacement, held in all
    of them, as the module was. ``done`` maps the id of each module seen to (the module,
    what it became); holding the module keeps its id from being reused during the pass."""
    done = {} if done is None else done
    for name, child in list(parent._modules.items()):
        if child is None:
            continue
        if id(child) in done:
            if done[id(child)][1] is not child:
                setattr(parent, name, done[id(child)][1])
            continue
        kind = type(child)
        if kind in types:
            row = BY_MODULE[kind]
            new = make(row.name, row.params_of(child))
        elif max_pool == "avg" and (avg := avg_pool_module(child)) is not None:
            new = avg
        else:
            done[id(child)] = (child, child)
            _transformer_activation(child, make)
            replace_modules(child, make, types, max_pool, done)
            continue
        done[id(child)] = (child, new)
        setattr(parent, name, new)


def _transformer_activation(layer: nn.Module, make: Callable[[str, dict], nn.Module]) -> None:
    """nn.Transformer*Layer(activation="relu" / "gelu") keeps F.relu / F.gelu as an
    attribute, inside a torch.nn module torch.fx does not enter: it gets a module."""
    if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) \
            and layer.activation in (F.relu, F.gelu):
        layer.activation = make("relu" if layer.activation is F.relu else "gelu", {})
        if hasattr(layer, "activation_relu_or_gelu"):
            layer.activation_relu_or_gelu = 0  # the fused fast path would call F.relu / F.gelu itself
