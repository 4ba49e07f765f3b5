"""The client/server split as ``pnn-he`` subcommands working on files
(pnn_ext.he.protocol describes the files)::

    pnn-he fold CHECKPOINT --out model.npz [--inputs-out x.npy --samples K]   # model owner
    pnn-he keygen model.npz --out-dir keys                                    # client
    pnn-he encrypt --context keys/secret.ctx --inputs x.npy --out x.ct        # client
    pnn-he infer --context keys/public.ctx --model model.npz --in x.ct --out logits.ct   # server
    pnn-he decrypt --context keys/secret.ctx --in logits.ct --out logits.npy # client
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from .cli import Parser, UsageError, add_param_flags, check_writable, choose_params, load_folded, parse_params


def _parser() -> Parser:
    p = Parser(prog="pnn-he", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    f = sub.add_parser("fold", help="fold a checkpoint into the HE model file the server runs")
    f.add_argument("checkpoint")
    f.add_argument("--out", required=True, help="the folded model (.npz)")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--inputs-out", default=None, help="also write the run's first --samples test inputs (.npy)")
    f.add_argument("--samples", type=int, default=None, help="test inputs to write (default: all)")
    k = sub.add_parser("keygen", help="client: CKKS keys for a folded model")
    k.add_argument("model", help="the folded model (.npz from pnn-he fold)")
    k.add_argument("--out-dir", required=True, help="writes secret.ctx (keep), public.ctx (for the server), "
                                                    "params.json")
    add_param_flags(k)
    e = sub.add_parser("encrypt", help="client: encrypt a batch of inputs, one ciphertext per feature")
    e.add_argument("--context", required=True, help="secret.ctx")
    e.add_argument("--inputs", required=True, help=".npy of shape (n, ...) with n <= N/2, preprocessed as in training")
    e.add_argument("--out", required=True)
    i = sub.add_parser("infer", help="server: encrypted logits of an encrypted batch")
    i.add_argument("--context", required=True, help="public.ctx")
    i.add_argument("--model", required=True, help="the folded model (.npz)")
    i.add_argument("--in", dest="inp", required=True)
    i.add_argument("--out", required=True)
    d = sub.add_parser("decrypt", help="client: decrypt logits")
    d.add_argument("--context", required=True, help="secret.ctx")
    d.add_argument("--in", dest="inp", required=True)
    d.add_argument("--out", required=True, help="logits (.npy, n x classes)")
    return p


def _load_model(path: str):
    from .fold import HEModel
    try:
        return HEModel.load(path)
    except FileNotFoundError:
        raise UsageError(f"model {path} does not exist") from None
    except Exception as e:   # not an npz, or not HEModel.export's
        raise UsageError(f"{path} is not a folded model from pnn-he fold ({type(e).__name__})") from None


def _engine(path: str, secret: bool):
    from .engine import Engine
    from .protocol import load_context
    ctx = load_context(path)
    if secret and not ctx.has_secret_key():
        raise UsageError(f"{path} holds no secret key: the client's secret.ctx is needed")
    return ctx, Engine(ctx)


def fold_cmd(a) -> dict:
    check_writable(a.out, "--out")
    check_writable(a.inputs_out, "--inputs-out")
    if a.samples is not None and a.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {a.samples}")
    _, data, he = load_folded(a.checkpoint, a.data_dir)
    he.export(a.out)
    r = {"model": a.out, "model_bytes": os.path.getsize(a.out), "layers": he.summary()}
    if a.inputs_out:
        x = data.test.tensors[0].numpy()[: a.samples]
        np.save(a.inputs_out, x.astype(np.float64))
        r["inputs"], r["samples"] = a.inputs_out, len(x)
    return r


def keygen_cmd(a) -> dict:
    from .params import depth
    from .protocol import context_bytes, make_context
    he = _load_model(a.model)
    params = choose_params(he, *parse_params(a), packing="batch")
    os.makedirs(a.out_dir, exist_ok=True)
    check_writable(os.path.join(a.out_dir, "public.ctx"), "--out-dir")
    t0 = time.perf_counter()
    ctx = make_context(params)
    secs = time.perf_counter() - t0
    sizes = {}
    for name, secret in (("secret.ctx", True), ("public.ctx", False)):
        data = context_bytes(ctx, secret)
        with open(os.path.join(a.out_dir, name), "wb") as fh:
            fh.write(data)
        sizes[name] = len(data)
    r = {"params": str(params), "poly_modulus_degree": params.poly_modulus_degree,
         "coeff_mod_bit_sizes": params.coeff_mod_bit_sizes, "scale_bits": params.scale_bits, "depth": depth(he),
         "batch_slots": params.poly_modulus_degree // 2, "keygen_s": secs, "bytes": sizes}
    with open(os.path.join(a.out_dir, "params.json"), "w") as fh:
        json.dump(r, fh, indent=2, allow_nan=False)
    return r


def encrypt_cmd(a) -> dict:
    from .protocol import CiphertextWriter
    check_writable(a.out, "--out")
    ctx, e = _engine(a.context, secret=True)
    try:
        x = np.load(a.inputs, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"inputs {a.inputs} do not exist") from None
    except ValueError as err:
        raise UsageError(f"inputs {a.inputs}: not a .npy array ({err})") from None
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise UsageError(f"inputs {a.inputs}: need a real array of shape (samples, features...), got {x.dtype} "
                         f"{x.shape}")
    if not 1 <= len(x) <= e.slots:
        raise UsageError(f"inputs {a.inputs}: {len(x)} samples; a batch holds 1..{e.slots} (N/2)")
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise UsageError(f"inputs {a.inputs}: non-finite values")
    w = CiphertextWriter(a.out, {"kind": "inputs", "samples": len(x), "features": x.shape[1]})
    t0 = time.perf_counter()
    for i in range(x.shape[1]):
        w.add(e.encrypt_seeded(x[:, i], ctx.secret_key().data))
    size = w.close()
    return {"samples": len(x), "features": x.shape[1], "bytes": size, "seconds": time.perf_counter() - t0}


def infer_cmd(a) -> dict:
    from .batch import BatchRunner, peak_rss_bytes, peak_rss_reset
    from .params import HEParameterError, depth
    from .protocol import CiphertextReader, CiphertextWriter
    check_writable(a.out, "--out")
    ctx, e = _engine(a.context, secret=False)
    if ctx.has_secret_key():
        print("pnn-he: warning: this context holds the secret key; give the server public.ctx", file=sys.stderr)
    he = _load_model(a.model)
    if depth(he) > e.levels:
        raise HEParameterError(f"the model needs {depth(he)} levels, the context's chain has {e.levels}")
    reader = CiphertextReader(a.inp, e)
    try:
        meta = reader.meta
        features = int(np.prod(he.in_shape))
        if meta.get("kind") != "inputs" or len(reader) != features:
            raise UsageError(f"{a.inp}: {len(reader)} {meta.get('kind')} ciphertexts; the model takes {features} "
                             f"input features")
        peak_rss_reset()
        t0 = time.perf_counter()
        out = BatchRunner(he, e).run(reader.__getitem__)
        secs = time.perf_counter() - t0
    finally:
        reader.close()
    w = CiphertextWriter(a.out, {"kind": "logits", "samples": meta["samples"], "classes": len(out)})
    for ct in out:
        w.add(ct)
    size = w.close()
    return {"samples": meta["samples"], "classes": len(out), "seconds": secs, "bytes": size,
            "peak_rss_bytes": peak_rss_bytes(), "operations": dict(e.counts)}


def decrypt_cmd(a) -> dict:
    from .protocol import CiphertextReader
    check_writable(a.out, "--out")
    _, e = _engine(a.context, secret=True)
    reader = CiphertextReader(a.inp, e)
    try:
        if reader.meta.get("kind") != "logits":
            raise UsageError(f"{a.inp} holds {reader.meta.get('kind')}, not logits")
        n = int(reader.meta["samples"])
        logits = np.stack([np.asarray(e.decrypt(reader[k], n)) for k in range(len(reader))], axis=1)
    finally:
        reader.close()
    np.save(a.out, logits)
    return {"samples": n, "classes": logits.shape[1], "out": a.out}


COMMANDS = {"fold": fold_cmd, "keygen": keygen_cmd, "encrypt": encrypt_cmd, "infer": infer_cmd,
            "decrypt": decrypt_cmd}


def run_subcommand(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    r = COMMANDS[a.command](a)
    print(json.dumps(r, allow_nan=False))
    return 0
