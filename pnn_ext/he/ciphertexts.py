"""Client/server split for batch-packed inference, on files.

* client: ``keygen`` makes a CKKS context with the secret key (secret.ctx, kept) and
  its public part (public.ctx: public and relinearisation keys, no secret key, no
  Galois keys — batch packing never rotates; pnn_ext.he.keys); ``encrypt`` writes one
  ciphertext per input feature of up to N/2 samples.
* server: ``infer`` reads public.ctx, the folded model (pnn_ext.he.model) and the
  ciphertexts, and writes one ciphertext per logit. It holds nothing that can decrypt:
  TenSEAL refuses the secret key of a public context.
* client: ``decrypt`` reads the logits with secret.ctx.

A ciphertext file is a sealed file (pnn_ext.he.sealed_file) whose header holds its
kind (inputs or logits), samples, features or classes, the key fingerprint, CKKS
parameters and model id it belongs to, and each ciphertext's byte length; its body is
the SEAL-serialised ciphertexts back to back, so the server loads each input at its
first use and no batch has to be in memory whole. Opening one checks the digest and
that it was made under the keys (and for the model) the command holds. The client
encrypts with the secret key (symmetric encryption): SEAL then stores the random half
of each ciphertext as a seed, which halves the upload.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .engine import Engine
from .keys import Keys
from .sealed_file import FormatError, SealedFile, encode, write
from .tenseal_io import Scratch

INPUTS, LOGITS = "inputs", "logits"


class CiphertextWriter:
    """Write ciphertexts one at a time (each freed by the caller after), then the file, stamped
    with ``keys``' fingerprint, parameters and model id."""

    def __init__(self, path: str, meta: dict, keys: Keys):
        self.path, self.lengths = path, []
        self.meta = {**meta, "key_fingerprint": keys.fingerprint, "params": keys.header["params"],
                     "model_id": keys.model_id}
        self.scratch = Scratch()
        self.body = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path)) or ".")

    def add(self, ct) -> None:
        data = self.scratch.to_bytes(ct)
        self.body.write(data)
        self.lengths.append(len(data))

    def close(self) -> int:
        try:
            return write(self.path, {**self.meta, "lengths": self.lengths}, self.body)
        finally:
            self.body.close()
            self.scratch.close()


def encode_ciphertexts(meta: dict, keys: Keys, cts) -> bytes:
    """The bytes of the ciphertext file :class:`CiphertextWriter` would write, for a network message."""
    scratch = Scratch()
    try:
        blobs = [scratch.to_bytes(ct) for ct in cts]
    finally:
        scratch.close()
    header = {**meta, "key_fingerprint": keys.fingerprint, "params": keys.header["params"],
              "model_id": keys.model_id, "lengths": [len(b) for b in blobs]}
    return encode(header, b"".join(blobs))


class CiphertextReader:
    """The ciphertexts of an intact file of ``kind`` made under ``keys`` (and for ``model_id``
    when given), each loaded when asked for. ``source``: a path, or a message's bytes (named
    ``label`` in errors)."""

    def __init__(self, source: str | bytes, kind: str, engine: Engine, keys: Keys, model_id: str | None = None,
                 label: str | None = None):
        self.engine = engine
        self.file = SealedFile(source, (kind,), "ciphertext", label)
        self.path = path = self.file.path
        try:
            self.meta = meta = self.file.header
            if meta.get("key_fingerprint") != keys.fingerprint:
                raise FormatError(f"{path} was made under key {str(meta.get('key_fingerprint'))[:16]}, "
                                  f"{keys.path} is key {keys.short()}: use the keys it was made with")
            if model_id is not None and meta.get("model_id") != model_id:
                raise FormatError(f"{path} was made for model {str(meta.get('model_id'))[:16]}, this model is "
                                  f"{model_id[:16]}")
            try:
                lengths = [int(v) for v in meta["lengths"]]
                self.samples = int(meta["samples"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{path}: damaged header") from None
            self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            if min(lengths, default=0) < 0 or self.offsets[-1] != self.file.body_size or \
                    not 1 <= self.samples <= engine.slots:
                raise FormatError(f"{path}: the header does not describe the body")
        except BaseException:
            self.file.close()
            raise
        self.scratch = Scratch()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int):
        data = self.file.read(int(self.offsets[i]), int(self.offsets[i + 1] - self.offsets[i]))
        try:
            return self.scratch.load(self.engine.sc, data)
        except Exception as e:  # SEAL: wrong parameters or damaged data
            raise FormatError(f"{self.path}: ciphertext {i} does not load under this context "
                              f"({type(e).__name__}: {e})") from None

    def close(self) -> None:
        self.file.close()
        self.scratch.close()
