"""Fine-tuning into a PNN: ``pnn-train --init-from CHECKPOINT [--replace progressive]``.

``load_init`` copies a trained run's weights into the model this run built: every
parameter and buffer (BatchNorm statistics included) except the activations'.
ReLU modules hold no state and PolyActivation modules hold only their coefficients
and settings, so the mapping ReLU <-> PolyActivation is by module name: the
activations of this run keep what this run's settings made of them (a fit for
--degree, --bound, ...), whatever the checkpoint's activation or degree was.
Anything else that differs is a CheckpointError naming the first key at fault.

``Progressive`` swaps the activations in one layer after another: layer i of n
(in ``named_modules`` order, the forward order of the built-in models) is
polynomial from step floor(i * P / n), P = round(replace_epochs * steps per
epoch); before that it runs the function its polynomial is fitted to (relu,
silu, gelu). Layer 0 is polynomial from the first step, the last from step
floor((n-1) P / n) < P. The state is a function of the step alone, so a resumed
or rolled-back run finds the same mix again.
"""
from __future__ import annotations

import hashlib
import math
import os

import torch.nn.functional as F
from torch import nn

from ..nn import PolyActivation
from .checkpoint import CheckpointError, load
from .run import checkpoint_path

# What a layer not yet swapped computes, by the target its polynomial is fitted to.
STAND_INS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}
_EXTRA = "_extra_state"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _saved_poly_prefixes(state: dict) -> set[str]:
    """Module prefixes ("features.1.", or "" for the root) of the PolyActivations in a state dict."""
    return {k[:-len(_EXTRA)] for k, v in state.items()
            if k.endswith(_EXTRA) and isinstance(v, dict) and "degree" in v}


def _activation_key(key: str, prefixes: set[str]) -> bool:
    return any(key in (p + "coeffs", p + _EXTRA) for p in prefixes)


def _shape(v) -> str:
    return str(tuple(v.shape)) if hasattr(v, "shape") else type(v).__name__


def load_init(model: nn.Module, path: str, load_weights: bool = True) -> dict:
    """Copy the checkpoint's non-activation weights into ``model`` (unless not
    ``load_weights``: a resumed run takes its weights from its own checkpoint);
    returns what summary.json records of the source. ``path``: a checkpoint, or a run
    directory (its best.pt, else last.pt)."""
    path = checkpoint_path(path)
    ck = load(path)
    src, dst = ck["model"], model.state_dict()
    src_polys = _saved_poly_prefixes(src)
    dst_polys = {name + "." if name else "" for name, m in model.named_modules() if isinstance(m, PolyActivation)}
    cfg = ck.get("config", {})
    act = f"degree {cfg.get('degree')}" if cfg.get("activation", "poly") == "poly" else cfg.get("activation")
    what = f"{cfg.get('model')} on {cfg.get('dataset')}, {act}"

    def fail(detail: str):
        raise CheckpointError(f"--init-from {path} ({what}) does not match this model: {detail}")

    if src_polys and dst_polys and src_polys != dst_polys:  # PNN -> PNN: the same layers
        first = sorted(src_polys ^ dst_polys)[0]
        fail(f"'{first}' is a polynomial activation in {'the checkpoint' if first in src_polys else 'this model'} "
             f"only")
    src_keys = [k for k in src if not _activation_key(k, src_polys)]
    dst_keys = [k for k in dst if not _activation_key(k, dst_polys)]
    for k in dst_keys:
        if k not in src:
            fail(f"'{k}' {_shape(dst[k])} is in this model but not in the checkpoint")
        if _shape(src[k]) != _shape(dst[k]):
            fail(f"'{k}' is {_shape(src[k])} in the checkpoint, {_shape(dst[k])} in this model")
    for k in src_keys:
        if k not in dst:
            fail(f"'{k}' {_shape(src[k])} is in the checkpoint but not in this model")
    if load_weights:
        model.load_state_dict({**dst, **{k: src[k] for k in dst_keys}})
    return {"path": os.path.abspath(path), "sha256": sha256(path), "source": what,
            "source_epoch": ck.get("epoch"), "source_step": ck.get("step"), "tensors_copied": len(dst_keys),
            "activations_replaced": len(dst_polys)}


class Progressive:
    """Polynomial activations swapped in one layer at a time (see the module docstring)."""

    def __init__(self, model: nn.Module, replace_epochs: float, steps_per_epoch: int):
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PolyActivation)]
        unknown = sorted({m.target for _, m in self.layers} - set(STAND_INS))
        if unknown:
            raise ValueError(f"replace progressive: no stand-in for activations fitted to {unknown} "
                             f"(known: {list(STAND_INS)})")
        self.period = max(1, round(replace_epochs * steps_per_epoch))
        n = max(len(self.layers), 1)
        self.starts = [math.floor(i * self.period / n) for i in range(len(self.layers))]

    def schedule(self) -> list[dict]:
        return [{"layer": name, "polynomial_from_step": s} for (name, _), s in zip(self.layers, self.starts)]

    def done(self) -> bool:
        """Every layer polynomial now (not merely due: a swap happens at the next step)."""
        return all("forward" not in m.__dict__ for _, m in self.layers)

    def apply(self, step: int) -> list[str]:
        """Put each layer in its state for ``step``; returns the layers that became polynomial."""
        swapped = []
        for (name, m), start in zip(self.layers, self.starts):
            stand_in = "forward" in m.__dict__  # an instance attribute shadows PolyActivation.forward
            if step >= start and stand_in:
                del m.forward
                swapped.append(name)
            elif step < start and not stand_in:
                m.forward = STAND_INS[m.target]
                m.boundary_terms, m.range_stats = [], None
        return swapped
