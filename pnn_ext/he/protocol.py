"""Client/server split for batch-packed inference, on files.

* client: ``keygen`` makes a CKKS context with the secret key (secret.ctx, kept) and
  its public part (public.ctx: public and relinearisation keys, no secret key, no
  Galois keys — batch packing never rotates); ``encrypt`` writes one ciphertext per
  input feature of up to N/2 samples.
* server: ``infer`` reads public.ctx, the folded model (HEModel.export's .npz) and
  the ciphertexts, and writes one ciphertext per logit. It holds nothing that can
  decrypt: TenSEAL refuses the secret key of a public context.
* client: ``decrypt`` reads the logits with secret.ctx.

A ciphertext file is MAGIC, an 8-byte little-endian header length, a JSON header
(the metadata and each ciphertext's byte length) and the SEAL-serialised
ciphertexts back to back, so the server loads each input at its first use and no
batch has to be in memory whole. The client encrypts with the secret key
(symmetric encryption): SEAL then stores the random half of each ciphertext as a
seed, which halves the upload.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import weakref

import numpy as np

from .engine import Engine, sealapi
from .params import CKKSParams

MAGIC = b"PNNHE-CT1\n"


class FormatError(ValueError):
    """A file that is not what the command expects (named in the message)."""


def _ts():
    try:
        import tenseal as ts
    except ImportError:
        raise ImportError("encrypted inference needs TenSEAL: pip install 'pnn_ext[he]' (or pip install tenseal)") \
            from None
    return ts


def make_context(params: CKKSParams, galois: bool = False):
    """A CKKS context with the secret key and relinearisation keys (and Galois keys for
    sample packing's rotations)."""
    ts = _ts()
    from .params import HEParameterError
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
    return ctx.serialize(save_public_key=True, save_secret_key=secret, save_galois_keys=False, save_relin_keys=True)


def load_context(path: str):
    ts = _ts()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise FormatError(f"cannot read context {path}: {e.strerror}") from None
    try:
        return ts.context_from(data)
    except Exception as e:   # TenSEAL raises bare exceptions on bad protobufs
        raise FormatError(f"{path} is not a TenSEAL context ({type(e).__name__})") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Scratch:
    """SEAL's Python binding saves and loads ciphertexts by file name only: one scratch file,
    removed by close(), when the object is collected, or at exit, whichever comes first."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="pnn-he-", suffix=".ct")
        os.close(fd)
        self._remove = weakref.finalize(self, _unlink, self.path)

    def to_bytes(self, obj) -> bytes:
        obj.save(self.path)
        with open(self.path, "rb") as fh:
            return fh.read()

    def load(self, sc, data: bytes):
        with open(self.path, "wb") as fh:
            fh.write(data)
        ct = sealapi().Ciphertext()
        ct.load(sc, self.path)
        return ct

    def close(self):
        self._remove()


class CiphertextWriter:
    """Write ciphertexts one at a time (each freed by the caller after), then the header."""

    def __init__(self, path: str, meta: dict):
        self.path, self.meta, self.lengths = path, dict(meta), []
        self.scratch = _Scratch()
        self.body = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path)) or ".")

    def add(self, ct) -> None:
        data = self.scratch.to_bytes(ct)
        self.body.write(data)
        self.lengths.append(len(data))

    def close(self) -> int:
        header = json.dumps({**self.meta, "lengths": self.lengths}).encode()
        self.body.seek(0)
        with open(self.path, "wb") as fh:
            fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
            while chunk := self.body.read(1 << 24):
                fh.write(chunk)
        self.body.close()
        self.scratch.close()
        return os.path.getsize(self.path)


class CiphertextReader:
    """The ciphertexts of a file written by CiphertextWriter, each loaded when asked for."""

    def __init__(self, path: str, engine: Engine):
        self.path, self.engine = path, engine
        try:
            self.fh = open(path, "rb")
        except OSError as e:
            raise FormatError(f"cannot read {path}: {e.strerror}") from None
        head = self.fh.read(len(MAGIC) + 8)
        if len(head) < len(MAGIC) + 8 or not head.startswith(MAGIC):
            raise FormatError(f"{path} is not a pnn-he ciphertext file")
        (n,) = struct.unpack("<Q", head[len(MAGIC):])
        try:
            self.meta = json.loads(self.fh.read(n))
            lengths = [int(v) for v in self.meta["lengths"]]
        except (ValueError, KeyError, TypeError):
            raise FormatError(f"{path}: damaged header") from None
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64) + len(MAGIC) + 8 + n
        if os.path.getsize(path) != self.offsets[-1]:
            raise FormatError(f"{path}: {os.path.getsize(path)} bytes, the header describes {self.offsets[-1]} "
                              f"(truncated or damaged)")
        self.scratch = _Scratch()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int):
        self.fh.seek(int(self.offsets[i]))
        data = self.fh.read(int(self.offsets[i + 1] - self.offsets[i]))
        try:
            return self.scratch.load(self.engine.sc, data)
        except Exception as e:  # SEAL: wrong parameters or damaged data
            raise FormatError(f"{self.path}: ciphertext {i} does not load under this context "
                              f"({type(e).__name__}: {e})") from None

    def close(self) -> None:
        self.fh.close()
        self.scratch.close()
