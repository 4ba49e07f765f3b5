"""convert(model): activations (modules and functional calls) replaced by PolyActivation,
max-pooling optionally by average pooling.

The passes, in order: activation modules in place (conversion.modules); functional calls
found by tracing with torch.fx (conversion.fx_pass), or with torch.export where torch.fx
cannot trace and an example input is given (conversion.export_pass); then, with
strict=True, what remains is listed (conversion.readiness). All read the one table of
activations (pnn_ext.activations) and of pooling (conversion.pooling).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import fitting
from ..activations import BY_MODULE
from ..nn import PolyActivation, poly_modules, track
from .errors import ConvertError, NotPolynomialError
from .export_pass import convert_exported
from .fx_pass import TraceFailed, convert_functional
from .modules import replace_modules
from .readiness import polynomial_report

MAX_POOL = ("keep", "avg")


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


def _check_model(model) -> None:
    """What convert() cannot change: not a module, or TorchScript (compiled code, its
    submodules fixed), anywhere in the model."""
    if not isinstance(model, nn.Module):
        hint = (" (an ExportedProgram: pass its .module(), with example_input=..., which torch.export's modules need)"
                if isinstance(model, torch.export.ExportedProgram) else "")
        raise ConvertError(f"model must be a torch.nn.Module, got {type(model).__name__}{hint}")
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            where = f"its submodule {name!r}" if name else "the model"
            raise ConvertError(f"{where} is a TorchScript module ({type(m).__name__}): its code is compiled and its "
                               f"submodules cannot be replaced, so convert() cannot change it; convert the nn.Module "
                               f"it was scripted or traced from")


def _check_converted(model: nn.Module, make: _Factory, bound, alpha, target) -> None:
    """A PolyActivation already in ``model`` is kept as it is, never refitted: it must have the
    settings this call asks for (degree, basis, learnable, and bound, alpha and target where
    given), else a ConvertError names the first that differs, before anything changes."""
    want = {"degree": make.degree, "basis": make.basis, "learnable": make.learnable}
    if bound is not None:
        want["bound"] = make.bound
    if alpha is not None:
        want["alpha"] = make.alpha
    if target is not None:
        want["target"] = make.target
    differ = [(name, [f"{k} {getattr(m, k)!r} (this call: {v!r})" for k, v in want.items() if getattr(m, k) != v])
              for name, m in model.named_modules() if isinstance(m, PolyActivation)]
    differ = [(name, d) for name, d in differ if d]
    if differ:
        name, d = differ[0]
        more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
        raise ConvertError(f"the model already holds PolyActivation modules of other settings ({name!r}: "
                           f"{', '.join(d)}{more}); convert() keeps a PolyActivation as it is and does not refit "
                           f"it: convert the original model with these settings (to move B only: "
                           f"PolyActivation.set_bound)")


def convert(model: nn.Module, degree: int = fitting.DEGREE, bound: float | None = None, alpha: float | None = None,
            basis: str = fitting.BASIS, learnable: bool = False, method: str = fitting.METHOD,
            types: tuple[type, ...] | None = None, target: str | None = None, impl: str = "auto", *,
            functional: bool = True, max_pool: str | None = None, he_ready: bool = False, strict: bool = False,
            example_input: torch.Tensor | tuple | None = None) -> nn.Module:
    """Replace every activation of ``model`` by a PolyActivation fitted to it; returns the model.

    * **Modules** (the module types of :data:`pnn_ext.activations.ACTIVATIONS`: ReLU, ReLU6, Hardtanh,
      LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid,
      Sigmoid, Tanh, Softplus; ``types`` restricts them) are replaced in place.
      Each is fitted on [-B, B] to its own function with its own parameters
      (``LeakyReLU(0.2)`` -> target ``"leaky_relu(negative_slope=0.2)"``);
      ``inplace`` is ignored. One fit per target key is shared by all replacements;
      each replacement is its own module (own coefficients when ``learnable``). A
      module instance held in several places (twice in one ``nn.Sequential``, or in
      several parents) is replaced in every place by one PolyActivation, shared as the
      instance was.
    * **Re-conversion**: a PolyActivation already in ``model`` is kept as it is (its
      coefficients, its B), never refitted. When it has the settings of this call
      (``degree``, ``basis``, ``learnable``, and ``bound``, ``alpha``, ``target`` where
      given) converting again changes nothing but what is left to convert; else
      :class:`ConvertError` names the layer and the setting, before anything changes.
    * A TorchScript module (``torch.jit.script`` / ``trace``, or a submodule that is
      one) cannot be changed: :class:`ConvertError`; convert the nn.Module instead.
    * **Functional calls** (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu_``,
      ``F.gelu``, ``torch.sigmoid``, ``F.leaky_relu(x, 0.2)``, ... the calls and
      methods of :data:`pnn_ext.activations.ACTIVATIONS`) are found by tracing with torch.fx (``functional=True``).
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
    types = tuple(BY_MODULE) if types is None else tuple(types)
    unknown = [t for t in types if t not in BY_MODULE]
    if unknown:
        raise ValueError(f"types must be among {[t.__name__ for t in BY_MODULE]}, got {unknown}")
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
    _check_model(model)
    make = _Factory(degree, bound, alpha, basis, learnable, method, impl, target)
    _check_converted(model, make, bound, alpha, target)
    replace_modules(model, make, types, max_pool)
    if functional:
        try:
            model = convert_functional(model, make, max_pool)
        except TraceFailed as e:
            if example_input is None:
                raise ConvertError(
                    f"torch.fx cannot trace {type(model).__name__} to find its functional activations ({e}). "
                    f"Pass example_input=... to trace it with torch.export instead, functional=False to convert "
                    f"its activation modules only (pnn_ext.polynomial_report then lists what remains), or make its "
                    f"forward traceable (no Python control flow on tensor values)") from e.__cause__
            model = convert_exported(model, make, max_pool, example_input)
    track(model)
    if strict:
        report = polynomial_report(model, example_input)
        if report.entries:
            raise NotPolynomialError(report, model)
    return model


def polynomial_layers(model: nn.Module) -> int:
    """The number of PolyActivation modules in ``model``."""
    return sum(1 for _ in poly_modules(model))


__all__ = ["MAX_POOL", "convert", "polynomial_layers"]
