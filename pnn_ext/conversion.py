"""convert(model): activations (modules and functional calls) replaced by PolyActivation,
max-pooling optionally by average pooling.

Activation modules are replaced here, in place (the model keeps its class);
functional calls are found by tracing (pnn_ext.fx_convert, or pnn_ext.export_convert
where torch.fx cannot trace); pnn_ext.readiness checks what remains (strict=True).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import fitting
from .fx_convert import ConvertedGraphModule, ConvertError, _tuple, convert_functional
from .nn import PolyActivation, poly_modules, track

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


_MAX_TO_AVG: dict[type, type] = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX_TO_AVG: dict[type, type] = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                                          nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                                          nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}


class NotPolynomialError(ConvertError):
    """convert(strict=True): operations that are not polynomial remain; ``report`` lists
    them, ``model`` is the converted model (what convert would have returned)."""

    def __init__(self, report, model: nn.Module | None = None):
        self.report, self.model = report, model
        left = ", ".join(f"{op} x{n}" for op, n in report.ops().most_common())
        super().__init__(f"the converted model is not polynomial: {left} remain; by module (module, type, op, "
                         f"calls):\n{report.table()}")


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
            _transformer_activation(child, make)
            _replace_modules(child, make, types, max_pool)


def _transformer_activation(layer: nn.Module, make: _Factory) -> None:
    """nn.Transformer*Layer(activation="relu" / "gelu") keeps F.relu / F.gelu as an
    attribute, inside a torch.nn module torch.fx does not enter: it gets a module."""
    if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) \
            and layer.activation in (F.relu, F.gelu):
        layer.activation = make("relu" if layer.activation is F.relu else "gelu", {})
        if hasattr(layer, "activation_relu_or_gelu"):
            layer.activation_relu_or_gelu = 0  # the fused fast path would call F.relu / F.gelu itself


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
    fitting.check_degree(degree)  # before any fit: degree=2200 is a typo, not a long fit
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
        model = convert_functional(model, make, max_pool, example_input)
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


__all__ = ["ACTIVATION_MODULES", "ConvertError", "ConvertedGraphModule", "NotPolynomialError", "convert",
           "polynomial_layers"]
