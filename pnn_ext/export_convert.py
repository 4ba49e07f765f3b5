"""Functional activations and max-pooling of a model torch.fx cannot trace (Python
control flow on shapes, say), found by torch.export given an example input: its
ATen graph is rewritten to call PolyActivation modules (average pooling) instead.
The result is torch.export's GraphModule, fixed to the model's mode and to the
input's shapes (its train()/eval() raise: torch.export's limits).
"""
from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import fx, nn

from .fx_convert import ConvertError, _tuple
from .nn import poly_modules


@torch.library.custom_op("pnn_convert::poly_marker", mutates_args=())
def _poly_marker(x: torch.Tensor, index: int) -> torch.Tensor:
    """Stands for the ``index``-th PolyActivation while torch.export traces: one opaque
    node per call, which becomes a call of that module again (its forward keeps boundary
    terms, which a traced graph would drop)."""
    return x.clone()


@_poly_marker.register_fake
def _(x, index):
    return torch.empty_like(x)


def _arg(node: fx.Node, i: int, name: str, default):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _aten_activation(node: fx.Node) -> tuple[str, dict] | None:
    """(target, parameters) of an ATen activation node of an exported graph, or None."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    name = node.target.overloadpacket.__name__.rstrip("_")
    if name in ("relu", "relu6", "selu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "tanh"):
        return name, {}
    if name == "hardtanh":
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
        return ("relu6", {}) if (lo, hi) == (0.0, 6.0) else ("hardtanh", {"min_val": lo, "max_val": hi})
    if name == "leaky_relu":
        return name, {"negative_slope": _arg(node, 1, "negative_slope", 0.01)}
    if name == "celu":
        return name, {"alpha": _arg(node, 1, "alpha", 1.0)}
    if name == "elu":  # aten.elu(x, alpha, scale, input_scale) also spells CELU and SELU
        alpha, scale, in_scale = (_arg(node, 1, "alpha", 1.0), _arg(node, 2, "scale", 1.0),
                                  _arg(node, 3, "input_scale", 1.0))
        if scale == 1.0 and in_scale == 1.0:
            return "elu", {"alpha": alpha}
        return ("celu", {"alpha": alpha}) if scale == 1.0 and in_scale == 1.0 / alpha else None
    if name == "gelu":
        return name, {"approximate": node.kwargs.get("approximate", "none")}
    if name == "softplus":
        return name, {"beta": _arg(node, 1, "beta", 1.0), "threshold": _arg(node, 2, "threshold", 20.0)}
    return None


_ATEN_MAX_POOLS = {"max_pool1d": torch.ops.aten.avg_pool1d.default, "max_pool2d": torch.ops.aten.avg_pool2d.default,
                   "max_pool3d": torch.ops.aten.avg_pool3d.default}
_ATEN_ADAPTIVE_MAX_POOLS = {"adaptive_max_pool1d": torch.ops.aten.adaptive_avg_pool1d.default,
                            "adaptive_max_pool2d": torch.ops.aten.adaptive_avg_pool2d.default,
                            "adaptive_max_pool3d": torch.ops.aten.adaptive_avg_pool3d.default}


def _aten_pool(node: fx.Node) -> tuple | None:
    """(average-pooling op, args, the node whose uses it takes) for an ATen max-pooling node."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    name = node.target.overloadpacket.__name__
    if name in _ATEN_MAX_POOLS and set(_tuple(_arg(node, 4, "dilation", 1))) <= {1}:
        kernel = _arg(node, 1, "kernel_size", None)
        return _ATEN_MAX_POOLS[name], (node.args[0], kernel, _arg(node, 2, "stride", []) or kernel,
                                       _arg(node, 3, "padding", 0), _arg(node, 5, "ceil_mode", False), False), node
    if name in _ATEN_ADAPTIVE_MAX_POOLS:  # (values, indices): only the values may be used
        users = list(node.users)
        if len(users) == 1 or all(u.target is operator.getitem for u in users):
            values = [u for u in users if u.args[1] == 0]
            if len(values) == 1 and all(not u.users for u in users if u.args[1] != 0):
                return _ATEN_ADAPTIVE_MAX_POOLS[name], (node.args[0], node.args[1]), values[0]
    return None


def convert_exported(model: nn.Module, make: Callable, max_pool: str, example_input) -> nn.Module:
    """torch.export's module of ``model`` with its activations (left by fx) rewritten."""
    polys = list(poly_modules(model))
    for i, m in enumerate(polys):
        m.forward = lambda x, i=i: torch.ops.pnn_convert.poly_marker(x, i)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        gm = torch.export.export(model, args).module()
    except Exception as e:
        raise ConvertError(
            f"neither torch.fx nor torch.export can trace {type(model).__name__} to find its functional "
            f"activations ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Pass "
            f"functional=False to convert its activation modules only (pnn_ext.polynomial_report then "
            f"lists what remains)") from e
    finally:
        for m in polys:
            del m.forward
            m.boundary_terms, m.range_stats = [], None
    paths = {m: n for n, m in model.named_modules()}
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.pnn_convert.poly_marker.default:
            # Back at its own path, where torch.export left a holder of its coefficients.
            module, module_name = polys[node.args[1]], paths[polys[node.args[1]]]
            parent, _, leaf = module_name.rpartition(".")
            try:
                gm.get_submodule(parent).register_module(leaf, module)
            except AttributeError:
                module_name = f"pnn_{node.name}"
                gm.add_module(module_name, module)
        elif (act := _aten_activation(node)) is not None:
            module_name = f"pnn_{node.name}"
            gm.add_module(module_name, make(*act))
        elif max_pool == "avg" and (pool := _aten_pool(node)) is not None:
            fn, args, used = pool
            with graph.inserting_after(node):
                new = graph.call_function(fn, args)
            used.replace_all_uses_with(new)
            for n in [*node.users, node]:
                graph.erase_node(n)
            continue
        else:
            continue
        with graph.inserting_after(node):
            new = graph.call_module(module_name, (node.args[0],))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm
