"""Functional activations (``F.relu(x)``, ``torch.sigmoid(x)``, ``x.relu()``) and
max-pooling calls found by tracing with torch.fx, and rewritten: the GraphModule's
graph calls a PolyActivation module (average pooling) instead.

torch.fx bakes ``self.training`` into the graph (torchvision's stochastic depth reads
it), so the model is traced in both modes and the result switches graphs with
``train()`` / ``eval()``, as torchvision's feature extraction does.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

from torch import fx, nn

from ..activations import BY_CALL, BY_METHOD
from ..nn import PolyActivation, track
from .pooling import BY_CALL as POOL_BY_CALL
from .pooling import as_tuple


class TraceFailed(Exception):
    """torch.fx cannot trace the model (the cause is chained): convert() then tries
    torch.export, given an example input."""


def _max_pool_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _adaptive_max_pool_sig(input, output_size, return_indices=False): ...


class _Tracer(fx.Tracer):
    """torch.fx's tracer with PolyActivation a leaf (its forward keeps boundary terms)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, PolyActivation) or super().is_leaf_module(m, qualname)


def _bind(sig_fn: Callable, node: fx.Node) -> dict | None:
    try:
        return inspect.signature(sig_fn).bind(*node.args, **node.kwargs).arguments
    except TypeError:
        return None


def _constant(v) -> bool:
    return not isinstance(v, fx.Node) and not (isinstance(v, (tuple, list)) and any(isinstance(a, fx.Node)
                                                                                     for a in v))


def _activation_call(node: fx.Node) -> tuple[str, dict, bool] | None:
    """(target name, target parameters, in place) of a functional activation node, or None
    (not an activation, or one whose parameters are computed in the graph)."""
    if node.op == "call_method" and node.target in BY_METHOD and len(node.args) == 1 and not node.kwargs:
        return BY_METHOD[node.target].name, {}, node.target.endswith("_")
    if node.op != "call_function" or node.target not in BY_CALL:
        return None
    row, call = BY_CALL[node.target]
    args = _bind(call.signature, node)
    if args is None or args.get("out") is not None or not all(_constant(v) for k, v in args.items() if k != "input"):
        return None
    params = {param: args[param] for param, _ in row.module_params if param in args}
    return row.name, params, call.inplace or bool(args.get("inplace", False))


def _pool_call(node: fx.Node) -> tuple[Callable, tuple, dict] | None:
    """The average-pooling call that replaces a functional max-pooling node, or None."""
    if node.op != "call_function" or node.target not in POOL_BY_CALL:
        return None
    pool = POOL_BY_CALL[node.target]
    if pool.adaptive:
        a = _bind(_adaptive_max_pool_sig, node)
        if a is None or a.get("return_indices"):
            return None
        return pool.avg_call, (a["input"], a["output_size"]), {}
    a = _bind(_max_pool_sig, node)
    if a is None or a.get("return_indices") or not _constant(a.get("dilation", 1)) \
            or set(as_tuple(a.get("dilation", 1))) != {1}:
        return None
    return pool.avg_call, (a["input"], a["kernel_size"]), {
        "stride": a.get("stride"), "padding": a.get("padding", 0), "ceil_mode": a.get("ceil_mode", False),
        "count_include_pad": False}


def _redirect_later_uses(graph: fx.Graph, old: fx.Node, new: fx.Node, after: fx.Node) -> None:
    """An in-place call changed ``old``: the nodes after ``after`` that read it read ``new``."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(old.users):
        if user is not new and order[user] > order[after]:
            user.replace_input_with(old, new)


def _rewrite(graph: fx.Graph, make: Callable, max_pool: str, made: dict) -> int:
    """Rewrite ``graph`` in place; returns the number of calls rewritten. ``made``
    (submodule name -> module) shares the new modules between the train and eval graphs."""
    rewritten = 0
    for node in list(graph.nodes):
        act = _activation_call(node)
        if act is not None:
            name, params, inplace = act
            x = node.args[0] if node.args else node.kwargs["input"]
            module_name = f"pnn_{node.name}"
            if module_name not in made:
                made[module_name] = make(name, params)
            with graph.inserting_after(node):
                new = graph.call_module(module_name, (x,))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            if inplace and isinstance(x, fx.Node):
                _redirect_later_uses(graph, x, new, new)
            rewritten += 1
            continue
        pool = _pool_call(node) if max_pool == "avg" else None
        if pool is not None:
            fn, args, kwargs = pool
            with graph.inserting_after(node):
                new = graph.call_function(fn, args, kwargs)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            rewritten += 1
    graph.lint()
    return rewritten


class ConvertedGraphModule(fx.GraphModule):
    """A GraphModule with one graph per mode: ``train()`` / ``eval()`` switch to the
    graph traced in that mode (torch.fx bakes ``self.training`` reads into a graph).
    ``copy.deepcopy`` keeps both; save it as a state dict (pickling a GraphModule
    keeps only the current graph)."""

    def __init__(self, root: nn.Module, train_graph: fx.Graph, eval_graph: fx.Graph, class_name: str):
        super().__init__(root, train_graph if root.training else eval_graph, class_name)
        self._pnn_graphs = {True: train_graph, False: eval_graph}
        self._adopt(lambda target: fx.graph_module._copy_attr(root, self, target))

    def _adopt(self, copy_attr) -> None:
        """Take what only the other mode's graph uses (GraphModule copies the current one's)."""
        for graph in self._pnn_graphs.values():
            for node in graph.nodes:
                if node.op in ("call_module", "get_attr"):
                    try:
                        self.get_submodule(node.target) if node.op == "call_module" else self.get_parameter(
                            node.target)
                    except AttributeError:
                        copy_attr(node.target)

    def __deepcopy__(self, memo):
        res = super().__deepcopy__(memo)
        # The __dict__ copy made by GraphModule.__deepcopy__ used ``memo``: these are
        # the same copies, one of them res.graph.
        res._pnn_graphs = copy.deepcopy(self._pnn_graphs, memo)
        res._adopt(lambda target: res.add_module(target, copy.deepcopy(self.get_submodule(target), memo)))
        return track(res) if self.__dict__.get("_pnn_tracked") else res  # GraphModule drops forward hooks

    def train(self, mode: bool = True):
        graphs = self.__dict__.get("_pnn_graphs")
        if graphs is not None and graphs[mode] is not self.graph:
            self.graph = graphs[mode]  # the setter recompiles forward
        return super().train(mode)


def _trace(model: nn.Module) -> fx.Graph:
    return _Tracer().trace(model)


def convert_functional(model: nn.Module, make: Callable, max_pool: str) -> nn.Module:
    """``model`` itself when its traced graph has nothing to rewrite, else a
    ConvertedGraphModule sharing ``model``'s submodules. :class:`TraceFailed` where
    torch.fx cannot trace ``model``."""
    was_training = model.training
    graphs = {}
    try:
        for mode in (True, False):
            model.train(mode)
            graphs[mode] = _trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        raise TraceFailed(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        if model.training != was_training:  # torch.export's modules refuse train() even to restore a mode
            model.train(was_training)
    made: dict[str, nn.Module] = {}
    if not any([_rewrite(g, make, max_pool, made) for g in graphs.values()]):
        return model
    # GraphModule copies the submodules its graphs call from a root: ``model`` lends
    # the new ones for that moment only, and is left as the caller had it.
    for module_name, module in made.items():
        model.add_module(module_name, module)
    try:
        out = ConvertedGraphModule(model, graphs[True], graphs[False], type(model).__name__)
    finally:
        for module_name in made:
            delattr(model, module_name)
    return out.train(was_training)
