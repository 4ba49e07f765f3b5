"""``pnn-he CHECKPOINT``: fold a checkpoint and run test samples encrypted in one process
(one context does the client's and the server's part), with the figures docs/encrypted.md's
tables report: agreement with the plaintext folded model, logit error, time and
throughput (wall clock and CPU time: the machine may be shared); with batch packing
also peak memory per batch and key and ciphertext sizes."""
from __future__ import annotations

import copy
import os
import tempfile
import time

import numpy as np
import torch

from .batch import BatchRunner, run_batches
from .cli_args import choose_params, load_folded
from .engine import Engine
from .keys import context_bytes, make_context
from .params import HEParameterError, coefficient_mass, depth, layer_depths
from .per_sample import PerSampleRunner
from .tenseal_io import Scratch


def evaluate(path: str, samples: int | None = None, data_dir: str | None = None, scale_bits: int | None = None,
             poly_modulus_degree: int | None = None, coeff_mod_bit_sizes: list[int] | None = None,
             export: str | None = None, packing: str = "sample", batch_size: int | None = None,
             fill: bool = False, progress=None) -> dict:
    run, data, he = load_folded(path, data_dir)
    model, cfg = run.model, run.config
    params = choose_params(he, scale_bits, poly_modulus_degree, coeff_mod_bit_sizes, packing)
    if export:
        he.export(export)
    x_all, y_all = data.test.tensors
    with torch.no_grad():
        original = model(x_all).double().numpy()                               # as trained: float32
        reference = copy.deepcopy(model).double()(x_all.double()).numpy()     # same model in float64
    folded = he(x_all.numpy())
    report = {
        "checkpoint": path, "model_id": he.model_id, "dataset": cfg.dataset, "model": cfg.model, "hidden": cfg.hidden,
        "degree": cfg.degree if cfg.activation == "poly" else None, "packing": packing,
        "fold_max_abs_diff_float64": float(np.abs(folded - reference).max()),
        "float32_model_vs_folded_max_abs_diff": float(np.abs(original - folded).max()),
        "plaintext_test_acc": float(np.mean(folded.argmax(1) == y_all.numpy())), "test_samples": len(x_all),
        "depth": depth(he), "layer_depths": layer_depths(he), "layers": he.summary(),
        "coefficient_mass_chebyshev": coefficient_mass(he),
        "params": str(params), "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_mod_bit_sizes": params.coeff_mod_bit_sizes, "scale_bits": params.scale_bits,
        "load_before": list(os.getloadavg()),
    }
    if packing == "sample":
        report.update(sample_run(he, params, x_all, y_all, folded, 10 if samples is None else samples))
    else:
        report.update(batch_run(he, params, x_all, y_all, folded, samples, batch_size, fill, progress))
    report["load_after"] = list(os.getloadavg())
    return report


def sample_run(he, params, x_all, y_all, folded, samples: int) -> dict:
    t0 = time.perf_counter()
    runner = PerSampleRunner(he, params)
    setup_s = time.perf_counter() - t0
    n = min(samples, len(x_all))
    xs, ys = x_all[:n].numpy(), y_all[:n].numpy()
    c0 = time.process_time()
    enc, secs = runner.run(xs)
    cpu = time.process_time() - c0
    plain = folded[:n]
    return {"samples": n, "predictions": n, "agreement": float(np.mean(enc.argmax(1) == plain.argmax(1))),
            "max_abs_logit_error": float(np.abs(enc - plain).max()),
            "encrypted_acc": float(np.mean(enc.argmax(1) == ys)),
            "plaintext_acc_same_samples": float(np.mean(plain.argmax(1) == ys)),
            "seconds_per_sample": float(np.mean(secs)), "ms_per_sample": 1000 * float(np.mean(secs)),
            "cpu_seconds_per_sample": cpu / n, "predictions_per_hour": 3600 / float(np.mean(secs)),
            "predictions_per_hour_cpu": 3600 * n / cpu, "context_setup_s": setup_s}


def print_report(r: dict) -> None:
    print(f"model: {r['model']} on {r['dataset']}, degree {r['degree']}: " + " | ".join(r["layers"]))
    print(f"folded vs original (float64, whole test set): max |logit diff| {r['fold_max_abs_diff_float64']:.2e}; "
          f"plaintext test accuracy {100 * r['plaintext_test_acc']:.2f}%")
    print(f"depth {r['depth']} ({' + '.join(map(str, r['layer_depths']))}); Chebyshev sum |c_k| "
          f"{r['coefficient_mass_chebyshev']:.3g}; CKKS {r['params']}; "
          f"{'context set-up' if r['packing'] == 'sample' else 'key generation'} "
          f"{r.get('context_setup_s', r.get('keygen_s', 0.0)):.1f}s")
    if r["packing"] == "sample":
        print(f"encrypted, {r['samples']} samples: prediction agreement with plaintext {100 * r['agreement']:.1f}%, "
              f"max |logit error| {r['max_abs_logit_error']:.2e}, {r['ms_per_sample']:.0f} ms/sample, accuracy "
              f"{100 * r['encrypted_acc']:.1f}% "
              f"(plaintext on the same samples {100 * r['plaintext_acc_same_samples']:.1f}%)")
        return
    print(f"batch packing, {r['predictions']} predictions ({r['samples']} test samples) in {r['batches']} batches "
          f"of {r['batch_size']}: agreement with plaintext {100 * r['agreement']:.2f}%, max |logit error| "
          f"{r['max_abs_logit_error']:.2e}, encrypted accuracy {100 * r['encrypted_acc']:.2f}%")
    print(f"  {r['seconds_per_batch']:.1f} s per batch (encrypt {r['encrypt_s']:.1f}, evaluate {r['evaluate_s']:.1f}, "
          f"decrypt {r['decrypt_s']:.1f}; total), {r['predictions_per_hour']:,.0f} predictions/hour "
          f"({r['predictions_per_hour_cpu']:,.0f} per CPU-hour), peak RSS {r['peak_rss_gb']:.2f} GB per batch")
    print(f"  sizes: public context {r['public_context_bytes'] / 2**20:.1f} MiB, secret context "
          f"{r['secret_context_bytes'] / 2**20:.1f} MiB, ciphertext {r['ciphertext_bytes'] / 2**20:.2f} MiB "
          f"(upload {r['upload_bytes_per_batch'] / 2**20:.0f} MiB, download "
          f"{r['download_bytes_per_batch'] / 2**20:.0f} MiB per batch), model {r['model_bytes'] / 2**10:.0f} KiB")
    if r["disagreements"]:
        print(f"  disagreements: {len(r['disagreements'])}, all with a plaintext top-2 margin below twice the "
              f"measured error: {r['disagreements_explained']}")


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

    scratch = Scratch()
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
