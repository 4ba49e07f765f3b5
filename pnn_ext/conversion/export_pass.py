"""Functional activations and max-pooling of a model torch.fx cannot trace (Python
control flow on shapes, say), found by torch.export given an example input: its
ATen graph is rewritten to call PolyActivation modules (average pooling) instead.
The result is torch.export's GraphModule, fixed to the model's mode and to the
input's shapes (its train()/eval() raise: torch.export's limits).
"""
from __future__ import annotations

import inspect
import operator
from collections.abc import Callable

import torch
from torch import fx, nn

from ..activations import BY_ATEN
from ..nn import poly_modules
from .errors import ConvertError
from .pooling import BY_ATEN as POOL_BY_ATEN
from .pooling import as_tuple


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
    """(target, parameters) of an ATen activation node of an exported graph, or None.
    The parameters follow the input in the order of the row's ``module_params``."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    name = node.target.overloadpacket.__name__.rstrip("_")
    row = BY_ATEN.get(name)
    if row is None:
        return None
    defaults = {k: p.default for k, p in inspect.signature(row.target).parameters.items()
                if p.default is not inspect.Parameter.empty}
    params = {param: _arg(node, i + 1, param, defaults[param]) for i, (param, _) in enumerate(row.module_params)}
    if name == "hardtanh" and (params["min_val"], params["max_val"]) == (0.0, 6.0):
        return "relu6", {}  # F.relu6 decomposes to aten.hardtanh(x, 0, 6)
    if name == "elu":  # aten.elu(x, alpha, scale, input_scale) also spells CELU and SELU
        scale, in_scale = _arg(node, 2, "scale", 1.0), _arg(node, 3, "input_scale", 1.0)
        if scale == 1.0 and in_scale == 1.0:
            return "elu", params
        return ("celu", params) if scale == 1.0 and in_scale == 1.0 / params["alpha"] else None
    return row.name, params


def _aten_pool(node: fx.Node) -> tuple | None:
    """(average-pooling op, args, the node whose uses it takes) for an ATen max-pooling node."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    pool = POOL_BY_ATEN.get(node.target.overloadpacket.__name__)
    if pool is None:
        return None
    if not pool.adaptive:
        if not set(as_tuple(_arg(node, 4, "dilation", 1))) <= {1}:
            return None
        kernel = _arg(node, 1, "kernel_size", None)
        return pool.avg_aten, (node.args[0], kernel, _arg(node, 2, "stride", []) or kernel,
                               _arg(node, 3, "padding", 0), _arg(node, 5, "ceil_mode", False), False), node
    users = list(node.users)  # (values, indices): only the values may be used
    if len(users) == 1 or all(u.target is operator.getitem for u in users):
        values = [u for u in users if u.args[1] == 0]
        if len(values) == 1 and all(not u.users for u in users if u.args[1] != 0):
            return pool.avg_aten, (node.args[0], node.args[1]), values[0]
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
