"""Encrypted inference of an HE-ready model with TenSEAL (CKKS).

One sample is one ciphertext vector: the flattened input is encrypted, each
affine layer is a vector-matrix product with the plaintext weights
(``CKKSVector.mm``) plus the bias, each polynomial is ``CKKSVector.polyval`` on
every slot at once, and the logits are decrypted at the end. TenSEAL is an
optional dependency: ``pip install .[he]``.
"""
from __future__ import annotations

import time

import numpy as np

from .fold import Affine, HEModel
from .params import CKKSParams, check


def _tenseal():
    try:
        import tenseal as ts
    except ImportError:
        raise ImportError("encrypted inference needs TenSEAL: pip install 'pnn_ext[he]' (or pip install tenseal)") \
            from None
    return ts


def make_context(params: CKKSParams):
    """A CKKS context with the secret key (it both encrypts and decrypts here), the
    global scale and the Galois keys the vector-matrix products rotate with."""
    ts = _tenseal()
    try:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    except ValueError as e:
        from .params import HEParameterError
        raise HEParameterError(f"TenSEAL rejected {params}: {e}") from None
    ctx.global_scale = 2.0 ** params.scale_bits
    ctx.generate_galois_keys()
    return ctx


class EncryptedRunner:
    """Runs ``model`` on encrypted samples under ``params`` (checked against the model's depth)."""

    def __init__(self, model: HEModel, params: CKKSParams):
        check(model, params)
        self.model, self.params = model, params
        self.ctx = make_context(params)
        # Plaintext operands converted once: TenSEAL takes nested lists.
        # The biases are encrypted once, here: TenSEAL encodes a plain vector added to a
        # ciphertext replicated over all slots, and the next vector-matrix product
        # then sums those copies in (measured: logit errors of order 1); a ciphertext
        # bias has zeros past its length.
        ts = _tenseal()
        self.ops = [("mm", layer.weight.T.tolist(), ts.ckks_vector(self.ctx, layer.bias.tolist()))
                    if isinstance(layer, Affine) else ("poly", layer.coeffs.tolist(), None)
                    for layer in model.layers]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Encrypt one sample, evaluate every layer on the ciphertext, decrypt the logits."""
        ts = _tenseal()
        v = ts.ckks_vector(self.ctx, np.asarray(x, dtype=np.float64).ravel().tolist())
        for kind, a, b in self.ops:
            if kind == "mm":
                v = v.mm(a) + b
            else:
                v = v.polyval(a)
        return np.asarray(v.decrypt())

    def run(self, xs: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Logits of each sample and the seconds each took (encrypt to decrypt)."""
        out, secs = [], []
        for x in xs:
            t0 = time.perf_counter()
            out.append(self.logits(x))
            secs.append(time.perf_counter() - t0)
        return np.stack(out), secs
