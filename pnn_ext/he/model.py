"""The HE-ready model (what pnn_ext.he.fold makes and the evaluators run): alternating
affine maps and polynomials in the Chebyshev basis, the input range it was folded with,
and its file: one ``.npz`` whose model id (a SHA-256 of everything in it) is checked on
every load and names the model in every key and ciphertext file made for it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..atomic_file import atomic_write
from ..strict_json import dumps

FORMAT = "pnn-he model 2"
RANGE_MARGIN = 0.1   # of the span, on each side: test data of the same distribution stays inside


class ModelFileError(ValueError):
    """A model file that is missing, damaged, edited or not pnn-he's (named in the message)."""


@dataclass
class Affine:
    """An affine layer ``y = weight @ x + bias`` (everything between two polynomials, folded)."""
    weight: np.ndarray  # (out, in), float64
    bias: np.ndarray    # (out,)

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape


@dataclass
class Poly:
    """A polynomial activation, applied element-wise: ``chebval(t, coeffs)`` on its input t."""
    coeffs: np.ndarray  # Chebyshev, low to high, in t (the input is already x / B); output is p / out_scale
    degree: int
    bound: float        # B of the original activation (for the record)
    out_scale: float    # the output was divided by this; the next affine map multiplies it back
    name: str           # the module it came from


@dataclass(frozen=True)
class InputRange:
    """Smallest and largest input value of the data the model was folded with (its training
    inputs), over all features; ``allowed`` widens it by RANGE_MARGIN of its span."""
    low: float
    high: float
    samples: int

    @property
    def allowed(self) -> tuple[float, float]:
        pad = RANGE_MARGIN * (self.high - self.low)
        return self.low - pad, self.high + pad

    @classmethod
    def of(cls, inputs) -> InputRange:
        x = np.asarray(inputs, dtype=np.float64)
        return cls(float(x.min()), float(x.max()), len(x))

    def outside(self, x: np.ndarray) -> np.ndarray:
        """Per sample (rows of ``x``): whether any of its values is outside ``allowed``."""
        lo, hi = self.allowed
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return ((x < lo) | (x > hi)).any(axis=1)


class HEModel:
    """logits = A_k(... P_2(A_2 P_1(A_1 x + b_1) + b_2) ...) + b_k on flattened inputs."""

    def __init__(self, layers: list, in_shape: tuple[int, ...], input_range: InputRange | None = None,
                 certificate: dict | None = None):
        self.layers = layers
        self.in_shape = tuple(in_shape)
        self.input_range = input_range
        self.certificate = certificate      # pnn_ext.he.certificate: per activation, max |x| / B on a data set

    @property
    def num_outputs(self) -> int:
        return self.layers[-1].weight.shape[0]

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))

    def __call__(self, x) -> np.ndarray:
        """Plaintext evaluation in float64: x (N, *in_shape) -> logits (N, classes)."""
        v = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for layer in self.layers:
            if isinstance(layer, Affine):
                v = v @ layer.weight.T + layer.bias
            else:
                v = np.polynomial.chebyshev.chebval(v, layer.coeffs)
        return v

    def summary(self) -> list[str]:
        out = []
        for layer in self.layers:
            if isinstance(layer, Affine):
                out.append(f"affine {layer.shape[1]} -> {layer.shape[0]}")
            else:
                out.append(f"poly degree {layer.degree} ({layer.name}, B={layer.bound:g})")
        return out

    # ------------------------------------------------------------------ the file
    def _contents(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays, meta = {}, {"format": FORMAT, "in_shape": [int(d) for d in self.in_shape], "layers": []}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Affine):
                arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"] = layer.weight, layer.bias
                meta["layers"].append({"kind": "affine", "in": int(layer.shape[1]), "out": int(layer.shape[0])})
            else:
                arrays[f"layer{i}_chebyshev"] = layer.coeffs
                meta["layers"].append({"kind": "poly", "degree": int(layer.degree), "bound": float(layer.bound),
                                       "out_scale": float(layer.out_scale), "name": str(layer.name)})
        r = self.input_range
        meta["input_range"] = None if r is None else {"low": r.low, "high": r.high, "samples": r.samples}
        if self.certificate is not None:    # absent, not null, when none: the ids of earlier files stay valid
            meta["certificate"] = self.certificate
        return meta, {k: np.ascontiguousarray(v, dtype="<f8") for k, v in arrays.items()}

    @property
    def model_id(self) -> str:
        """SHA-256 (hex) of the model's description and every weight and coefficient."""
        return _model_id(*self._contents())

    def export(self, path: str) -> str:
        """Write one .npz (``path`` must end in .npz): layer{i}_weight / layer{i}_bias (affine) or
        layer{i}_chebyshev (polynomial: Chebyshev coefficients in t, low to high), and ``meta``
        (JSON: kinds, shapes, degrees, B, the input range, the range certificate, the model id).
        Returns the model id."""
        if not str(path).endswith(".npz"):
            raise ValueError(f"a model file must end in .npz, got {path}")   # numpy would append it
        meta, arrays = self._contents()
        meta["model_id"] = _model_id(meta, arrays)
        with atomic_write(path, prefix=".pnn-he-", suffix=".npz") as fh:  # never half a file under its name
            np.savez(fh, meta=np.array(dumps(meta)), **arrays)
        return meta["model_id"]

    @classmethod
    def load(cls, path: str) -> HEModel:
        """The model :meth:`export` wrote, its model id checked (ModelFileError otherwise)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except FileNotFoundError:
            raise ModelFileError(f"model {path} does not exist") from None
        except Exception as e:   # not a zip, a damaged member (CRC), no meta, not JSON
            raise ModelFileError(f"{path} is not a folded model from pnn-he fold ({type(e).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{path} is not a folded model from pnn-he fold of this version (format "
                                 f"{meta.get('format') if isinstance(meta, dict) else None!r})")
        saved = meta.pop("model_id", None)
        try:
            layers = [Affine(arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"]) if m["kind"] == "affine" else
                      Poly(arrays[f"layer{i}_chebyshev"], m["degree"], m["bound"], m["out_scale"], m["name"])
                      for i, m in enumerate(meta["layers"])]
            r = meta["input_range"]
            model = cls(layers, tuple(meta["in_shape"]),
                        None if r is None else InputRange(float(r["low"]), float(r["high"]), int(r["samples"])),
                        meta.get("certificate"))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: damaged model description ({type(e).__name__}: {e})") from None
        if saved != model.model_id:
            raise ModelFileError(f"{path} is damaged or was edited: its model id does not match its content")
        return model


def _model_id(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype="<f8")
        h.update(f"\0{name}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()
