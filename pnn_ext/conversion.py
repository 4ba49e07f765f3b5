"""convert(model): activations (modules and functional calls) replaced by PolyActivation,
max-pooling optionally by average pooling.

Activation modules are replaced in place (the model keeps its class). Functional
calls (``F.relu(x)``, ``torch.sigmoid(x)``, ``x.relu()``) are not modules: they are
found by tracing the model with torch.fx, which gives a GraphModule whose graph
calls a PolyActivation module instead. torch.fx bakes ``self.training`` into the
graph (torchvision's stochastic depth reads it), so the model is traced in both
modes and the result switches graphs with ``train()`` / ``eval()``, as
torchvision's feature extraction does.
"""
from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import fitting
from .nn import PolyActivation, poly_modules, track

MAX_DEGREE = 128  # far above any published degree; a typo (degree=2200) is refused before a long fit
MAX_POOL = ("keep", "avg")


def _params(**names: str) -> Callable[[nn.Module], dict]:
    """Reads a module's target parameters: ``_params(negative_slope="negative_slope")``."""
    return lambda m: {k: getattr(m, attr) for k, attr in names.items()}


# Activation module type -> (target name, the module's target parameters). Exact types:
# nn.ReLU6 is an nn.Hardtanh subclass and gets its own target.
ACTIVATION_MODULES: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {
    nn.ReLU: ("relu", _params()),
    nn.ReLU6: ("relu6", _params()),
    nn.Hardtanh: ("hardtanh", _params(min_val="min_val", max_val="max_val")),
    nn.LeakyReLU: ("leaky_relu", _params(negative_slope="negative_slope")),
    nn.ELU: ("elu", _params(alpha="alpha")),
    nn.SELU: ("selu", _params()),
    nn.CELU: ("celu", _params(alpha="alpha")),
    nn.GELU: ("gelu", _params(approximate="approximate")),
    nn.SiLU: ("silu", _params()),
    nn.Mish: ("mish", _params()),
    nn.Hardswish: ("hardswish", _params()),
    nn.Hardsigmoid: ("hardsigmoid", _params()),
    nn.Sigmoid: ("sigmoid", _params()),
    nn.Tanh: ("tanh", _params()),
    nn.Softplus: ("softplus", _params(beta="beta", threshold="threshold")),
}


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

_MAX_TO_AVG: dict[type, type] = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX_TO_AVG: dict[type, type] = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                                          nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                                          nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
_MAX_POOL_FUNCTIONS: dict[Callable, Callable] = {
    F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d,
    torch.max_pool1d: F.avg_pool1d, torch.max_pool2d: F.avg_pool2d, torch.max_pool3d: F.avg_pool3d}
_ADAPTIVE_MAX_POOL_FUNCTIONS: dict[Callable, Callable] = {
    F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
    F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


def _max_pool_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _adaptive_max_pool_sig(input, output_size, return_indices=False): ...


class ConvertError(ValueError):
    """convert() cannot do what was asked (the message says what and why)."""


class NotPolynomialError(ConvertError):
    """convert(strict=True): operations that are not polynomial remain; ``report`` lists
    them, ``model`` is the converted model (what convert would have returned)."""

    def __init__(self, report, model: nn.Module | None = None):
        self.report, self.model = report, model
        super().__init__(f"the converted model is not polynomial: {len(report.entries)} kinds of operation remain "
                         f"(module, op, calls):\n{report.table()}")


def _avg_pool(m: nn.Module) -> nn.Module | None:
    """Average pooling of ``m``'s geometry, or None where there is none.

    Max pooling never picks a padded position; ``count_include_pad=False`` makes the
    average also ignore the padding (divides by the number of real inputs of each
    window, a constant per position, so the map stays linear). ``ceil_mode`` is kept,
    so the output shape is the same. Dilation and returned indices have no
    average-pooling counterpart."""
    if type(m) in _MAX_TO_AVG:
        if m.return_indices or m.dilation not in (1, (1,) * len(_tuple(m.dilation))):
            return None
        return _MAX_TO_AVG[type(m)](m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                                    count_include_pad=False)
    if type(m) in _ADAPTIVE_MAX_TO_AVG:
        return None if m.return_indices else _ADAPTIVE_MAX_TO_AVG[type(m)](m.output_size)
    return None


def _tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _check_degree(degree) -> None:
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be an integer in 1..{MAX_DEGREE}, got {degree!r}")


class _Factory:
    """Makes the PolyActivations of one convert() call: one fit per target key."""

    def __init__(self, degree, bound, alpha, basis, learnable, method, impl, target):
        preset_bound, preset_alpha = fitting.preset(degree)
        self.degree, self.basis, self.learnable, self.method, self.impl = degree, basis, learnable, method, impl
        self.bound = preset_bound if bound is None else float(bound)
        self.alpha = preset_alpha if alpha is None else float(alpha)
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound must be finite and > 0, got {bound!r}")
        self.target = None if target is None else fitting._target_fn(target)[0]
        self.fits: dict[str, np.ndarray] = {}
        self.count = 0

    def __call__(self, name: str, params: dict) -> PolyActivation:
        key = self.target or fitting.target_key(name, **params)
        if key not in self.fits:
            self.fits[key] = fitting.fit(key, self.degree, self.bound, basis=self.basis, method=self.method).coeffs
        self.count += 1
        return PolyActivation(self.degree, self.bound, self.alpha, target=key, basis=self.basis,
                              learnable=self.learnable, coeffs=self.fits[key], impl=self.impl)


def _replace_modules(parent: nn.Module, make: _Factory, types: tuple[type, ...], max_pool: str) -> None:
    for name, child in parent.named_children():
        kind = type(child)
        if kind in types:
            target, params = ACTIVATION_MODULES[kind]
            setattr(parent, name, make(target, params(child)))
        elif max_pool == "avg" and (avg := _avg_pool(child)) is not None:
            setattr(parent, name, avg)
        else:
            _replace_modules(child, make, types, max_pool)


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


def _rewrite(graph: fx.Graph, make: _Factory, max_pool: str, made: dict) -> int:
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
        return res

    def train(self, mode: bool = True):
        graphs = self.__dict__.get("_pnn_graphs")
        if graphs is not None and graphs[mode] is not self.graph:
            self.graph = graphs[mode]  # the setter recompiles forward
        return super().train(mode)


def _trace(model: nn.Module) -> fx.Graph:
    return _Tracer().trace(model)


def _convert_functional(model: nn.Module, make: _Factory, max_pool: str, example_input) -> nn.Module:
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
            return _convert_exported(model, make, max_pool, example_input)
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


# ---------------------------------------------------------------- torch.export fallback
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


def _convert_exported(model: nn.Module, make: _Factory, max_pool: str, example_input) -> nn.Module:
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


def convert(model: nn.Module, degree: int = fitting.DEGREE, bound: float | None = None, alpha: float | None = None,
            basis: str = fitting.BASIS, learnable: bool = False, method: str = fitting.METHOD,
            types: tuple[type, ...] | None = None, target: str | None = None, impl: str = "auto", *,
            functional: bool = True, max_pool: str | None = None, he_ready: bool = False, strict: bool = False,
            example_input: torch.Tensor | tuple | None = None) -> nn.Module:
    """Replace every activation of ``model`` by a PolyActivation fitted to it; returns the model.

    * **Modules** (the types of ``ACTIVATION_MODULES``: ReLU, ReLU6, Hardtanh,
      LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid,
      Sigmoid, Tanh, Softplus; ``types`` restricts them) are replaced in place.
      Each is fitted on [-B, B] to its own function with its own parameters
      (``LeakyReLU(0.2)`` -> target ``"leaky_relu(negative_slope=0.2)"``);
      ``inplace`` is ignored. One fit per target key is shared by all replacements;
      each replacement is its own module (own coefficients when ``learnable``).
    * **Functional calls** (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu_``,
      ``F.gelu``, ``torch.sigmoid``, ``F.leaky_relu(x, 0.2)``, ... see ``FUNCTIONS``
      and ``METHODS``) are found by tracing with torch.fx (``functional=True``).
      If there are any, the result is a :class:`ConvertedGraphModule` (not ``model``)
      whose graph calls a new PolyActivation submodule (``pnn_<call>``) per call
      site; the other submodules are ``model``'s own. In-place calls become out of
      place, and later reads of their argument read the result. A model torch.fx
      cannot trace is traced by torch.export when ``example_input`` is given: the
      result is torch.export's GraphModule, fixed to the model's current mode and to
      ``example_input``'s shapes (torch.export's limits: its ``train()``/``eval()``
      raise). Else, or when torch.export fails too, :class:`ConvertError`
      (``functional=False`` skips tracing).
    * **Max-pooling** (``max_pool="avg"``): MaxPool1/2/3d and AdaptiveMaxPool1/2/3d
      modules and ``F.max_pool2d``-style calls become average pooling of the same
      kernel, stride, padding and ``ceil_mode``, with ``count_include_pad=False``
      (max-pooling never picks padding, so neither does the average). Default
      ``"keep"``; dilated pooling and ``return_indices`` are kept.
    * ``he_ready=True``: ``max_pool="avg"`` and ``strict=True``.
    * ``strict=True``: runs :func:`pnn_ext.polynomial_report` on ``example_input``
      and raises :class:`NotPolynomialError` (with the report and the converted model)
      if any operation that is not a polynomial, an affine map or linear pooling remains.

    ``target`` fits every replacement to that target instead (a key of
    :data:`pnn_ext.fitting.TARGETS`, see :func:`pnn_ext.register_target`). ``impl``
    is passed to every PolyActivation. Boundary terms are tracked per call
    (:func:`pnn_ext.track`), so :func:`pnn_ext.boundary_loss` counts every call.
    """
    _check_degree(degree)
    types = tuple(ACTIVATION_MODULES) if types is None else tuple(types)
    unknown = [t for t in types if t not in ACTIVATION_MODULES]
    if unknown:
        raise ValueError(f"types must be among {[t.__name__ for t in ACTIVATION_MODULES]}, got {unknown}")
    if he_ready:
        if max_pool not in (None, "avg"):
            raise ValueError(f"he_ready=True replaces max-pooling by average pooling; got max_pool={max_pool!r}")
        max_pool, strict = "avg", True
    max_pool = "keep" if max_pool is None else max_pool
    if max_pool not in MAX_POOL:
        raise ValueError(f"max_pool must be one of {list(MAX_POOL)}, got {max_pool!r}")
    if strict and example_input is None:
        raise ValueError("strict=True (and he_ready=True) runs the model once to list what is not polynomial: "
                         "pass example_input=<a batch of inputs>")
    make = _Factory(degree, bound, alpha, basis, learnable, method, impl, target)
    _replace_modules(model, make, types, max_pool)
    if functional:
        model = _convert_functional(model, make, max_pool, example_input)
    track(model)
    if strict:
        from .readiness import polynomial_report

        report = polynomial_report(model, example_input)
        if report.entries:
            raise NotPolynomialError(report, model)
    return model


def polynomial_layers(model: nn.Module) -> int:
    """The number of PolyActivation modules in ``model``."""
    return sum(1 for _ in poly_modules(model))


__all__ = ["ACTIVATION_MODULES", "FUNCTIONS", "METHODS", "ConvertError", "ConvertedGraphModule",
           "NotPolynomialError", "convert", "polynomial_layers"]
