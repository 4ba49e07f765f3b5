"""``pnn-he CHECKPOINT --packing batch``: the whole test set (or --samples) through
batch-packed encrypted inference in one process, with the figures the README's
table reports: agreement, logit error, time and throughput (wall clock and CPU
time: the machine may be shared), peak memory per batch, key and ciphertext sizes."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from .batch import BatchRunner, run_batches
from .engine import Engine
from .params import HEParameterError
from .protocol import _Scratch, context_bytes, make_context


def top2_margin(logits: np.ndarray) -> np.ndarray:
    s = np.sort(logits, axis=1)
    return s[:, -1] - s[:, -2]


def batch_run(he, params, x_all, y_all, folded, samples: int | None, batch_size: int | None, fill: bool,
              progress=None) -> dict:
    t0 = time.perf_counter()
    ctx = make_context(params)
    keygen_s = time.perf_counter() - t0
    engine = Engine(ctx)
    slots = engine.slots
    bs = batch_size or slots
    if bs > slots:
        raise HEParameterError(f"--batch-size {bs}: more than the {slots} slots of N={params.poly_modulus_degree}")
    n = len(x_all) if samples is None else min(samples, len(x_all))
    idx = np.arange(n)
    if fill:
        idx = np.resize(idx, -(-n // bs) * bs)     # repeats the test samples from the start
    x = x_all.numpy().reshape(len(x_all), -1)[idx]
    plain, y = folded[idx], y_all.numpy()[idx]
    runner = BatchRunner(he, engine)
    c0, w0 = time.process_time(), time.perf_counter()
    out = run_batches(runner, x, bs, ctx.secret_key().data, progress)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    logits = out["logits"]
    err = float(np.abs(logits - plain).max())
    wrong = np.flatnonzero(logits.argmax(1) != plain.argmax(1))
    margins = top2_margin(plain)
    disagreements = [{"index": int(idx[i]), "plaintext_margin": float(margins[i])} for i in wrong]

    scratch = _Scratch()
    try:
        ct_bytes = len(scratch.to_bytes(engine.encrypt(x[:bs, 0], ctx.secret_key().data)))
        seeded_bytes = len(scratch.to_bytes(engine.encrypt_seeded(x[:bs, 0], ctx.secret_key().data)))
    finally:
        scratch.close()
    with tempfile.TemporaryDirectory() as d:
        he.export(os.path.join(d, "m.npz"))
        model_bytes = os.path.getsize(os.path.join(d, "m.npz"))
    batches = out["batches"]
    return {
        "samples": n, "predictions": len(idx), "batch_size": bs, "batches": len(batches), "filled": fill,
        "agreement": float(np.mean(logits.argmax(1) == plain.argmax(1))), "max_abs_logit_error": err,
        "encrypted_acc": float(np.mean(logits.argmax(1) == y)),
        "disagreements": disagreements,
        "disagreements_explained": all(d["plaintext_margin"] <= 2 * err for d in disagreements),
        "keygen_s": keygen_s, "wall_s": wall, "cpu_s": cpu,
        "seconds_per_batch": wall / len(batches), "cpu_seconds_per_batch": cpu / len(batches),
        "encrypt_s": sum(b["encrypt_s"] for b in batches), "evaluate_s": sum(b["evaluate_s"] for b in batches),
        "decrypt_s": sum(b["decrypt_s"] for b in batches),
        "seconds_per_sample": wall / len(idx), "predictions_per_hour": 3600 * len(idx) / wall,
        "predictions_per_hour_cpu": 3600 * len(idx) / cpu,
        "peak_rss_gb": max((b["peak_rss_bytes"] or 0) for b in batches) / 2**30, "per_batch": batches,
        "operations": dict(engine.counts), "nonzero_weights": runner.stages.nonzeros(),
        "public_context_bytes": len(context_bytes(ctx, secret=False)),
        "secret_context_bytes": len(context_bytes(ctx, secret=True)),
        "ciphertext_bytes": ct_bytes, "seeded_ciphertext_bytes": seeded_bytes,
        "upload_bytes_per_batch": seeded_bytes * x.shape[1],
        "download_bytes_per_batch": out["logit_ciphertext_bytes"] * he.num_outputs,
        "model_bytes": model_bytes,
    }
