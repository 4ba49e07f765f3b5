"""``pnn-he CHECKPOINT``: fold a pnn-train checkpoint, run N test samples encrypted
(CKKS, TenSEAL) and report agreement with the plaintext model, logit error,
time per sample, depth and the parameters used."""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pnn-he", description=__doc__)
    p.add_argument("checkpoint", help="a pnn-train checkpoint (OUT_DIR/best.pt or last.pt) or run directory "
                                      "(its best.pt)")
    p.add_argument("--samples", type=int, default=10, help="test samples to run encrypted (default: 10)")
    p.add_argument("--data-dir", default=None, help="dataset directory (default: the one the run was trained with)")
    p.add_argument("--scale-bits", type=int, default=None,
                   help="CKKS scale 2^bits (default: chosen from the polynomial coefficients)")
    p.add_argument("--poly-modulus-degree", type=int, default=None,
                   help="ring dimension N (default: the smallest 128-bit-secure one that fits)")
    p.add_argument("--coeff-mod-bit-sizes", default=None,
                   help="modulus chain, comma separated, e.g. 60,40,40,40,60 (default: from the depth)")
    p.add_argument("--export", default=None, help="write the folded model (weights and monomial coefficients) "
                                                  "to this .npz")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    return p


def evaluate(path: str, samples: int = 10, data_dir: str | None = None, scale_bits: int | None = None,
             poly_modulus_degree: int | None = None, coeff_mod_bit_sizes: list[int] | None = None,
             export: str | None = None) -> dict:
    from ..train import load_run
    from .encrypted import EncryptedRunner
    from .fold import fold
    from .params import CKKSParams, coefficient_mass, depth, layer_depths, recommend
    run = load_run(path, data_dir)
    model, cfg, data = run.model, run.config, run.load_data()
    he = fold(model, data.in_shape)
    if export:
        he.export(export)
    x_all, y_all = data.test.tensors
    with torch.no_grad():
        original = model(x_all).double().numpy()                               # as trained: float32
        reference = copy.deepcopy(model).double()(x_all.double()).numpy()     # same model in float64
    folded = he(x_all.numpy())
    fold_err = float(np.abs(folded - reference).max())
    if coeff_mod_bit_sizes:
        params = CKKSParams(poly_modulus_degree or 32768, list(coeff_mod_bit_sizes),
                            scale_bits or coeff_mod_bit_sizes[1])
    else:
        params = recommend(he, scale_bits)
        if poly_modulus_degree:
            params = CKKSParams(poly_modulus_degree, params.coeff_mod_bit_sizes, params.scale_bits)
    t0 = time.perf_counter()
    runner = EncryptedRunner(he, params)
    setup_s = time.perf_counter() - t0
    n = min(samples, len(x_all))
    xs, ys = x_all[:n].numpy(), y_all[:n].numpy()
    enc, secs = runner.run(xs)
    plain = folded[:n]
    agree = float(np.mean(enc.argmax(1) == plain.argmax(1)))
    return {
        "checkpoint": path, "dataset": cfg.dataset, "model": cfg.model, "hidden": cfg.hidden,
        "degree": cfg.degree if cfg.activation == "poly" else None, "samples": n,
        "fold_max_abs_diff_float64": fold_err,
        "float32_model_vs_folded_max_abs_diff": float(np.abs(original - folded).max()),
        "plaintext_test_acc": float(np.mean(folded.argmax(1) == y_all.numpy())),
        "agreement": agree, "max_abs_logit_error": float(np.abs(enc - plain).max()),
        "encrypted_acc": float(np.mean(enc.argmax(1) == ys)), "plaintext_acc_same_samples":
            float(np.mean(plain.argmax(1) == ys)),
        "ms_per_sample": 1000 * float(np.mean(secs)), "context_setup_s": setup_s,
        "depth": depth(he), "layer_depths": layer_depths(he), "layers": he.summary(),
        "coefficient_mass": coefficient_mass(he),
        "params": str(params), "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_mod_bit_sizes": params.coeff_mod_bit_sizes, "scale_bits": params.scale_bits,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error(f"--samples must be >= 1, got {args.samples}")
    try:
        sizes = [int(s) for s in args.coeff_mod_bit_sizes.split(",")] if args.coeff_mod_bit_sizes else None
    except ValueError:
        p.error(f"--coeff-mod-bit-sizes must be comma-separated integers, got {args.coeff_mod_bit_sizes!r}")
    if sizes is not None and len(sizes) < 3:
        p.error(f"--coeff-mod-bit-sizes needs at least 3 primes (first, levels, last), got {sizes}")
    from ..train import CheckpointError, DataError
    from .fold import UnsupportedLayerError
    from .params import HEParameterError
    try:
        r = evaluate(args.checkpoint, args.samples, args.data_dir, args.scale_bits, args.poly_modulus_degree, sizes,
                     args.export)
    except (CheckpointError, DataError, UnsupportedLayerError, HEParameterError, ImportError) as e:
        print(f"pnn-he: error: {e}", file=sys.stderr)
        return 2
    print(f"model: {r['model']} on {r['dataset']}, degree {r['degree']}: " + " | ".join(r["layers"]))
    print(f"folded vs original (float64, whole test set): max |logit diff| {r['fold_max_abs_diff_float64']:.2e}; "
          f"plaintext test accuracy {100 * r['plaintext_test_acc']:.2f}%")
    print(f"depth {r['depth']} ({' + '.join(map(str, r['layer_depths']))}); largest sum |c_k| "
          f"{r['coefficient_mass']:.3g}; CKKS {r['params']}; "
          f"context set-up {r['context_setup_s']:.1f}s")
    print(f"encrypted, {r['samples']} samples: prediction agreement with plaintext {100 * r['agreement']:.1f}%, "
          f"max |logit error| {r['max_abs_logit_error']:.2e}, {r['ms_per_sample']:.0f} ms/sample, accuracy "
          f"{100 * r['encrypted_acc']:.1f}% "
          f"(plaintext on the same samples {100 * r['plaintext_acc_same_samples']:.1f}%)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
