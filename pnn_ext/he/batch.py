"""Batch packing (slot = sample): one ciphertext per input feature, holding that
feature of up to N/2 samples, as in CryptoNets (ICML 2016).

Every operation is slot-wise, so there are no rotations and no Galois keys:
* an affine layer is, per output, a sum of plaintext-scalar products over its
  non-zero weights only (a folded convolution is a sparse matrix: 25 of 784
  inputs per output for a 5x5 kernel) and the bias, then ONE rescale — the
  products are accumulated unrescaled at a common exact scale (pnn_ext.he.engine);
* a polynomial is the Chebyshev evaluator (pnn_ext.he.chebyshev) on one ciphertext.

Memory is one ciphertext per activation value per batch, so the work is streamed:
* the first affine layer pulls its inputs: outputs are visited in the order of
  their first input, an input is encrypted (or loaded) at its first use and
  dropped after its last (a convolution keeps a band of image rows alive);
* each output goes through its polynomial at once and is pushed into the next
  layer's accumulators (as many as that layer has outputs), then dropped; a layer
  wider than its input instead keeps its inputs and pulls, whichever holds fewer.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import chebyshev
from .engine import Engine
from .memory import peak_rss_bytes, peak_rss_reset
from .model import Affine, HEModel, Poly
from .params import poly_depth
from .tenseal_io import Scratch


class Stages:
    """The HE model as (affine, polynomial-or-None) stages with their sparsity and plans."""

    def __init__(self, model: HEModel):
        layers, self.stages = model.layers, []
        i = 0
        while i < len(layers):
            affine = layers[i]
            poly = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], Poly) else None
            if not isinstance(affine, Affine):
                raise ValueError(f"layer {i}: expected an affine map, got a polynomial")
            empty = np.flatnonzero(~affine.weight.any(axis=1))
            if len(empty):
                raise ValueError(f"layer {i}: output {int(empty[0])} has no non-zero weight (a constant output "
                                 f"has no ciphertext to carry it)")
            plan = chebyshev.plan(poly.coeffs) if poly is not None else None
            self.stages.append((affine, poly, plan))
            i += 2 if poly is not None else 1
        self.in_features = int(np.prod(model.in_shape))

    def nonzeros(self) -> int:
        return sum(int(np.count_nonzero(a.weight)) for a, _, _ in self.stages)


class BatchRunner:
    """Evaluates an HEModel on batch-packed ciphertexts. ``engine`` may hold only the public
    context (the server): evaluation needs the relinearisation keys and nothing secret."""

    def __init__(self, model: HEModel, engine: Engine):
        self.model, self.engine = model, engine
        self.stages = Stages(model)

    # -------------------------------------------------------------- one stage
    def _finish(self, acc, bias: float, poly: Poly | None, plan, level: int):
        """bias + acc, rescaled to ``level``, through the polynomial if any."""
        e = self.engine
        e.add_const(acc, bias)
        out = e.rescale(acc, e.scale)
        if plan is not None:
            out = chebyshev.evaluate(e, out, plan, level + poly_depth(poly.degree))
        return out

    def _pull(self, affine: Affine, poly, plan, get: Callable[[int], object], level_in: int):
        """Yield (j, output j) over ``affine``'s outputs, each input fetched by ``get`` at its first
        use and released after its last."""
        e, w = self.engine, affine.weight
        rows = [np.flatnonzero(w[j]) for j in range(w.shape[0])]
        order = sorted(range(w.shape[0]), key=lambda j: (rows[j][0], j))
        last = {}
        for pos, j in enumerate(order):
            for i in rows[j]:
                last[int(i)] = pos
        live: dict[int, object] = {}
        for pos, j in enumerate(order):
            acc = None
            for i in rows[j]:
                i = int(i)
                if i not in live:
                    live[i] = get(i)
                acc = e.mul_scalar_into(acc, live[i], w[j, i], level_in, e.scale)
                if last[i] == pos:
                    del live[i]
            yield j, self._finish(acc, affine.bias[j], poly, plan, level_in + 1)

    def _push(self, affine: Affine, poly, plan, inputs, level_in: int):
        """Accumulate each (i, input i) of ``inputs`` into the outputs it feeds, then yield them."""
        e, w = self.engine, affine.weight
        cols = {}
        acc: list = [None] * w.shape[0]
        for i, x in inputs:
            if i not in cols:
                cols[i] = np.flatnonzero(w[:, i])
            for o in cols[i]:
                acc[o] = e.mul_scalar_into(acc[o], x, w[o, i], level_in, e.scale)
        for o in range(w.shape[0]):
            a, acc[o] = acc[o], None
            yield o, self._finish(a, affine.bias[o], poly, plan, level_in + 1)

    # -------------------------------------------------------------- the network
    def run(self, get: Callable[[int], object]) -> list:
        """The logit ciphertexts (one per class) of the batch whose input feature i ``get(i)`` returns."""
        level = 0
        stream = None
        for k, (affine, poly, plan) in enumerate(self.stages.stages):
            if k == 0:
                stream = self._pull(affine, poly, plan, get, level)
            elif affine.weight.shape[0] <= affine.weight.shape[1]:
                stream = self._push(affine, poly, plan, stream, level)
            else:
                stored = dict(stream)
                stream = self._pull(affine, poly, plan, stored.pop, level)
            level += 1 + (poly_depth(poly.degree) if poly is not None else 0)
        out = dict(stream)
        return [out[o] for o in range(len(out))]


def run_batches(runner: BatchRunner, x: np.ndarray, batch_size: int, secret_key=None, progress=None) -> dict:
    """Encrypt, evaluate and decrypt ``x`` (n, features) in batches of ``batch_size`` samples
    (one context, the client's, does all three here). Returns the logits (n, classes) and per
    batch: seconds (encrypt, evaluate, decrypt), peak RSS; and the bytes of one serialised
    logit ciphertext."""
    e = runner.engine
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    logits, batches, logit_bytes = [], [], None
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        peak_rss_reset()
        enc_s = 0.0

        def get(i: int, xb=xb):
            nonlocal enc_s
            t0 = time.perf_counter()
            ct = e.encrypt(xb[:, i], secret_key)
            enc_s += time.perf_counter() - t0
            return ct
        t0 = time.perf_counter()
        out = runner.run(get)
        eval_s = time.perf_counter() - t0 - enc_s
        t0 = time.perf_counter()
        logits.append(np.stack([np.asarray(e.decrypt(ct, len(xb))) for ct in out], axis=1))
        dec_s = time.perf_counter() - t0
        if logit_bytes is None:
            scratch = Scratch()
            logit_bytes = len(scratch.to_bytes(out[0]))
            scratch.close()
        batches.append({"samples": len(xb), "encrypt_s": enc_s, "evaluate_s": eval_s, "decrypt_s": dec_s,
                        "seconds": enc_s + eval_s + dec_s, "peak_rss_bytes": peak_rss_bytes()})
        if progress:
            progress(batches[-1])
    return {"logits": np.concatenate(logits), "batches": batches, "logit_ciphertext_bytes": logit_bytes}
