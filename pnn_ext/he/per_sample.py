"""Sample packing (latency mode): one sample is one ciphertext vector, with TenSEAL.

The flattened input is encrypted, each affine layer is a vector-matrix product
with the plaintext weights (``CKKSVector.mm``: TenSEAL's diagonal method, one
rotation per input value) plus the bias, each polynomial is the Chebyshev
evaluator (pnn_ext.he.chebyshev) on every slot at once, and the logits are
decrypted at the end. One context holds the secret key; for throughput and the
client/server split use batch packing (pnn_ext.he.batch, pnn_ext.he.ciphertexts).
TenSEAL is an optional dependency: ``pip install .[he]``.
"""
from __future__ import annotations

import struct
import time

import numpy as np

from . import chebyshev
from .engine import Engine
from .keys import make_context
from .model import Affine, HEModel
from .params import CKKSParams, check, poly_depth
from .tenseal_io import Scratch, tenseal


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _vector_bytes(ct_bytes: bytes, size: int, scale: float) -> bytes:
    """A serialised TenSEAL CKKSVector (its protobuf: 1 packed sizes, 2 ciphertexts, 3 scale)
    around one SEAL ciphertext: how a ciphertext the Chebyshev evaluator made goes back
    into TenSEAL's vector API."""
    sizes = _varint(size)
    return (b"\x0a" + _varint(len(sizes)) + sizes + b"\x12" + _varint(len(ct_bytes)) + ct_bytes
            + b"\x19" + struct.pack("<d", scale))


class PerSampleRunner:
    """Runs ``model`` on encrypted samples under ``params`` (checked against the model's depth)."""

    def __init__(self, model: HEModel, params: CKKSParams):
        check(model, params)
        self.model, self.params = model, params
        self.ctx = make_context(params, galois=True)
        self.engine = Engine(self.ctx)
        self.scratch = Scratch()
        # Plaintext operands converted once: TenSEAL takes nested lists.
        # The biases are encrypted once, here: TenSEAL encodes a plain vector added to a
        # ciphertext replicated over all slots, and the next vector-matrix product
        # then sums those copies in (measured: logit errors of order 1); a ciphertext
        # bias has zeros past its length.
        ts = tenseal()
        self.ops = []
        for layer in model.layers:
            if isinstance(layer, Affine):
                self.ops.append(("mm", layer.weight.T.tolist(), ts.ckks_vector(self.ctx, layer.bias.tolist())))
            else:
                self.ops.append(("poly", chebyshev.plan(layer.coeffs),
                                 poly_depth(layer.degree)))

    def _poly(self, v, plan, levels: int):
        ts = tenseal()
        ct = v.data.ciphertext()[0]
        out = chebyshev.evaluate(self.engine, ct, plan, self.engine.level(ct) + levels)
        return ts.ckks_vector_from(self.ctx, _vector_bytes(self.scratch.to_bytes(out), v.size(), out.scale))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Encrypt one sample, evaluate every layer on the ciphertext, decrypt the logits."""
        ts = tenseal()
        v = ts.ckks_vector(self.ctx, np.asarray(x, dtype=np.float64).ravel().tolist())
        for kind, a, b in self.ops:
            v = v.mm(a) + b if kind == "mm" else self._poly(v, a, b)
        return np.asarray(v.decrypt())

    def run(self, xs: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Logits of each sample and the seconds each took (encrypt to decrypt)."""
        out, secs = [], []
        for x in xs:
            t0 = time.perf_counter()
            out.append(self.logits(x))
            secs.append(time.perf_counter() - t0)
        return np.stack(out), secs
