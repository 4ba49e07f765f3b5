"""TenSEAL and SEAL, imported on first use (an optional dependency), and SEAL objects
to and from bytes."""
from __future__ import annotations

import os
import tempfile
import weakref

INSTALL_HINT = "encrypted inference needs TenSEAL: pip install 'pnn_ext[he]' (or pip install tenseal)"


def tenseal():
    try:
        import tenseal as ts
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ts


def sealapi():
    try:
        import tenseal.sealapi as s
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return s


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Scratch:
    """SEAL's Python binding saves and loads objects by file name only: one scratch file,
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
        """A SEAL ciphertext from ``data`` under the SEAL context ``sc``."""
        with open(self.path, "wb") as fh:
            fh.write(data)
        ct = sealapi().Ciphertext()
        ct.load(sc, self.path)
        return ct

    def close(self):
        self._remove()
