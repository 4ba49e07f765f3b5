"""The one table of the activations pnn_ext knows, a row each: the function a polynomial
is fitted to (numpy, float64 in and out) and every spelling of it in a model: its module
type, its functional calls, its tensor methods and its ATen op, with its parameters.

fitting.TARGETS (what can be fitted), convert's module, torch.fx and torch.export passes,
and he.fold all read this table: adding an activation is adding a row here (and a test
in tests/test_activations.py checks that every spelling of a row agrees with its target).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # no overflow warning for large |x|

    return expit(x)


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    from scipy.special import erf  # exact GELU, as torch.nn.GELU()

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _celu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))


# torch.nn.SELU's constants (Klambauer et al. 2017), as torch writes them.
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(beta * x > threshold, x, np.logaddexp(0.0, beta * x) / beta)


# Signatures of the functional spellings (torch.relu, F.gelu, ...), whose own signature
# is not inspectable for builtins: the passes bind a traced call's arguments to them.
def _unary(input, *, out=None): ...
def _gelu_sig(input, approximate="none"): ...
def _softplus_sig(input, beta=1.0, threshold=20.0): ...
def _inplace(input, inplace=False): ...
def _leaky_relu_sig(input, negative_slope=0.01, inplace=False): ...
def _elu_sig(input, alpha=1.0, inplace=False): ...
def _hardtanh_sig(input, min_val=-1.0, max_val=1.0, inplace=False): ...


@dataclass(frozen=True)
class Call:
    """A functional spelling: the callable, the signature its arguments bind to, and
    whether it always works in place (``F.relu_``; ``inplace=True`` is read per call)."""
    fn: Callable
    signature: Callable
    inplace: bool = False


@dataclass(frozen=True)
class Activation:
    """One activation: ``target(x, **params)`` is the function fitted, its keyword
    defaults torch's, so a target key names only the parameters that differ."""
    name: str
    target: Callable[..., np.ndarray]
    module: type[nn.Module] | None = None
    module_params: tuple[tuple[str, str], ...] = ()  # (target parameter, the module's attribute)
    calls: tuple[Call, ...] = ()
    methods: tuple[str, ...] = ()  # tensor methods; a trailing "_" is in place
    aten: str | None = None  # ATen overload packet (in-place "relu_" is the same row)

    def params_of(self, module: nn.Module) -> dict:
        """The target parameters of an instance of ``self.module``."""
        return {param: getattr(module, attr) for param, attr in self.module_params}


ACTIVATIONS: tuple[Activation, ...] = (
    Activation("relu", lambda x: np.maximum(x, 0.0), nn.ReLU,
               calls=(Call(F.relu, _inplace), Call(torch.relu, _unary), Call(torch.relu_, _unary, True)),  # = F.relu_
               methods=("relu", "relu_"), aten="relu"),
    # nn.ReLU6 is an nn.Hardtanh subclass: module types are matched exactly.
    Activation("relu6", lambda x: np.clip(x, 0.0, 6.0), nn.ReLU6, calls=(Call(F.relu6, _inplace),), aten="relu6"),
    Activation("hardtanh", lambda x, min_val=-1.0, max_val=1.0: np.clip(x, min_val, max_val), nn.Hardtanh,
               (("min_val", "min_val"), ("max_val", "max_val")),
               calls=(Call(F.hardtanh, _hardtanh_sig), Call(F.hardtanh_, _hardtanh_sig, True)), aten="hardtanh"),
    Activation("leaky_relu", lambda x, negative_slope=0.01: np.where(x >= 0, x, negative_slope * x), nn.LeakyReLU,
               (("negative_slope", "negative_slope"),),
               calls=(Call(F.leaky_relu, _leaky_relu_sig), Call(F.leaky_relu_, _leaky_relu_sig, True)),
               aten="leaky_relu"),
    Activation("elu", _elu, nn.ELU, (("alpha", "alpha"),),
               calls=(Call(F.elu, _elu_sig), Call(F.elu_, _elu_sig, True)), aten="elu"),
    Activation("selu", lambda x: _SELU_SCALE * _elu(x, _SELU_ALPHA), nn.SELU,
               calls=(Call(F.selu, _inplace), Call(torch.selu, _unary), Call(torch.selu_, _unary, True)),  # = F.selu_
               aten="selu"),
    Activation("celu", _celu, nn.CELU, (("alpha", "alpha"),),
               calls=(Call(F.celu, _elu_sig), Call(F.celu_, _elu_sig, True)), aten="celu"),
    Activation("gelu", _gelu, nn.GELU, (("approximate", "approximate"),), calls=(Call(F.gelu, _gelu_sig),),
               aten="gelu"),
    Activation("silu", lambda x: x * _sigmoid(x), nn.SiLU, calls=(Call(F.silu, _inplace),), aten="silu"),
    Activation("mish", lambda x: x * np.tanh(np.logaddexp(0.0, x)), nn.Mish, calls=(Call(F.mish, _inplace),),
               aten="mish"),
    Activation("hardswish", lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, nn.Hardswish,
               calls=(Call(F.hardswish, _inplace),), aten="hardswish"),
    Activation("hardsigmoid", lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0), nn.Hardsigmoid,
               calls=(Call(F.hardsigmoid, _inplace),), aten="hardsigmoid"),
    Activation("sigmoid", _sigmoid, nn.Sigmoid,
               calls=(Call(torch.sigmoid, _unary), Call(F.sigmoid, _unary), Call(torch.sigmoid_, _unary, True),
                      Call(torch.special.expit, _unary)),
               methods=("sigmoid", "sigmoid_"), aten="sigmoid"),
    Activation("tanh", np.tanh, nn.Tanh,
               calls=(Call(torch.tanh, _unary), Call(F.tanh, _unary), Call(torch.tanh_, _unary, True)),
               methods=("tanh", "tanh_"), aten="tanh"),
    Activation("softplus", _softplus, nn.Softplus, (("beta", "beta"), ("threshold", "threshold")),
               calls=(Call(F.softplus, _softplus_sig),), aten="softplus"),
)

# Indexes of the table, by each spelling.
BY_NAME: dict[str, Activation] = {a.name: a for a in ACTIVATIONS}
BY_MODULE: dict[type[nn.Module], Activation] = {a.module: a for a in ACTIVATIONS if a.module is not None}
BY_CALL: dict[Callable, tuple[Activation, Call]] = {c.fn: (a, c) for a in ACTIVATIONS for c in a.calls}
BY_METHOD: dict[str, Activation] = {m: a for a in ACTIVATIONS for m in a.methods}
BY_ATEN: dict[str, Activation] = {a.aten: a for a in ACTIVATIONS if a.aten is not None}

__all__ = ["ACTIVATIONS", "Activation", "BY_ATEN", "BY_CALL", "BY_METHOD", "BY_MODULE", "BY_NAME", "Call"]
