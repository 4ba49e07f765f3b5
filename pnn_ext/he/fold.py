"""The HE-ready form of a trained polynomial network: alternating dense affine maps
and polynomials, with BatchNorm, pooling, dropout and the 1/B normalisation folded
into the affine maps.

A model is read as a chain of modules (nested nn.Sequential are flattened).
Everything between two polynomial activations is affine in eval mode
(Linear, Conv1d/2d, BatchNorm, average pooling, Flatten, Dropout, Identity), so
it composes into one map ``y = A x + b``; convolutions become dense matrices
(the "documented packing": a convolution is the matrix of its action on the
flattened C×H×W input). The composed map is found exactly, in float64, by
pushing the zero vector and the basis vectors of its input through the modules.

Each polynomial is evaluated directly in t = x / B: the 1/B is folded into the
affine map before it. Its output is divided by ``out_scale`` (B), folded into
the affine map after it, so that every value an encrypted evaluation carries
stays O(1). Coefficients are exported in the monomial basis, low to high.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..activations import BY_MODULE
from ..fitting import monomial_in_t
from ..nn import PolyActivation

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool1d, nn.AvgPool2d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


class UnsupportedLayerError(ValueError):
    """A module the HE form cannot represent (named in the message)."""


@dataclass
class Affine:
    weight: np.ndarray  # (out, in), float64
    bias: np.ndarray    # (out,)

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape


@dataclass
class Poly:
    coeffs: np.ndarray  # monomial, low to high, in t (the input is already x / B); output is p / out_scale
    degree: int
    bound: float        # B of the original activation (for the record)
    out_scale: float    # the output was divided by this; the next affine map multiplies it back
    name: str           # the module it came from


class HEModel:
    """logits = A_k(... P_2(A_2 P_1(A_1 x + b_1) + b_2) ...) + b_k on flattened inputs."""

    def __init__(self, layers: list, in_shape: tuple[int, ...]):
        self.layers = layers
        self.in_shape = tuple(in_shape)

    @property
    def num_outputs(self) -> int:
        return self.layers[-1].weight.shape[0]

    def __call__(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Plaintext evaluation in float64: x (N, *in_shape) -> logits (N, classes)."""
        v = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1).numpy()
        for layer in self.layers:
            if isinstance(layer, Affine):
                v = v @ layer.weight.T + layer.bias
            else:
                v = np.polynomial.polynomial.polyval(v, layer.coeffs)
        return v

    def summary(self) -> list[str]:
        out = []
        for layer in self.layers:
            if isinstance(layer, Affine):
                out.append(f"affine {layer.shape[1]} -> {layer.shape[0]}")
            else:
                out.append(f"poly degree {layer.degree} ({layer.name}, B={layer.bound:g})")
        return out

    def export(self, path: str) -> None:
        """One .npz: layer{i}_weight / layer{i}_bias (affine) or layer{i}_coeffs (polynomial,
        monomial, low to high, in t), and ``meta`` (JSON: kinds, shapes, degrees, B)."""
        arrays, meta = {}, {"in_shape": list(self.in_shape), "layers": []}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Affine):
                arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"] = layer.weight, layer.bias
                meta["layers"].append({"kind": "affine", "in": layer.shape[1], "out": layer.shape[0]})
            else:
                arrays[f"layer{i}_coeffs"] = layer.coeffs
                meta["layers"].append({"kind": "poly", "degree": layer.degree, "bound": layer.bound,
                                       "out_scale": layer.out_scale, "name": layer.name})
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path) -> HEModel:
        """The model :meth:`export` wrote (what the server of the client/server split holds)."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            layers = [Affine(z[f"layer{i}_weight"], z[f"layer{i}_bias"]) if m["kind"] == "affine" else
                      Poly(z[f"layer{i}_coeffs"], m["degree"], m["bound"], m["out_scale"], m["name"])
                      for i, m in enumerate(meta["layers"])]
        return cls(layers, tuple(meta["in_shape"]))


def _chain(module: nn.Module, prefix: str = ""):
    """(name, module) of the leaves of a chain of modules, nested Sequentials flattened."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _chain(child, f"{prefix}.{name}" if prefix else name)
        return
    if isinstance(module, PolyActivation) or isinstance(module, AFFINE):
        yield prefix or type(module).__name__, module
        return
    if isinstance(module, tuple(BY_MODULE)):
        hint = " (not a polynomial: convert the model with pnn_ext.convert first)"
    elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                             nn.AdaptiveMaxPool3d)):
        hint = " (max-pooling is not a polynomial: pnn_ext.convert(..., max_pool=\"avg\") replaces it)"
    elif list(module.children()):
        hint = " (only chains of modules, nn.Sequential, are folded; residual blocks and custom forwards are not)"
    else:
        hint = ""
    raise UnsupportedLayerError(f"unsupported layer {prefix or '<model>'!r} ({type(module).__name__}){hint}")


def fold(model: nn.Module, in_shape: tuple[int, ...], normalize_outputs: bool = True) -> HEModel:
    """The HE-ready form of ``model`` (its eval-mode function) for inputs of shape ``in_shape``."""
    model = copy.deepcopy(model).double().eval()
    leaves = list(_chain(model))
    if not leaves:
        raise UnsupportedLayerError("the model has no layers to fold")
    layers: list = []
    n = int(np.prod(in_shape))

    # A segment (the modules between two polynomials) is the affine map f; the values
    # that reach it are v = u / s (u: the true activation, s: the previous polynomial's
    # out_scale), so its weight on v has columns f(s * e_i) - f(0). The segment state is
    # those images: row 0 = f(0), row 1 + i = f(s * e_i).
    def start(n_in: int, shape_in: tuple[int, ...], s: float) -> torch.Tensor:
        pts = torch.zeros(n_in + 1, n_in, dtype=torch.float64)
        pts[1:] = torch.eye(n_in, dtype=torch.float64) * s
        return pts.reshape(n_in + 1, *shape_in)

    def finish(pts: torch.Tensor) -> Affine:
        flat = pts.reshape(pts.shape[0], -1)
        b = flat[0]
        return Affine((flat[1:] - b).T.numpy().copy(), b.numpy().copy())

    pts = start(n, tuple(in_shape), 1.0)
    with torch.no_grad():
        for name, m in leaves:
            if isinstance(m, PolyActivation):
                affine = finish(pts)
                affine.weight /= m.bound          # evaluate p directly in t = x / B
                affine.bias /= m.bound
                layers.append(affine)
                out_scale = m.bound if normalize_outputs else 1.0
                coeffs = monomial_in_t(m.coeffs.detach().double().cpu().numpy(), m.basis)
                layers.append(Poly(coeffs / out_scale, m.degree, m.bound, out_scale, name))
                # The next segment's input is p / out_scale: its map multiplies it back.
                n = affine.weight.shape[0]
                pts = start(n, tuple(pts.shape[1:]), out_scale)
            else:
                try:
                    pts = m(pts)
                except Exception as e:  # shapes that do not chain
                    raise UnsupportedLayerError(f"layer {name!r} ({type(m).__name__}) failed on input of shape "
                                                f"{tuple(pts.shape[1:])}: {e}") from None
        layers.append(finish(pts))
    return HEModel(layers, in_shape)
