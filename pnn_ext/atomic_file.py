"""Files written whole or not at all: the content goes to a temporary file beside the
target, renamed over it once complete, so a crash or an error at any point leaves the
previous file (or none), never half of one. Checkpoints, run artifacts and every file
pnn-he writes go through here, and their commands check an output's directory first
(``directory_problem``)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


def directory_problem(path: str) -> str | None:
    """Why a file cannot be created at ``path`` (its directory is missing or not writable),
    or None; the caller names the flag or argument around it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK):
        return f"directory {directory} is not writable"
    return None


@contextlib.contextmanager
def atomic_write(path: str, *, prefix: str | None = None, suffix: str = ".tmp",
                 durable: bool = False) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as fh: fh.write(...)``: ``fh`` is a binary file beside
    ``path`` (named ``prefix``...``suffix``, default ``.NAME.``...``.tmp``), renamed to
    ``path`` when the block ends and removed if it raises. ``durable``: fsync the file
    and its directory too (the rename survives a power cut)."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}." if prefix is None else prefix
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # a directory that cannot be opened or synced: the file itself is complete
            pass
