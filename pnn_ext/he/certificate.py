"""The range certificate of a folded model: over a data set, how close each polynomial
activation's input comes to the edge of [-B, B], where its fit holds.

Each folded polynomial is evaluated in t = x / B (pnn_ext.he.fold), so the plaintext
folded model is run over the data and, per activation, max |t| (= max |x| / B), the
fraction of samples with any |t| > 1 and the margin 1 - max |t| are recorded. A value
outside [-1, 1] makes the polynomial — and, encrypted, nobody can see it — the
prediction wrong without an error. ``pnn-he fold`` certifies on the training inputs,
``pnn-he certify`` on any data; the model file carries the certificate (part of its
model id) and ``pnn-he serve`` refuses a model whose certificate shows a value
outside, unless overridden.

What it guarantees: on the certifying data, the stated margins. What it does not:
inputs unlike that data (another distribution, another preprocessing, an adversary
who picks them) can still leave [-B, B]; the certificate is evidence about a data set,
not a bound over every input."""
from __future__ import annotations

import numpy as np

from .model import HEModel, Poly

CHUNK = 2048   # samples per pass: a wide first layer (12,544 values per MNIST image) stays ~200 MB


def certify(model: HEModel, x, data: str) -> dict:
    """The certificate of ``model`` over the inputs ``x`` (samples, ...), named ``data``: per
    activation its layer, name, B, max |x| / B, the fraction of samples outside [-B, B] and
    the margin; ``inside``: every activation input of every sample within [-B, B]."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if not len(x):
        raise ValueError(f"certify: the data {data} holds no samples")
    if x.shape[1] != model.in_features:
        raise ValueError(f"certify: the data {data} has {x.shape[1]} features per sample; the model takes "
                         f"{model.in_features}")
    polys = [i for i, layer in enumerate(model.layers) if isinstance(layer, Poly)]
    worst, outside = dict.fromkeys(polys, 0.0), dict.fromkeys(polys, 0)
    for start in range(0, len(x), CHUNK):
        v = x[start:start + CHUNK]
        for i, layer in enumerate(model.layers):
            if isinstance(layer, Poly):
                t = np.abs(v)                    # the input is already t = x / B
                worst[i] = max(worst[i], float(t.max()))
                outside[i] += int((t > 1.0).any(axis=1).sum())
                v = np.polynomial.chebyshev.chebval(v, layer.coeffs)
            else:
                v = v @ layer.weight.T + layer.bias
    activations = [{"layer": i, "name": model.layers[i].name, "bound": float(model.layers[i].bound),
                    "max_abs_over_bound": worst[i], "fraction_outside": outside[i] / len(x),
                    "margin": 1.0 - worst[i]} for i in polys]
    return {"data": str(data), "samples": len(x), "activations": activations,
            "inside": all(a["max_abs_over_bound"] <= 1.0 for a in activations)}


def describe(certificate: dict | None) -> str:
    """One line: the worst activation's margin, or why there is no certificate."""
    if certificate is None:
        return "no range certificate (fold with training inputs, or pnn-he certify)"
    acts = certificate["activations"]
    if not acts:
        return f"no polynomial activation (certified on {certificate['data']})"
    worst = max(acts, key=lambda a: a["max_abs_over_bound"])
    state = "inside [-B, B]" if certificate["inside"] else "OUTSIDE [-B, B]"
    return (f"{state} on {certificate['data']} ({certificate['samples']} samples): worst activation "
            f"{worst['name']} (layer {worst['layer']}) reaches max|x|/B = {worst['max_abs_over_bound']:.4g}, "
            f"{100 * worst['fraction_outside']:.2f} % of samples outside, margin {worst['margin']:.4g}")
