"""What a worker process of ``pnn-he serve`` does (pnn_ext.he.server runs a pool of them):
check an uploaded public context, and evaluate an encrypted batch.

Each worker loads the model once (``init``) and keeps the contexts of the sessions it
has served, the ``cache`` most recently used, so a session's evaluation keys are read
from the store once per worker, not per request. A worker runs on one thread (TenSEAL's
pool, OpenMP and torch limited to 1), so N workers use N cores and no more.

Every refusal is a ServiceError (status, one line); the request file is the caller's
(removed by it), and nothing is written here but the answer."""
from __future__ import annotations

import math
import os
from collections import OrderedDict

from .session_store import ServiceError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")   # set to 1 for the workers

_state: dict = {}


def init(model_path: str, store_root: str, cache: int) -> None:
    """The pool's initializer: one torch thread (the server set THREAD_VARIABLES to 1 before the
    fork server imported numpy and torch), the model, an empty session cache."""
    import torch
    torch.set_num_threads(1)
    from .batch import BatchRunner
    from .model import HEModel
    _state.update(model=HEModel.load(model_path), store=store_root, cache=cache, sessions=OrderedDict(),
                  runner=BatchRunner)


def ready(_: int = 0) -> int:
    """This worker's pid, once its initializer has run (the pool maps it over range(workers))."""
    return os.getpid()


def _params_of(engine):
    """The CKKS parameters a loaded context really holds (not what its header says)."""
    from .params import CKKSParams
    data = engine.sc.key_context_data()
    sizes = [int(q.bit_count()) for q in data.parms().coeff_modulus()]
    bits = math.log2(engine.scale) if engine.scale > 0 else -1.0
    if bits != int(bits):
        raise ServiceError(400, f"the context's scale {engine.scale:g} is not a power of two")
    return CKKSParams(2 * engine.slots, sizes, int(bits))


def _load(source: str, label: str):
    """(keys, engine) of a public key file, checked against the model: 400 with the reason otherwise."""
    from dataclasses import asdict

    from .engine import Engine
    from .keys import Keys
    from .params import HEParameterError, check
    from .sealed_file import FormatError
    model = _state["model"]
    try:
        keys = Keys(source, need_secret=False, label=label, n_threads=1)
    except FormatError as e:
        raise ServiceError(400, str(e)) from None
    if keys.secret:
        raise ServiceError(400, f"{label} holds the secret key: send the public context (public.ctx); the server "
                                f"must never hold a secret key")
    if keys.model_id != model.model_id:
        raise ServiceError(400, f"{label} was made for model {keys.model_id[:16]}; this server serves model "
                                f"{model.model_id[:16]}")
    if keys.header.get("in_features") != model.in_features:
        raise ServiceError(400, f"{label} names {keys.header.get('in_features')} input features; the model takes "
                                f"{model.in_features}")
    try:
        engine = Engine(keys.ctx)
    except ValueError as e:   # TenSEAL: no relinearisation keys
        raise ServiceError(400, f"{label}: {e}") from None
    params = _params_of(engine)
    if keys.header.get("params") != asdict(params):
        raise ServiceError(400, f"{label}: its header names parameters {keys.header.get('params')}, the keys "
                                f"inside are {params}")
    try:
        check(model, params, "batch")
    except HEParameterError as e:
        raise ServiceError(400, f"{label}: other parameters than this model needs: {e}") from None
    return keys, engine


def check_context(path: str) -> dict:
    """Check an uploaded public context; what the session records of it."""
    keys, engine = _load(path, "the uploaded context")
    return {"key_fingerprint": keys.fingerprint, "model_id": keys.model_id, "params": keys.header["params"],
            "context_bytes": os.path.getsize(path), "slots": engine.slots}


def _session(sid: str):
    """(keys, engine, runner) of session ``sid``, from the cache or loaded from the store once."""
    cache = _state["sessions"]
    if sid in cache:
        cache.move_to_end(sid)
        return cache[sid]
    path = os.path.join(_state["store"], f"{sid}.ctx")
    if not os.path.exists(path):
        raise ServiceError(404, f"unknown session {sid}: closed or expired")
    keys, engine = _load(path, f"session {sid}'s context")
    cache[sid] = (keys, engine, _state["runner"](_state["model"], engine))
    while len(cache) > _state["cache"]:
        cache.popitem(last=False)
    return cache[sid]


def predict(sid: str, path: str) -> tuple[bytes, dict]:
    """The encrypted logits (a ciphertext message) of the encrypted batch in the file ``path``,
    and figures: samples, seconds, this worker's pid."""
    import time

    from .ciphertexts import INPUTS, LOGITS, CiphertextReader, encode_ciphertexts
    from .sealed_file import FormatError
    keys, engine, runner = _session(sid)
    model = _state["model"]
    try:
        reader = CiphertextReader(path, INPUTS, engine, keys, model.model_id, label="the request")
    except FormatError as e:
        raise ServiceError(400, str(e)) from None
    try:
        if len(reader) != model.in_features:
            raise ServiceError(400, f"the request holds {len(reader)} input ciphertexts; the model takes "
                                    f"{model.in_features} features")

        def get(i: int):
            ct = reader[i]
            if ct.size() != 2 or engine.level(ct) != 0 or ct.scale != engine.scale:
                raise ServiceError(400, f"the request's ciphertext {i} is not a fresh encryption under this "
                                        f"session's parameters (size {ct.size()}, level {engine.level(ct)}, "
                                        f"scale 2^{math.log2(ct.scale) if ct.scale > 0 else float('nan'):.4g})")
            return ct
        t0 = time.perf_counter()
        try:
            out = runner.run(get)
        except FormatError as e:      # a ciphertext that does not load under the session's context
            raise ServiceError(400, str(e)) from None
        seconds = time.perf_counter() - t0
    finally:
        reader.close()
    message = encode_ciphertexts({"kind": LOGITS, "samples": reader.samples, "classes": len(out)}, keys, out)
    return message, {"samples": reader.samples, "seconds": seconds, "worker": os.getpid()}
