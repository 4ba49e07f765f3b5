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
from .sealed_file import FormatError, SealedFile, encode, write
from .tenseal_io import Scratch, tenseal

SECRET, PUBLIC = "secret key", "public key"


def make_context(params: CKKSParams, galois: bool = False, n_threads: int | None = None):
    """A CKKS context with the secret key and relinearisation keys (and Galois keys for
    sample packing's rotations); ``n_threads``: TenSEAL's thread pool (default: every core)."""
    ts = tenseal()
    try:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes), n_threads=n_threads)
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


def key_header(ctx, params: CKKSParams, model_id: str, in_features: int, input_range: dict | None) -> dict:
    """What both key files' headers hold: the key fingerprint, parameters, and the model the keys are for."""
    return {"key_fingerprint": fingerprint(ctx), "params": asdict(params), "model_id": model_id,
            "in_features": int(in_features), "input_range": input_range}


def write_keys(ctx, params: CKKSParams, model, secret_path: str, public_path: str) -> dict:
    """Write the secret and the public key file for ``model``; returns the header they share."""
    r = model.input_range
    header = key_header(ctx, params, model.model_id, model.in_features,
                        None if r is None else {"low": r.low, "high": r.high, "samples": r.samples})
    for path, kind, secret in ((secret_path, SECRET, True), (public_path, PUBLIC, False)):
        write(path, {"kind": kind, **header}, context_bytes(ctx, secret))
    return header


def key_message(ctx, header: dict, secret: bool) -> bytes:
    """The bytes of the secret or public key file (what ``pnn-he keygen`` writes) of ``ctx``,
    with ``header`` (from :func:`key_header`): an upload, or keys held in memory."""
    return encode({"kind": SECRET if secret else PUBLIC, **header}, context_bytes(ctx, secret))


class Keys:
    """A key file, checked: ``ctx`` (the TenSEAL context), ``header``, ``fingerprint``, ``path``.
    ``source``: a path or an uploaded key file's bytes (named ``label`` in errors); ``n_threads``:
    TenSEAL's thread pool (default: every core)."""

    def __init__(self, source: str | bytes, need_secret: bool, label: str | None = None, n_threads: int | None = None):
        with SealedFile(source, (SECRET, PUBLIC), "key", label) as f:
            self.header, body, path = f.header, f.body(), f.path
        if need_secret and self.header["kind"] != SECRET:
            raise FormatError(f"{path} holds no secret key: the client's secret.ctx is needed")
        try:
            self.ctx = tenseal().context_from(body, n_threads=n_threads)
            self.fingerprint = fingerprint(self.ctx)
        except Exception as e:   # TenSEAL raises bare exceptions on bad protobufs, ValueError without a public key
            raise FormatError(f"{path}: the keys inside do not load ({type(e).__name__})") from None
        self.path = path
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
