"""The one format of pnn-he's binary files (keys, ciphertexts)::

    MAGIC | header length (8 bytes, little-endian) | header (JSON) | body | SHA-256 (32 bytes)

The header says what the file holds and what it belongs to (its ``kind``, the key
fingerprint, the CKKS parameters, the model id); the digest covers every byte before
it, header included, so a flipped bit, a truncation or an edited header field is
refused on every read, before the body is used. The digest detects damage and edits,
not a forger: whoever edits a file can recompute it (docs/he.md says what that means).
Files are written to a temporary file beside the target and renamed into place, so a
failed write never leaves half a file under the target's name."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from typing import BinaryIO

from ..atomic_file import atomic_write
from ..strict_json import dumps

MAGIC = b"PNNHE-2\n"
DIGEST_BYTES = 32
CHUNK = 1 << 24


class FormatError(ValueError):
    """A file that is not what the command expects, or not intact (named in the message)."""


def _lead(header: dict) -> bytes:
    head = dumps(header).encode()
    return MAGIC + struct.pack("<Q", len(head)) + head


def encode(header: dict, body: bytes) -> bytes:
    """The bytes of a file holding ``header`` and ``body`` (what :func:`write` writes), for a
    network message instead of a file."""
    data = _lead(header) + body
    return data + hashlib.sha256(data).digest()


def write(path: str, header: dict, body: BinaryIO | bytes) -> int:
    """Write ``header`` and ``body`` (bytes, or a file read from its start) to ``path`` atomically;
    returns the file's size."""
    h = hashlib.sha256()
    with atomic_write(path, prefix=".pnn-he-", suffix=".part") as fh:
        def put(data: bytes) -> None:
            h.update(data)
            fh.write(data)
        put(_lead(header))
        if isinstance(body, bytes):
            put(body)
        else:
            body.seek(0)
            while chunk := body.read(CHUNK):
                put(chunk)
        fh.write(h.digest())
    return os.path.getsize(path)


class SealedFile:
    """An intact pnn-he file of one of ``kinds`` (checked on opening: magic, digest, header, kind);
    ``header`` and the body, read whole or in pieces. ``source``: a path, or the bytes of a
    network message (named ``label`` in errors)."""

    def __init__(self, source: str | bytes, kinds: tuple[str, ...], what: str, label: str | None = None):
        self.path = label or (source if isinstance(source, str) else f"the {what}")
        if isinstance(source, bytes):
            self.fh = io.BytesIO(source)
        else:
            try:
                self.fh = open(source, "rb")
            except OSError as e:
                raise FormatError(f"cannot read {what} {source}: {e.strerror}") from None
        try:
            self._open(kinds, what)
        except BaseException:
            self.fh.close()
            raise

    def _open(self, kinds: tuple[str, ...], what: str) -> None:
        path, fh = self.path, self.fh
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        lead = fh.read(len(MAGIC) + 8)
        if not lead.startswith(MAGIC) or len(lead) < len(MAGIC) + 8:
            raise FormatError(f"{path} is not a pnn-he {what} file (or one from an older version)")
        (n,) = struct.unpack("<Q", lead[len(MAGIC):])
        self.body_start = len(lead) + n
        self.body_end = size - DIGEST_BYTES
        h = hashlib.sha256(lead)
        fh.seek(len(lead))
        left = max(self.body_end - len(lead), 0)
        while left > 0 and (chunk := fh.read(min(CHUNK, left))):
            h.update(chunk)
            left -= len(chunk)
        if self.body_end < self.body_start or h.digest() != fh.read(DIGEST_BYTES):
            raise FormatError(f"{path} is damaged or was edited: its SHA-256 digest does not match its content")
        fh.seek(len(lead))
        try:
            self.header = json.loads(fh.read(n))
            kind = self.header["kind"]
        except (ValueError, KeyError, TypeError):
            raise FormatError(f"{path}: unreadable header") from None
        if kind not in kinds:
            raise FormatError(f"{path} holds {kind}, not {' or '.join(kinds)}")

    @property
    def body_size(self) -> int:
        return self.body_end - self.body_start

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes of the body from ``offset``."""
        self.fh.seek(self.body_start + offset)
        return self.fh.read(n)

    def body(self) -> bytes:
        return self.read(0, self.body_size)

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
