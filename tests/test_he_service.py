"""pnn-he serve and pnn_ext.he.Client, end to end on localhost: one real server process
(two workers, a bearer token, small limits) for the whole module, driven by the real
client. The digits test set round-trips with 100 % argmax agreement; every hostile case
(malformed, truncated or damaged ciphertexts, a context with other parameters, another
key or the secret key, oversized bodies, unknown and expired sessions, a wrong model id,
a missing token, too many sessions, concurrent clients, clients that disconnect
mid-request) is a 4xx with a one-line JSON error; and at the end the same server process
still serves the first session, no temporary file is left, and it stops cleanly.

The multi-machine path, locally: a second server process (a replica, as on another
machine behind a load balancer) shares the first one's session directory and serves its
sessions."""
import os
import signal
import struct
import threading
import time

import numpy as np
import pytest

from testing import ROOT

pytest.importorskip("tenseal")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

TOKEN = "test-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from pnn_ext.he import HEModel
    from pnn_ext.he.cli import main
    from pnn_ext.he.server import local_server
    from pnn_ext.train import TrainConfig, train
    tmp = tmp_path_factory.mktemp("he_service")
    train(TrainConfig(dataset="digits", model="mlp", hidden="8", degree=2, epochs=2, batch_size=64,
                      progress=False, plots=False, out_dir=str(tmp / "run")))
    assert main(["fold", str(tmp / "run" / "best.pt"), "--out", str(tmp / "m.npz"),
                 "--inputs-out", str(tmp / "x.npy")]) == 0
    other = HEModel.load(str(tmp / "m.npz"))              # the same weights, another certificate: another id
    other.certificate = {**other.certificate, "data": "something else"}
    other.export(str(tmp / "other.npz"))
    (tmp / "t").mkdir()                                    # the server's TMPDIR: must be empty at the end
    (tmp / "sessions").mkdir()
    flags = ("--workers", "2", "--max-request-mib", "48", "--max-context-mib", "24", "--max-sessions", "6",
             "--session-dir", str(tmp / "sessions"))
    env = {"TMPDIR": str(tmp / "t"), "PNN_HE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    with open(tmp / "server.log", "w") as log, local_server(str(tmp / "m.npz"), *flags, env=env, log=log) as (url, p):
        yield {"url": url, "proc": p, "tmp": tmp, "x": np.load(tmp / "x.npy"), "flags": flags, "env": env,
               "model": HEModel.load(str(tmp / "m.npz")), "other": str(tmp / "other.npz")}
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 143, open(tmp / "server.log").read()[-2000:]     # pnn-he's exit code for SIGTERM
    assert os.listdir(tmp / "t") == [], "temporary files left by the server"


@pytest.fixture(scope="module")
def first(served):
    """The first client and its session: must keep working through every hostile case."""
    from pnn_ext.he import Client
    c = Client(served["url"], token=TOKEN)
    c.open()
    yield c
    c.close()


def refused(status, fn, *args, pattern="", **kw):
    """``fn`` raises ServiceError ``status`` whose message is one line matching ``pattern``."""
    from pnn_ext.he import ServiceError
    with pytest.raises(ServiceError) as e:
        fn(*args, **kw)
    assert e.value.status == status, e.value.message
    assert "\n" not in e.value.message and pattern.lower() in e.value.message.lower(), e.value.message
    return e.value.message


def test_digits_test_set_end_to_end(served, first):
    x, model = served["x"], served["model"]
    logits = first.predict(x)
    plain = model(x)
    assert len(x) == 450 and logits.shape == plain.shape
    assert (logits.argmax(1) == plain.argmax(1)).all()
    assert np.abs(logits - plain).max() < 1e-3


def test_client_command(served, tmp_path, monkeypatch, capsys):
    import json

    from pnn_ext.he.cli import main
    np.save(tmp_path / "x.npy", served["x"][:7])
    monkeypatch.setenv("PNN_HE_TOKEN", TOKEN)
    assert main(["client", "predict", served["url"], "--inputs", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "l.npy"), "--keys-dir", str(tmp_path / "keys")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 7 and sorted(os.listdir(tmp_path / "keys")) == ["public.ctx", "secret.ctx"]
    assert (np.load(tmp_path / "l.npy").argmax(1) == served["model"](served["x"][:7]).argmax(1)).all()
    assert main(["client", "info", served["url"], "--token", "wrong"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pnn-he: error: ") and "bearer token" in err, err


def test_the_server_reports_the_certificate(served, first):
    cert = first._call("GET", "/v1/certificate").json()
    assert cert["certificate"] == served["model"].certificate and cert["certificate"]["inside"]
    assert [a["layer"] for a in cert["certificate"]["activations"]] == [1]
    assert "inside [-B, B]" in cert["summary"]


def test_the_server_holds_no_secret_key(served, first):
    from pnn_ext.he.engine import Engine
    from pnn_ext.he.keys import Keys
    stored = served["tmp"] / "sessions" / f"{first.session}.ctx"
    keys = Keys(str(stored), need_secret=False)
    assert not keys.secret and keys.fingerprint == first.keys.fingerprint
    ct = first.engine.encrypt([1.0, 2.0])
    with pytest.raises(ValueError, match="no secret key"):
        Engine(keys.ctx).decrypt(ct, 2)
    with pytest.raises(ValueError):
        keys.ctx.secret_key()


def test_token_is_required(served):
    from pnn_ext.he import Client
    refused(401, Client, served["url"], token="wrong", pattern="bearer token")
    assert httpx.get(served["url"] + "/v1/health").json()["status"] == "ok"      # liveness needs none
    r = httpx.get(served["url"] + "/v1/model")
    assert r.status_code == 401 and list(r.json()) == ["error"]


def request_file(client, x, path):
    client._encrypt_to(str(path), np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    return open(path, "rb").read()


def reencode(blob, edit_header=None, edit_body=None):
    """A message with its header or body edited and its digest recomputed (what a forger does)."""
    import json

    from pnn_ext.he.sealed_file import MAGIC, encode
    (n,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    header = json.loads(blob[len(MAGIC) + 8:len(MAGIC) + 8 + n])
    body = blob[len(MAGIC) + 8 + n:-32]
    return encode(edit_header(header) if edit_header else header, edit_body(body) if edit_body else body)


def test_malformed_truncated_and_damaged_ciphertexts(served, first, tmp_path):
    good = request_file(first, served["x"][:3], tmp_path / "r.ct")
    refused(400, first._send, b"not a ciphertext at all", pattern="not a pnn-he ciphertext")
    refused(400, first._send, good[: len(good) // 2], pattern="damaged")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    refused(400, first._send, bytes(flipped), pattern="damaged")
    refused(400, first._send, b"", pattern="empty")
    garbage = reencode(good, edit_body=lambda b: b[:100] + bytes(200) + b[300:])     # digest fine, SEAL data not
    refused(400, first._send, garbage, pattern="does not load")
    fewer = reencode(good, edit_header=lambda h: {**h, "lengths": h["lengths"][:-2] + [h["lengths"][-2] +
                                                                                       h["lengths"][-1]]})
    refused(400, first._send, fewer, pattern="input ciphertexts")
    negative = reencode(good, edit_header=lambda h: {**h, "lengths": [-5, *h["lengths"][1:-1],
                                                                      h["lengths"][-1] + h["lengths"][0] + 5]})
    refused(400, first._send, negative, pattern="does not describe the body")


def test_other_key_other_parameters_secret_key_and_wrong_model(served, first, tmp_path):
    from pnn_ext.he import Client
    from pnn_ext.he.keys import key_header, key_message, make_context
    from pnn_ext.he.params import CKKSParams
    second = Client(served["url"], token=TOKEN)
    refused(400, first._send, request_file(second, served["x"][:3], tmp_path / "b.ct"), pattern="made under key")
    info = first.info

    def upload(ctx, params, model_id=info["model_id"], secret=False):
        header = key_header(ctx, params, model_id, info["in_features"], info["input_range"])
        return first._call("POST", "/v1/sessions", content=key_message(ctx, header, secret))
    small = CKKSParams(8192, [60, 40, 60], 40)
    refused(400, upload, make_context(small), small, pattern="other parameters")
    params = CKKSParams(**info["params"])
    ctx = make_context(params)
    refused(400, upload, ctx, params, secret=True, pattern="holds the secret key")
    refused(400, upload, ctx, params, model_id="0" * 64, pattern="was made for model")
    renamed = reencode(request_file(first, served["x"][:3], tmp_path / "m.ct"),
                       edit_header=lambda h: {**h, "model_id": "1" * 64})
    refused(400, first._send, renamed, pattern="made for model")
    refused(400, first._call, "POST", "/v1/sessions", content=b"\0" * 1000, pattern="not a pnn-he key file")
    second.close()


def test_oversized_bodies(served, first):
    refused(413, first._send, bytes(49 << 20), pattern="over this server's limit")
    refused(413, first._call, "POST", "/v1/sessions", content=(bytes(1 << 20) for _ in range(30)),
            pattern="over this server's limit")                    # streamed (chunked): counted as it arrives


def test_unknown_expired_and_too_many_sessions(served, first):
    from pnn_ext.he import Client
    refused(404, first._call, "POST", "/v1/sessions/" + "A" * 32 + "/predict", content=b"x", pattern="unknown")
    refused(404, first._call, "DELETE", "/v1/sessions/nope", pattern="not a session id")
    refused(400, first._call, "POST", "/v1/sessions", params={"ttl": "soon"}, content=b"x", pattern="ttl")
    c = Client(served["url"], token=TOKEN)
    c.open(ttl=1)
    time.sleep(1.5)
    refused(410, c.predict, served["x"][:2], pattern="expired")
    refused(404, c.predict, served["x"][:2], pattern="unknown")
    held = []                                       # the first session is live: 5 more reach the maximum
    try:
        for _ in range(5):
            held.append(c.open())
        refused(429, c.open, pattern="maximum of 6 sessions")
    finally:
        for sid in held:
            c._call("DELETE", f"/v1/sessions/{sid}")
        c.session = None
        c.close()
    assert len(held) == 5


def test_concurrent_clients_use_both_workers(served):
    from pnn_ext.he import Client
    x, model = served["x"][:50], served["model"]
    clients = [Client(served["url"], token=TOKEN) for _ in range(2)]
    workers, results = [], [None, None]

    def run(k):
        c = clients[k]
        c.open()
        orig = c._call

        def call(*a, **kw):
            r = orig(*a, **kw)
            workers.append(r.headers.get("x-pnn-worker"))
            return r
        c._call = call
        results[k] = c.predict(x)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for c in clients:
        c.close()
    for r in results:
        assert r is not None and (r.argmax(1) == model(x).argmax(1)).all()
    assert len(set(workers) - {None}) == 2, workers          # evaluated at the same time, by two processes


def test_clients_that_disconnect_mid_request(served, first, tmp_path):
    from pnn_ext.he import ServiceError
    good = request_file(first, served["x"][:3], tmp_path / "r.ct")

    def half_then_gone():
        yield good[: len(good) // 2]
        raise ConnectionAbortedError("the client gave up")
    with pytest.raises(ConnectionAbortedError):
        first.http.post(f"/v1/sessions/{first.session}/predict", content=half_then_gone())
    with pytest.raises(ServiceError) as e:            # gone while its batch is evaluated
        first._send(good, timeout=0.2)
    assert e.value.status == 503 and "Timeout" in e.value.message
    spool = [d for d in os.listdir(served["tmp"] / "t") if d.startswith("pnn-he-spool-")]
    deadline = time.monotonic() + 60
    while os.listdir(served["tmp"] / "t" / spool[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.listdir(served["tmp"] / "t" / spool[0]) == []


def test_a_replica_serves_the_sessions_of_the_shared_directory(served, first):
    from pnn_ext.he import Client
    from pnn_ext.he.server import local_server
    flags = [f for f in served["flags"]]
    flags[flags.index("--workers") + 1] = "1"
    x, model = served["x"][:30], served["model"]
    with local_server(str(served["tmp"] / "m.npz"), *flags, env=served["env"]) as (replica, _):
        on_b = Client(replica, token=TOKEN)
        on_b.keys, on_b.engine = first.keys, first.engine
        kept = first.session
        sid = first.open()                             # opened on the first server ...
        on_b.session = sid                             # ... sent to the replica by the balancer
        assert (on_b.predict(x).argmax(1) == model(x).argmax(1)).all()
        on_b.close()                                   # closed through the replica ...
        refused(404, first.predict, x, pattern="unknown")      # ... gone on the first server
        first.session = kept


def test_the_server_survived_everything(served, first):
    assert served["proc"].poll() is None
    health = httpx.get(served["url"] + "/v1/health").json()
    assert health["status"] == "ok" and health["workers"] == 2
    x = served["x"][:20]
    assert (first.predict(x).argmax(1) == served["model"](x).argmax(1)).all()       # the first session still works
    for d in os.listdir(served["tmp"] / "t"):
        assert d.startswith(("pnn-he-spool-", "pymp-")), d       # pymp-: the forkserver's socket
        if d.startswith("pnn-he-spool-"):
            assert os.listdir(served["tmp"] / "t" / d) == []

