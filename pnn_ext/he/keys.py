"""CKKS keys: the TenSEAL context, its fingerprint, and the key files ``pnn-he keygen``
writes (secret.ctx for the client, public.ctx for the server; pnn_ext.he.sealed_file).

A key file's header carries the key fingerprint (SHA-256 of the public key, which the
secret and the public context share), the CKKS parameters, and the id and input range
of the model the keys were made for. Loading checks the digest, the kind, and that the
keys inside have the fingerprint the header claims."""
from __future__ import annotations

import hashlib
from dataclasses import asdict

from .params import CKKSParams, HEParameterError
from .sealed_file import FormatError, SealedFile, write
from .tenseal_io import Scratch, tenseal

SECRET, PUBLIC = "secret key", "public key"


def make_context(params: CKKSParams, galois: bool = False):
    """A CKKS context with the secret key and relinearisation keys (and Galois keys for
    sample packing's rotations)."""
    ts = tenseal()
    try:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    except ValueError as e:
        raise HEParameterError(f"TenSEAL rejected {params}: {e}") from None
    ctx.global_scale = 2.0 ** params.scale_bits
    if galois:
        ctx.generate_galois_keys()
    return ctx


def context_bytes(ctx, secret: bool) -> bytes:
    """The serialised context with the public and relinearisation keys, and the secret key if
    ``secret`` (never the Galois keys: batch packing does not rotate)."""
    return ctx.serialize(save_public_key=True, save_secret_key=secret, save_galois_keys=False, save_relin_keys=True)


def fingerprint(ctx) -> str:
    """SHA-256 (hex) of the context's public key: the same for the secret and the public context."""
    scratch = Scratch()
    try:
        return hashlib.sha256(scratch.to_bytes(ctx.public_key().data)).hexdigest()
    finally:
        scratch.close()


def write_keys(ctx, params: CKKSParams, model, secret_path: str, public_path: str) -> dict:
    """Write the secret and the public key file for ``model``; returns the header they share."""
    r = model.input_range
    header = {"key_fingerprint": fingerprint(ctx), "params": asdict(params), "model_id": model.model_id,
              "in_features": model.in_features,
              "input_range": None if r is None else {"low": r.low, "high": r.high, "samples": r.samples}}
    for path, kind, secret in ((secret_path, SECRET, True), (public_path, PUBLIC, False)):
        write(path, {"kind": kind, **header}, context_bytes(ctx, secret))
    return header


class Keys:
    """A key file, checked: ``ctx`` (the TenSEAL context), ``header``, ``fingerprint``, ``path``."""

    def __init__(self, path: str, need_secret: bool):
        with SealedFile(path, (SECRET, PUBLIC), "key") as f:
            self.header, body = f.header, f.body()
        if need_secret and self.header["kind"] != SECRET:
            raise FormatError(f"{path} holds no secret key: the client's secret.ctx is needed")
        try:
            self.ctx = tenseal().context_from(body)
        except Exception as e:   # TenSEAL raises bare exceptions on bad protobufs
            raise FormatError(f"{path}: the keys inside do not load ({type(e).__name__})") from None
        self.path, self.fingerprint = path, fingerprint(self.ctx)
        if self.fingerprint != self.header.get("key_fingerprint") or \
                self.ctx.has_secret_key() != (self.header["kind"] == SECRET):
            raise FormatError(f"{path}: the keys inside are not the ones its header names")

    @property
    def secret(self) -> bool:
        return self.ctx.has_secret_key()

    @property
    def model_id(self) -> str:
        return self.header.get("model_id", "")

    def short(self) -> str:
        return self.fingerprint[:16]
