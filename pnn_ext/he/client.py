"""The client of ``pnn-he serve`` (pnn_ext.he.server): keys made and kept here, the public
context uploaded once per session, batches encrypted here, logits decrypted here."""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from .session_store import ServiceError

TOKEN_VARIABLE = "PNN_HE_TOKEN"


class Client:
    """Encrypted inference against a ``pnn-he serve`` server at ``url``.

    On creation the client reads the server's model description (``info``: model id,
    input shape, suggested CKKS parameters, input range, range certificate, limits) and
    makes CKKS keys for it — or loads them from ``keys_dir`` (``secret.ctx``, from an
    earlier client or ``pnn-he keygen``), and writes new ones there if it holds none.
    The secret key never leaves this object. :meth:`open` uploads the public context
    (public and relinearisation keys) once; :meth:`predict` encrypts inputs in batches of
    up to N/2 samples, sends them, and decrypts the logits. ``token`` (default: the
    ``PNN_HE_TOKEN`` variable) is sent as a bearer token. A refusal by the server raises
    :class:`ServiceError` with its status and one-line message::

        with Client("http://127.0.0.1:8000") as c:
            logits = c.predict(x)          # x: (samples, *in_shape), preprocessed as in training
    """

    def __init__(self, url: str, token: str | None = None, keys_dir: str | None = None, timeout: float = 3600.0):
        import httpx
        token = token if token is not None else os.environ.get(TOKEN_VARIABLE)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url, self.session = url.rstrip("/"), None
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        try:
            self.info = self._call("GET", "/v1/model").json()
            self.keys = self._keys(keys_dir)
        except BaseException:
            self.http.close()
            raise
        from .engine import Engine
        self.engine = Engine(self.keys.ctx)

    # ------------------------------------------------------------ transport
    def _call(self, method: str, path: str, **kw):
        import httpx
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ServiceError(503, f"{method} {self.url}{path}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200] or r.reason_phrase
            raise ServiceError(r.status_code, f"{method} {path}: {message}")
        return r

    # ------------------------------------------------------------ keys
    def _keys(self, keys_dir: str | None):
        from .keys import Keys, key_header, key_message, make_context, write_keys
        from .model import InputRange
        from .params import CKKSParams
        info = self.info
        secret_path = os.path.join(keys_dir, "secret.ctx") if keys_dir else None
        if secret_path and os.path.exists(secret_path):
            keys = Keys(secret_path, need_secret=True)
            if keys.model_id != info["model_id"]:
                raise ValueError(f"keys_dir {keys_dir} holds keys for model {keys.model_id[:16]}; the server at "
                                 f"{self.url} serves model {info['model_id'][:16]}")
            return keys
        params = CKKSParams(**info["params"])
        ctx = make_context(params)
        header = key_header(ctx, params, info["model_id"], info["in_features"], info["input_range"])
        if secret_path:
            os.makedirs(keys_dir, exist_ok=True)
            model = _Described(info["model_id"], info["in_features"],
                               None if info["input_range"] is None else InputRange(**info["input_range"]))
            write_keys(ctx, params, model, secret_path, os.path.join(keys_dir, "public.ctx"))
            return Keys(secret_path, need_secret=True)
        return Keys(key_message(ctx, header, secret=True), need_secret=True, label="the client's keys")

    @property
    def slots(self) -> int:
        """Samples per batch (N/2)."""
        return self.engine.slots

    # ------------------------------------------------------------ session
    def open(self, ttl: float | None = None) -> str:
        """Upload the public context (no secret key): a new session, its id. Called by
        :meth:`predict` when no session is open."""
        from .keys import key_message
        header = {k: v for k, v in self.keys.header.items() if k != "kind"}
        r = self._call("POST", "/v1/sessions", params={} if ttl is None else {"ttl": ttl},
                       content=key_message(self.keys.ctx, header, secret=False),
                       headers={"content-type": "application/octet-stream"})
        self.session = r.json()["session"]
        return self.session

    def close(self) -> None:
        """Close the session (if any) and the connection."""
        try:
            if self.session is not None:
                self._call("DELETE", f"/v1/sessions/{self.session}")
        except ServiceError as e:
            if e.status not in (404, 410, 503):     # already gone, or the server is: nothing to close
                raise
        finally:
            self.session = None
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ inference
    def _check_inputs(self, x: np.ndarray, allow_out_of_range: bool) -> np.ndarray:
        from .model import InputRange
        info = self.info
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.size != len(x) * info["in_features"] or not len(x):
            raise ValueError(f"inputs of shape {x.shape}: the model takes (samples, {info['in_features']} "
                             f"values) of shape {tuple(info['in_shape'])}")
        x = x.reshape(len(x), -1)
        if not np.isfinite(x).all():
            raise ValueError("inputs hold non-finite values")
        r = info["input_range"]
        bad = np.flatnonzero(InputRange(**r).outside(x)) if r is not None else np.arange(len(x))
        if len(bad):
            why = ("the model records no input range" if r is None else
                   f"{len(bad)} of {len(x)} samples have values outside the range the model was trained on "
                   f"({r['low']:.4g}..{r['high']:.4g}, widened by 10 %)")
            if not allow_out_of_range:
                raise ValueError(f"{why}: their encrypted predictions would be unreliable (check the "
                                 f"preprocessing), or pass allow_out_of_range=True")
            warnings.warn(why, stacklevel=3)
        return x

    def predict(self, x, allow_out_of_range: bool = False, batch_size: int | None = None) -> np.ndarray:
        """The logits (samples, classes) of inputs ``x`` (samples, *in_shape), preprocessed as in
        training: encrypted here in batches of ``batch_size`` (default and most: N/2) samples,
        evaluated by the server, decrypted here. Inputs outside the model's input range are
        refused (ValueError) unless ``allow_out_of_range``."""
        x = self._check_inputs(x, allow_out_of_range)
        size = batch_size or self.slots
        if not 1 <= size <= self.slots:
            raise ValueError(f"batch_size must be in 1..{self.slots} (N/2), got {batch_size}")
        if self.session is None:
            self.open()
        return np.concatenate([self._batch(x[i:i + size]) for i in range(0, len(x), size)])

    def _batch(self, x: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="pnn-he-client-") as tmp:
            path = os.path.join(tmp, "inputs.ct")
            self._encrypt_to(path, x)
            answer = self._send(path)
        return self._decrypt(answer, len(x))

    def _encrypt_to(self, path: str, x: np.ndarray) -> None:
        """The request: one seeded ciphertext per feature of the batch ``x``, written to ``path``
        (a file, not memory: a CryptoNets batch is 2 GB)."""
        from .ciphertexts import INPUTS, CiphertextWriter
        secret = self.keys.ctx.secret_key().data
        w = CiphertextWriter(path, {"kind": INPUTS, "samples": len(x), "features": x.shape[1]}, self.keys)
        for i in range(x.shape[1]):
            w.add(self.engine.encrypt_seeded(x[:, i], secret))
        w.close()

    def _send(self, request: str | bytes, timeout: float | None = None) -> bytes:
        """The server's answer to a request (a file's path, or bytes) in this session."""
        headers = {"content-type": "application/octet-stream"}
        kw = {} if timeout is None else {"timeout": timeout}
        if isinstance(request, bytes):
            return self._call("POST", f"/v1/sessions/{self.session}/predict", content=request, headers=headers,
                              **kw).content
        with open(request, "rb") as fh:
            return self._call("POST", f"/v1/sessions/{self.session}/predict", content=fh, headers=headers,
                              **kw).content

    def _decrypt(self, answer: bytes, samples: int) -> np.ndarray:
        from .ciphertexts import LOGITS, CiphertextReader
        reader = CiphertextReader(answer, LOGITS, self.engine, self.keys, self.info["model_id"],
                                  label="the server's answer")
        try:
            if reader.samples != samples:
                raise ServiceError(502, f"the server answered {reader.samples} samples for {samples}")
            return np.stack([np.asarray(self.engine.decrypt(reader[k], samples)) for k in range(len(reader))],
                            axis=1)
        finally:
            reader.close()


@dataclass
class _Described:
    """What write_keys needs of a model, from the server's description of it."""
    model_id: str
    in_features: int
    input_range: object
