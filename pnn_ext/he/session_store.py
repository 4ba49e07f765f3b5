"""The sessions of ``pnn-he serve``, kept in a directory (the store), and the one error
type of the service.

A session is one client's public context (public and relinearisation keys, checked by
a worker before it is stored), uploaded once and named by a random id that the client
then quotes. In the store a session is two files: ``ID.ctx`` (the key file as uploaded)
and ``ID.json`` (its metadata; its modification time is the session's last use). A
session expires ``ttl`` seconds after its last use; expired sessions are removed when
found and by every ``create``. The number of live sessions is capped (``max_sessions``),
so the store holds at most ``max_sessions`` contexts of at most the upload limit each.

Nothing else is kept: any server process (a worker of this machine, or a replica on
another machine sharing the directory) can serve any session, which is what lets
replicas run behind a load balancer without sticky sessions."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time

from ..atomic_file import atomic_write
from ..strict_json import dumps

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32}")
STALE_TEMP_S = 3600       # a temporary file of a store write this old was left by a killed process


class ServiceError(Exception):
    """What ``pnn-he serve`` answered instead of a result: ``status`` (4xx: the request is
    refused; 500: the server failed; 503 from :class:`Client`: the server could not be
    reached) and ``message``, one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status, self.message = status, message

    def __str__(self) -> str:
        return self.message


class SessionStore:
    """Sessions in the directory ``root`` (created if missing): idle ``ttl`` seconds at most
    (a client may ask for less), ``max_sessions`` at once."""

    def __init__(self, root: str, ttl: float, max_sessions: int):
        os.makedirs(root, exist_ok=True)
        self.root, self.ttl, self.max_sessions = root, float(ttl), int(max_sessions)

    def context_path(self, sid: str) -> str:
        return os.path.join(self.root, f"{sid}.ctx")

    def _meta_path(self, sid: str) -> str:
        return os.path.join(self.root, f"{sid}.json")

    def create(self, context_file: str, meta: dict, ttl: float | None = None) -> dict:
        """Store the checked context ``context_file`` (copied) as a new session; its metadata."""
        if ttl is not None and not 0 < ttl <= self.ttl:
            raise ServiceError(400, f"ttl must be in (0, {self.ttl:g}] seconds (the server's --session-ttl), "
                                    f"got {ttl:g}")
        self.sweep()
        live = self.live()
        if live >= self.max_sessions:
            raise ServiceError(429, f"the server holds its maximum of {self.max_sessions} sessions: close one "
                                    f"(DELETE) or retry when one expires")
        sid = secrets.token_urlsafe(24)
        meta = {**meta, "session": sid, "created": time.time(), "ttl": float(ttl or self.ttl)}
        with open(context_file, "rb") as src, atomic_write(self.context_path(sid)) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        with atomic_write(self._meta_path(sid)) as fh:    # written last: a session exists once it has both
            fh.write(dumps(meta).encode())
        return meta

    def lookup(self, sid: str, touch: bool = True) -> dict:
        """The metadata of live session ``sid`` (its last use set to now if ``touch``); 404 when
        unknown, 410 when it has just expired (then removed)."""
        if not SESSION_ID.fullmatch(sid):
            raise ServiceError(404, f"unknown session {sid[:40]!r}: not a session id")
        path = self._meta_path(sid)
        try:
            with open(path) as fh:
                meta = json.load(fh)
            idle = time.time() - os.path.getmtime(path)
        except (OSError, ValueError):
            raise ServiceError(404, f"unknown session {sid}: never opened, closed, or expired and removed") from None
        if idle > meta["ttl"]:
            self.delete(sid)
            raise ServiceError(410, f"session {sid} expired after {meta['ttl']:g} s unused: open a new one")
        if touch:
            try:
                os.utime(path)
            except OSError:    # removed meanwhile (closed by another request): it was live when asked
                pass
        return meta

    def delete(self, sid: str) -> bool:
        """Remove session ``sid``; whether it existed."""
        if not SESSION_ID.fullmatch(sid):
            return False
        existed = False
        for path in (self._meta_path(sid), self.context_path(sid)):     # metadata first: then it is gone
            try:
                os.unlink(path)
                existed = True
            except FileNotFoundError:
                pass
        return existed

    def sessions(self) -> list[str]:
        return [n[:-5] for n in os.listdir(self.root) if n.endswith(".json") and SESSION_ID.fullmatch(n[:-5])]

    def live(self) -> int:
        return len(self.sessions())

    def sweep(self) -> None:
        """Remove expired sessions, contexts whose metadata is gone, and temporary files left by a
        killed process."""
        now = time.time()
        for sid in self.sessions():
            try:
                self.lookup(sid, touch=False)
            except ServiceError:
                pass
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            stem = name[:-4]
            orphan = name.endswith(".ctx") and SESSION_ID.fullmatch(stem) and \
                not os.path.exists(self._meta_path(stem))
            stale = name.startswith(".") and name.endswith(".tmp")
            try:
                if (orphan or stale) and now - os.path.getmtime(path) > STALE_TEMP_S:
                    os.unlink(path)
            except OSError:
                pass
