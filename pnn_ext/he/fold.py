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
stays O(1). The coefficients stay in the Chebyshev basis the evaluators use
(pnn_ext.he.chebyshev), in t, low to high, whatever basis training used.

Given the inputs the model was trained on, fold records their range (InputRange):
``pnn-he encrypt`` compares a client's inputs with it; and their range certificate
(pnn_ext.he.certificate): how close each activation's input comes to +-B on them.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..activations import BY_MODULE
from ..nn import PolyActivation
from .certificate import certify
from .model import Affine, HEModel, InputRange, Poly

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool1d, nn.AvgPool2d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)

class UnsupportedLayerError(ValueError):
    """A module the HE form cannot represent (named in the message)."""


def chebyshev_in_t(coeffs: np.ndarray, basis: str) -> np.ndarray:
    """Coefficients c_0..c_d in t given in ``basis``, as Chebyshev coefficients (low to high)."""
    c = np.asarray(coeffs, dtype=np.float64)
    return c.copy() if basis == "chebyshev" else np.polynomial.chebyshev.poly2cheb(c)


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


def fold(model: nn.Module, in_shape: tuple[int, ...], normalize_outputs: bool = True, inputs=None) -> HEModel:
    """The HE-ready form of ``model`` (its eval-mode function) for inputs of shape ``in_shape``;
    ``inputs`` (the training inputs, array or tensor) sets the input range and the range
    certificate it records."""
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
                coeffs = chebyshev_in_t(m.coeffs.detach().double().cpu().numpy(), m.basis)
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
    x = None if inputs is None else torch.as_tensor(inputs).detach().cpu().numpy()
    if x is None or not len(x):
        return HEModel(layers, in_shape)
    he = HEModel(layers, in_shape, InputRange.of(x))
    he.certificate = certify(he, x, "the training inputs")
    return he
