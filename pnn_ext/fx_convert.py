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

import torch
import torch.nn.functional as F
from torch import fx, nn

from .nn import PolyActivation, track


class ConvertError(ValueError):
    """convert() cannot do what was asked (the message says what and why)."""


# Signatures of the builtins (torch.relu, F.gelu, ...), whose own signature is not inspectable.
def _unary(input, *, out=None): ...
def _gelu(input, approximate="none"): ...
def _softplus(input, beta=1.0, threshold=20.0): ...
def _inplace(input, inplace=False): ...
def _leaky_relu(input, negative_slope=0.01, inplace=False): ...
def _elu(input, alpha=1.0, inplace=False): ...
def _hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...


# Functional activation -> (target name, signature, its parameters that are target
# parameters, always in place). In-place calls are rewritten out of place, and later
# uses of their argument read the result instead.
_FUNCTIONS: list[tuple[Callable, str, Callable, tuple[str, ...], bool]] = [
    (F.relu, "relu", _inplace, (), False), (torch.relu, "relu", _unary, (), False),
    (torch.relu_, "relu", _unary, (), True), (F.relu_, "relu", _unary, (), True),
    (F.relu6, "relu6", _inplace, (), False),
    (F.hardtanh, "hardtanh", _hardtanh, ("min_val", "max_val"), False),
    (F.hardtanh_, "hardtanh", _hardtanh, ("min_val", "max_val"), True),
    (F.leaky_relu, "leaky_relu", _leaky_relu, ("negative_slope",), False),
    (F.leaky_relu_, "leaky_relu", _leaky_relu, ("negative_slope",), True),
    (F.elu, "elu", _elu, ("alpha",), False), (F.elu_, "elu", _elu, ("alpha",), True),
    (F.selu, "selu", _inplace, (), False), (torch.selu, "selu", _unary, (), False),
    (F.selu_, "selu", _unary, (), True),
    (F.celu, "celu", _elu, ("alpha",), False), (F.celu_, "celu", _elu, ("alpha",), True),
    (F.gelu, "gelu", _gelu, ("approximate",), False),
    (F.silu, "silu", _inplace, (), False), (F.mish, "mish", _inplace, (), False),
    (F.hardswish, "hardswish", _inplace, (), False), (F.hardsigmoid, "hardsigmoid", _inplace, (), False),
    (torch.sigmoid, "sigmoid", _unary, (), False), (F.sigmoid, "sigmoid", _unary, (), False),
    (torch.sigmoid_, "sigmoid", _unary, (), True), (torch.special.expit, "sigmoid", _unary, (), False),
    (torch.tanh, "tanh", _unary, (), False), (F.tanh, "tanh", _unary, (), False),
    (torch.tanh_, "tanh", _unary, (), True),
    (F.softplus, "softplus", _softplus, ("beta", "threshold"), False),
]
FUNCTIONS: dict[Callable, tuple[str, Callable, tuple[str, ...], bool]] = {
    fn: rest for fn, *rest in _FUNCTIONS}
# Tensor methods: x.relu(), x.relu_(), ...
METHODS: dict[str, tuple[str, bool]] = {
    "relu": ("relu", False), "relu_": ("relu", True), "sigmoid": ("sigmoid", False),
    "sigmoid_": ("sigmoid", True), "tanh": ("tanh", False), "tanh_": ("tanh", True),
}

_MAX_POOL_FUNCTIONS: dict[Callable, Callable] = {
    F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d,
    torch.max_pool1d: F.avg_pool1d, torch.max_pool2d: F.avg_pool2d, torch.max_pool3d: F.avg_pool3d}
_ADAPTIVE_MAX_POOL_FUNCTIONS: dict[Callable, Callable] = {
    F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
    F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


def _max_pool_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _adaptive_max_pool_sig(input, output_size, return_indices=False): ...


def _tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


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
    if node.op == "call_method" and node.target in METHODS and len(node.args) == 1 and not node.kwargs:
        name, inplace = METHODS[node.target]
        return name, {}, inplace
    if node.op != "call_function" or node.target not in FUNCTIONS:
        return None
    name, sig_fn, target_params, inplace = FUNCTIONS[node.target]
    args = _bind(sig_fn, node)
    if args is None or args.get("out") is not None or not all(_constant(v) for k, v in args.items() if k != "input"):
        return None
    params = {k: args[k] for k in target_params if k in args}
    return name, params, inplace or bool(args.get("inplace", False))


def _pool_call(node: fx.Node) -> tuple[Callable, tuple, dict] | None:
    """The average-pooling call that replaces a functional max-pooling node, or None."""
    if node.op != "call_function":
        return None
    if node.target in _MAX_POOL_FUNCTIONS:
        a = _bind(_max_pool_sig, node)
        if a is None or a.get("return_indices") or not _constant(a.get("dilation", 1)) \
                or set(_tuple(a.get("dilation", 1))) != {1}:
            return None
        return _MAX_POOL_FUNCTIONS[node.target], (a["input"], a["kernel_size"]), {
            "stride": a.get("stride"), "padding": a.get("padding", 0), "ceil_mode": a.get("ceil_mode", False),
            "count_include_pad": False}
    if node.target in _ADAPTIVE_MAX_POOL_FUNCTIONS:
        a = _bind(_adaptive_max_pool_sig, node)
        if a is None or a.get("return_indices"):
            return None
        return _ADAPTIVE_MAX_POOL_FUNCTIONS[node.target], (a["input"], a["output_size"]), {}
    return None


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


def convert_functional(model: nn.Module, make: Callable, max_pool: str, example_input) -> nn.Module:
    """``model`` itself when its traced graph has nothing to rewrite, else a
    ConvertedGraphModule sharing ``model``'s submodules (torch.export's module where
    torch.fx cannot trace the model and ``example_input`` is given)."""
    was_training = model.training
    graphs = {}
    try:
        for mode in (True, False):
            model.train(mode)
            graphs[mode] = _trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        model.train(was_training)
        if example_input is not None:
            from .export_convert import convert_exported

            return convert_exported(model, make, max_pool, example_input)
        raise ConvertError(
            f"torch.fx cannot trace {type(model).__name__} to find its functional activations "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Pass example_input=... to "
            f"trace it with torch.export instead, functional=False to convert its activation modules only "
            f"(pnn_ext.polynomial_report then lists what remains), or make its forward traceable (no Python "
            f"control flow on tensor values)") from e
    finally:
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
