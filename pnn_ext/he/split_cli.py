"""The client/server split as ``pnn-he`` subcommands working on files
(pnn_ext.he.ciphertexts describes them)::

    pnn-he fold CHECKPOINT --out model.npz [--inputs-out x.npy --samples K]   # model owner
    pnn-he keygen model.npz --out-dir keys                                    # client
    pnn-he encrypt --context keys/secret.ctx --inputs x.npy --out x.ct        # client
    pnn-he infer --context keys/public.ctx --model model.npz --in x.ct --out logits.ct   # server
    pnn-he decrypt --context keys/secret.ctx --in logits.ct --out logits.npy # client

Every file is bound to what it belongs to and checked on every read: the model by its
id, keys and ciphertexts by the key fingerprint, parameters and model id in their
headers and by their digest. ``encrypt`` refuses inputs outside the range the model
was folded with unless ``--allow-out-of-range``."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..strict_json import dumps
from .cli_args import (
    Parser,
    UsageError,
    add_param_flags,
    check_output,
    choose_params,
    load_folded,
    parse_params,
    save_npy,
    write_json,
)

SUBCOMMANDS = ("fold", "keygen", "encrypt", "infer", "decrypt")
KEY_FILES = ("secret.ctx", "public.ctx", "params.json")


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
    k.add_argument("--overwrite", action="store_true",
                   help="replace the keys in --out-dir (every ciphertext made with them becomes undecryptable)")
    add_param_flags(k)
    e = sub.add_parser("encrypt", help="client: encrypt a batch of inputs, one ciphertext per feature")
    e.add_argument("--context", required=True, help="secret.ctx")
    e.add_argument("--inputs", required=True, help=".npy of shape (n, ...) with n <= N/2, preprocessed as in training")
    e.add_argument("--out", required=True)
    e.add_argument("--allow-out-of-range", action="store_true",
                   help="encrypt inputs outside the range the model was trained on (with a warning) instead of "
                        "refusing them")
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


def _warn(message: str) -> None:
    print(f"pnn-he: warning: {message}", file=sys.stderr)


def fold_cmd(a) -> dict:
    check_output(a.out, "--out", (a.checkpoint,), suffix=".npz")
    check_output(a.inputs_out, "--inputs-out", (a.checkpoint,), suffix=".npy")
    if a.samples is not None and a.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {a.samples}")
    _, data, he = load_folded(a.checkpoint, a.data_dir)
    model_id = he.export(a.out)
    from .certificate import describe
    r = {"model": a.out, "model_id": model_id, "model_bytes": os.path.getsize(a.out), "layers": he.summary(),
         "input_range": vars(he.input_range), "certificate": he.certificate,
         "certificate_summary": describe(he.certificate)}
    if not he.certificate["inside"]:
        _warn(f"{a.out}: range certificate {describe(he.certificate)}: pnn-he serve refuses it without "
              f"--allow-out-of-range")
    if a.inputs_out:
        x = data.test.tensors[0].numpy()[: a.samples]
        save_npy(a.inputs_out, x.astype(np.float64))
        r["inputs"], r["samples"] = a.inputs_out, len(x)
    return r


def keygen_cmd(a) -> dict:
    from .keys import make_context, write_keys
    from .model import HEModel
    from .params import depth
    he = HEModel.load(a.model)
    params = choose_params(he, *parse_params(a), packing="batch")
    if os.path.exists(a.out_dir) and not os.path.isdir(a.out_dir):
        raise UsageError(f"--out-dir {a.out_dir} exists and is not a directory")
    held = [n for n in KEY_FILES if os.path.exists(os.path.join(a.out_dir, n))]
    if held and not a.overwrite:
        raise UsageError(f"--out-dir {a.out_dir} already holds keys ({', '.join(held)}): new keys would make every "
                         f"ciphertext made with them undecryptable; pass --overwrite to replace them")
    paths = [os.path.join(a.out_dir, n) for n in KEY_FILES]
    os.makedirs(a.out_dir, exist_ok=True)
    for path in paths:
        check_output(path, "--out-dir", (a.model,))
    t0 = time.perf_counter()
    ctx = make_context(params)
    secs = time.perf_counter() - t0
    header = write_keys(ctx, params, he, paths[0], paths[1])
    r = {"params": str(params), "poly_modulus_degree": params.poly_modulus_degree,
         "coeff_mod_bit_sizes": params.coeff_mod_bit_sizes, "scale_bits": params.scale_bits, "depth": depth(he),
         "batch_slots": params.poly_modulus_degree // 2, "keygen_s": secs,
         "key_fingerprint": header["key_fingerprint"], "model_id": header["model_id"],
         "bytes": {n: os.path.getsize(p) for n, p in zip(KEY_FILES[:2], paths)}}
    write_json(paths[2], r)
    return r


def _inputs(path: str, slots: int, features: int) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"inputs {path} do not exist") from None
    except ValueError as err:
        raise UsageError(f"inputs {path}: not a .npy array ({err})") from None
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise UsageError(f"inputs {path}: need a real array of shape (samples, features...), got {x.dtype} "
                         f"{x.shape}")
    if not 1 <= len(x) <= slots:
        raise UsageError(f"inputs {path}: {len(x)} samples; a batch holds 1..{slots} (N/2)")
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] != features:
        raise UsageError(f"inputs {path}: {x.shape[1]} features per sample; the model takes {features}")
    if not np.isfinite(x).all():
        raise UsageError(f"inputs {path}: non-finite values")
    return x


def _check_range(x: np.ndarray, keys, a) -> int:
    """How many samples lie outside the model's input range; refused unless --allow-out-of-range."""
    from .model import InputRange
    r = keys.header.get("input_range")
    if r is None:
        message = (f"the model {keys.model_id[:16]} records no input range (fold it with its training inputs), "
                   f"so inputs {a.inputs} cannot be checked")
        if not a.allow_out_of_range:
            raise UsageError(f"{message}; pass --allow-out-of-range to encrypt them unchecked")
        _warn(message)
        return 0
    rng = InputRange(**r)
    bad = np.flatnonzero(rng.outside(x))
    if len(bad):
        j = int(bad[np.argmax(np.abs(x[bad]).max(axis=1))])     # the sample with the largest |value|
        lo, hi = rng.allowed
        message = (f"inputs {a.inputs}: {len(bad)} of {len(x)} samples have values outside the range the model "
                   f"was trained on ({rng.low:.4g}..{rng.high:.4g}, widened to {lo:.4g}..{hi:.4g}; sample {j} "
                   f"reaches {x[j][np.argmax(np.abs(x[j]))]:.4g}): their encrypted predictions are unreliable; "
                   f"check the preprocessing")
        if not a.allow_out_of_range:
            raise UsageError(f"{message}, or pass --allow-out-of-range")
        _warn(message)
    return len(bad)


def encrypt_cmd(a) -> dict:
    from .ciphertexts import INPUTS, CiphertextWriter
    from .engine import Engine
    from .keys import Keys
    check_output(a.out, "--out", (a.context, a.inputs))
    keys = Keys(a.context, need_secret=True)
    e = Engine(keys.ctx)
    x = _inputs(a.inputs, e.slots, int(keys.header["in_features"]))
    outside = _check_range(x, keys, a)
    w = CiphertextWriter(a.out, {"kind": INPUTS, "samples": len(x), "features": x.shape[1]}, keys)
    t0 = time.perf_counter()
    for i in range(x.shape[1]):
        w.add(e.encrypt_seeded(x[:, i], keys.ctx.secret_key().data))
    size = w.close()
    return {"samples": len(x), "features": x.shape[1], "bytes": size, "seconds": time.perf_counter() - t0,
            "samples_out_of_range": outside, "key_fingerprint": keys.fingerprint, "model_id": keys.model_id}


def infer_cmd(a) -> dict:
    from .batch import BatchRunner
    from .ciphertexts import INPUTS, LOGITS, CiphertextReader, CiphertextWriter
    from .engine import Engine
    from .keys import Keys
    from .memory import peak_rss_bytes, peak_rss_reset
    from .model import HEModel
    from .params import HEParameterError, depth
    from .sealed_file import FormatError
    check_output(a.out, "--out", (a.context, a.model, a.inp))
    keys = Keys(a.context, need_secret=False)
    if keys.secret:
        _warn("this context holds the secret key; give the server public.ctx")
    he = HEModel.load(a.model)
    if keys.model_id != he.model_id:
        raise FormatError(f"{a.context} was made for model {keys.model_id[:16]}, --model {a.model} is model "
                          f"{he.model_id[:16]}: use the keys made for this model")
    e = Engine(keys.ctx)
    if depth(he) > e.levels:
        raise HEParameterError(f"the model needs {depth(he)} levels, the context's chain has {e.levels}")
    reader = CiphertextReader(a.inp, INPUTS, e, keys, he.model_id)
    try:
        if len(reader) != he.in_features:
            raise FormatError(f"{a.inp}: {len(reader)} input ciphertexts; the model takes {he.in_features} features")
        peak_rss_reset()
        t0 = time.perf_counter()
        out = BatchRunner(he, e).run(reader.__getitem__)
        secs = time.perf_counter() - t0
    finally:
        reader.close()
    w = CiphertextWriter(a.out, {"kind": LOGITS, "samples": reader.samples, "classes": len(out)}, keys)
    for ct in out:
        w.add(ct)
    size = w.close()
    return {"samples": reader.samples, "classes": len(out), "seconds": secs, "bytes": size,
            "peak_rss_bytes": peak_rss_bytes(), "operations": dict(e.counts), "model_id": he.model_id}


def decrypt_cmd(a) -> dict:
    from .ciphertexts import LOGITS, CiphertextReader
    from .engine import Engine
    from .keys import Keys
    check_output(a.out, "--out", (a.context, a.inp), suffix=".npy")
    keys = Keys(a.context, need_secret=True)
    e = Engine(keys.ctx)
    reader = CiphertextReader(a.inp, LOGITS, e, keys)
    try:
        n = reader.samples
        logits = np.stack([np.asarray(e.decrypt(reader[k], n)) for k in range(len(reader))], axis=1)
    finally:
        reader.close()
    save_npy(a.out, logits)
    return {"samples": n, "classes": logits.shape[1], "out": a.out, "model_id": reader.meta["model_id"]}


COMMANDS = {"fold": fold_cmd, "keygen": keygen_cmd, "encrypt": encrypt_cmd, "infer": infer_cmd,
            "decrypt": decrypt_cmd}


def run_subcommand(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    print(dumps(COMMANDS[a.command](a)))
    return 0
