"""``pnn-he serve | client | certify``: the inference service (pnn_ext.he.server, client)
and the range certificate (pnn_ext.he.certificate) on the command line::

    pnn-he certify runs/x/best.pt --data test [--out model.npz]         # model owner
    pnn-he serve model.npz --host 127.0.0.1 --port 8000 [--workers N]   # server
    pnn-he client info http://127.0.0.1:8000                             # anyone with the token
    pnn-he client predict http://127.0.0.1:8000 --inputs x.npy --out logits.npy [--keys-dir keys]

``serve`` refuses a model without a range certificate, or whose certificate shows an
activation input outside [-B, B], unless ``--allow-out-of-range``."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..strict_json import dumps
from .cli_args import Parser, UsageError, check_output, save_npy

SERVICE_COMMANDS = ("serve", "client", "certify")
TOKEN_HELP = "bearer token (default: the PNN_HE_TOKEN environment variable)"


def _parser() -> Parser:
    from .server import ServeConfig
    d = ServeConfig("")
    p = Parser(prog="pnn-he", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("serve", help="serve a folded model: encrypted batches in, encrypted logits out")
    s.add_argument("model", help="the folded model (.npz from pnn-he fold or certify)")
    s.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s, this machine only)")
    s.add_argument("--port", type=int, default=d.port, help="port (default: %(default)s; 0: any free port)")
    s.add_argument("--workers", type=int, default=d.workers,
                   help="worker processes evaluating batches (default: every core this process may use)")
    s.add_argument("--session-dir", default=None,
                   help="where sessions are stored; share it between replicas (default: a private directory, "
                        "removed at exit)")
    s.add_argument("--session-ttl", type=float, default=d.session_ttl,
                   help="seconds a session lives unused (default: %(default)g; a client may ask for less)")
    s.add_argument("--max-sessions", type=int, default=d.max_sessions, help="live sessions at once (default: "
                                                                            "%(default)s)")
    s.add_argument("--max-context-mib", type=float, default=d.max_context_bytes / 2**20,
                   help="largest public context accepted, MiB (default: %(default)g)")
    s.add_argument("--max-request-mib", type=float, default=d.max_request_bytes / 2**20,
                   help="largest encrypted batch accepted, MiB (default: %(default)g)")
    s.add_argument("--cache", type=int, default=d.cache,
                   help="session contexts each worker keeps loaded (default: %(default)s)")
    s.add_argument("--max-pending", type=int, default=d.max_pending,
                   help="batches received or evaluating at once; more wait (default: 2 x workers)")
    s.add_argument("--token", default=None, help=TOKEN_HELP)
    s.add_argument("--allow-out-of-range", action="store_true",
                   help="serve a model whose range certificate is missing or shows inputs outside [-B, B]")
    c = sub.add_parser("client", help="use a pnn-he server")
    c.add_argument("action", choices=("info", "predict"), help="info: the model and its certificate; predict: "
                                                               "encrypted logits of --inputs, decrypted here")
    c.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    c.add_argument("--token", default=None, help=TOKEN_HELP)
    c.add_argument("--inputs", default=None, help="predict: .npy of shape (samples, ...), preprocessed as in "
                                                  "training")
    c.add_argument("--out", default=None, help="predict: the logits (.npy)")
    c.add_argument("--keys-dir", default=None,
                   help="predict: reuse the keys there (secret.ctx), or write new ones there (default: new keys, "
                        "kept in memory only)")
    c.add_argument("--batch-size", type=int, default=None, help="predict: samples per batch (default and most: "
                                                                "N/2)")
    c.add_argument("--allow-out-of-range", action="store_true",
                   help="predict: send inputs outside the model's input range (with a warning)")
    f = sub.add_parser("certify", help="range certificate: how close each activation input comes to +-B")
    f.add_argument("run", help="a pnn-train checkpoint or run directory, or a folded model (.npz)")
    f.add_argument("--data", action="append", required=True,
                   help="train, test (the run's data sets) or an .npy of inputs; repeat to combine")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--out", default=None, help="write the folded model carrying this certificate (.npz)")
    return p


def serve_cmd(a) -> dict:
    from .certificate import describe
    from .model import HEModel
    from .server import MIB, ServeConfig, serve
    for flag, value, low in (("--workers", a.workers, 0), ("--max-sessions", a.max_sessions, 1),
                             ("--cache", a.cache, 1), ("--max-pending", a.max_pending, 0), ("--port", a.port, 0)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    for flag, value in (("--session-ttl", a.session_ttl), ("--max-context-mib", a.max_context_mib),
                        ("--max-request-mib", a.max_request_mib)):
        if not value > 0:
            raise UsageError(f"{flag} must be > 0, got {value}")
    if a.session_dir and not os.path.isdir(a.session_dir):
        raise UsageError(f"--session-dir {a.session_dir} is not a directory")
    model = HEModel.load(a.model)
    cert = model.certificate
    if cert is None or not cert["inside"]:
        if not a.allow_out_of_range:
            raise UsageError(f"{a.model}: {describe(cert)}: encrypted predictions would be wrong without an error "
                             f"for inputs like those; certify it on other data (pnn-he certify), or pass "
                             f"--allow-out-of-range to serve it anyway")
        print(f"pnn-he: warning: {a.model}: {describe(cert)}; served because of --allow-out-of-range",
              file=sys.stderr)
    cfg = ServeConfig(a.model, a.host, a.port, a.workers, a.session_dir, a.session_ttl, a.max_sessions,
                      int(a.max_context_mib * MIB), int(a.max_request_mib * MIB), a.cache, a.max_pending,
                      a.token if a.token is not None else os.environ.get("PNN_HE_TOKEN") or None)
    return {"served": a.model, "started": serve(cfg, model)}


def client_cmd(a) -> dict:
    from .client import Client
    if a.action == "info":
        if a.inputs or a.out or a.keys_dir:
            raise UsageError("--inputs, --out and --keys-dir apply to client predict")
        with Client(a.url, a.token) as c:
            return c.info
    if not a.inputs or not a.out:
        raise UsageError("client predict needs --inputs and --out")
    check_output(a.out, "--out", (a.inputs,), suffix=".npy")
    try:
        x = np.load(a.inputs, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--inputs {a.inputs}: not a readable .npy array ({e})") from None
    t0 = time.perf_counter()
    with Client(a.url, a.token, a.keys_dir) as c:
        logits = c.predict(x, a.allow_out_of_range, a.batch_size)
        session = c.session
    save_npy(a.out, logits)
    return {"samples": len(logits), "classes": logits.shape[1], "out": a.out, "seconds": time.perf_counter() - t0,
            "session": session, "model_id": c.info["model_id"]}


def certify_cmd(a) -> dict:
    from .certificate import certify, describe
    from .cli_args import load_folded
    from .model import HEModel
    check_output(a.out, "--out", (a.run,), suffix=".npz")
    named = [d for d in a.data if d in ("train", "test")]
    if a.run.endswith(".npz"):
        if named:
            raise UsageError(f"--data {named[0]} needs a pnn-train run; a folded model takes .npy inputs")
        he, data = HEModel.load(a.run), None
    else:
        _, data, he = load_folded(a.run, a.data_dir)
    parts, names = [], []
    for d in a.data:
        if d in ("train", "test"):
            parts.append((data.train if d == "train" else data.test).tensors[0].numpy())
        else:
            try:
                parts.append(np.load(d, allow_pickle=False))
            except (OSError, ValueError) as e:
                raise UsageError(f"--data {d}: not train, test or a readable .npy ({e})") from None
        names.append(f"{d} ({len(parts[-1])} samples)")
    try:
        x = np.concatenate([p.reshape(len(p), -1).astype(np.float64) for p in parts])
        he.certificate = certify(he, x, " + ".join(names))
    except ValueError as e:
        raise UsageError(str(e)) from None
    r = {"certificate": he.certificate, "summary": describe(he.certificate)}
    if a.out:
        r["model"], r["model_id"] = a.out, he.export(a.out)
    return r


COMMANDS = {"serve": serve_cmd, "client": client_cmd, "certify": certify_cmd}


def run_service_command(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    r = COMMANDS[a.command](a)
    if a.command == "serve":
        return 0 if r["started"] else 1
    print(dumps(r))
    return 0
