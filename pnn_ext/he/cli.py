"""``pnn-he CHECKPOINT``: fold a pnn-train checkpoint, run test samples encrypted
(CKKS, TenSEAL) and report agreement with the plaintext model, logit error, time,
depth and the parameters used. ``--packing sample`` (latency: one sample per
ciphertext) or ``batch`` (throughput: one feature of up to N/2 samples per
ciphertext, the whole test set by default).

The client/server split works on files: ``pnn-he fold|keygen|encrypt|infer|decrypt``
(see pnn_ext.he.split_cli). A user's mistake is one line, ``pnn-he: error: ...``,
and exit code 2, checked before the encrypted run where it can be."""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

from ..errors import ArgumentParser as Parser
from ..errors import UsageError
from ..strict_json import dumps

SUBCOMMANDS = ("fold", "keygen", "encrypt", "infer", "decrypt")


def check_writable(path: str | None, what: str) -> None:
    if path:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise UsageError(f"{what} {path}: directory {d} does not exist")
        if not os.access(d, os.W_OK):
            raise UsageError(f"{what} {path}: directory {d} is not writable")


def write_json(path: str, report: dict) -> None:
    with open(path, "w") as fh:
        fh.write(dumps(report, indent=2))


def add_param_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale-bits", type=int, default=None,
                   help="CKKS scale 2^bits (default: chosen from the polynomial coefficients: 40)")
    p.add_argument("--poly-modulus-degree", type=int, default=None,
                   help="ring dimension N (default: the smallest 128-bit-secure one that fits)")
    p.add_argument("--coeff-mod-bit-sizes", default=None,
                   help="modulus chain, comma separated, e.g. 60,40,40,40,60 (default: from the depth)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="pnn-he", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a pnn-train checkpoint (OUT_DIR/best.pt or last.pt) or run directory "
                                      "(its best.pt)")
    p.add_argument("--packing", choices=("sample", "batch"), default="sample",
                   help="sample: one sample per ciphertext (latency); batch: slot = sample, one ciphertext per "
                        "feature of up to N/2 samples (throughput)")
    p.add_argument("--batch", dest="packing", action="store_const", const="batch", help="same as --packing batch")
    p.add_argument("--samples", type=int, default=None,
                   help="test samples to run encrypted (default: 10 with sample packing, the whole test set with "
                        "batch packing)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default and most: N/2)")
    p.add_argument("--fill", action="store_true",
                   help="batch packing: fill the last batch with test samples from the start again, so that every "
                        "batch is full (a batch costs the same full or not)")
    p.add_argument("--data-dir", default=None, help="dataset directory (default: the one the run was trained with)")
    add_param_flags(p)
    p.add_argument("--export", default=None, help="write the folded model (weights and monomial coefficients) "
                                                  "to this .npz")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    return p


def parse_params(args) -> tuple[int | None, int | None, list[int] | None]:
    """The CKKS flags, checked: UsageError naming the bad one."""
    from .params import MAX_MODULUS_BITS, MAX_PRIME_BITS
    if args.scale_bits is not None and not 20 <= args.scale_bits <= 59:
        raise UsageError(f"--scale-bits must be in 20..59, got {args.scale_bits}")
    if args.poly_modulus_degree is not None and args.poly_modulus_degree not in MAX_MODULUS_BITS:
        raise UsageError(f"--poly-modulus-degree must be one of {sorted(MAX_MODULUS_BITS)}, "
                         f"got {args.poly_modulus_degree}")
    sizes = None
    if args.coeff_mod_bit_sizes:
        try:
            sizes = [int(s) for s in args.coeff_mod_bit_sizes.split(",")]
        except ValueError:
            raise UsageError(f"--coeff-mod-bit-sizes must be comma-separated integers, "
                             f"got {args.coeff_mod_bit_sizes!r}") from None
        if len(sizes) < 3:
            raise UsageError(f"--coeff-mod-bit-sizes needs at least 3 primes (first, levels, last), got {sizes}")
        if not all(20 <= s <= MAX_PRIME_BITS for s in sizes):
            raise UsageError(f"--coeff-mod-bit-sizes: every prime must have 20..{MAX_PRIME_BITS} bits, got {sizes}")
    return args.scale_bits, args.poly_modulus_degree, sizes


def choose_params(he, scale_bits, poly_modulus_degree, sizes, packing: str):
    from .params import CKKSParams, check, recommend
    if sizes:
        params = CKKSParams(poly_modulus_degree or 32768, list(sizes), scale_bits or sizes[1])
    else:
        params = recommend(he, scale_bits, packing=packing)
        if poly_modulus_degree:
            params = CKKSParams(poly_modulus_degree, params.coeff_mod_bit_sizes, params.scale_bits)
    check(he, params, packing)
    return params


def load_folded(path: str, data_dir: str | None):
    """(run, data, folded model) of a checkpoint; a missing or damaged one is a UsageError."""
    from ..train import CheckpointError, DataError, load_run
    from .fold import fold
    try:
        run = load_run(path, data_dir)
        data = run.load_data()
    except (CheckpointError, DataError, OSError) as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # torch.load on a damaged file: pickle, zip and EOF errors
        raise UsageError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    return run, data, fold(run.model, data.in_shape)


def evaluate(path: str, samples: int | None = None, data_dir: str | None = None, scale_bits: int | None = None,
             poly_modulus_degree: int | None = None, coeff_mod_bit_sizes: list[int] | None = None,
             export: str | None = None, packing: str = "sample", batch_size: int | None = None,
             fill: bool = False, progress=None) -> dict:
    from .params import coefficient_mass, depth, layer_depths
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
        "checkpoint": path, "dataset": cfg.dataset, "model": cfg.model, "hidden": cfg.hidden,
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
        report.update(_sample_run(he, params, x_all, y_all, folded, 10 if samples is None else samples))
    else:
        from .run_batch import batch_run
        report.update(batch_run(he, params, x_all, y_all, folded, samples, batch_size, fill, progress))
    report["load_after"] = list(os.getloadavg())
    return report


def _sample_run(he, params, x_all, y_all, folded, samples: int) -> dict:
    from .encrypted import EncryptedRunner
    t0 = time.perf_counter()
    runner = EncryptedRunner(he, params)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from ..train import CheckpointError, DataError
    from .fold import UnsupportedLayerError
    from .params import HEParameterError
    from .protocol import FormatError
    try:
        if argv and argv[0] in SUBCOMMANDS:
            from .split_cli import run_subcommand
            return run_subcommand(argv)
        args = parser().parse_args(argv)
        if args.samples is not None and args.samples < 1:
            raise UsageError(f"--samples must be >= 1, got {args.samples}")
        if args.batch_size is not None and args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.packing == "sample" and (args.batch_size is not None or args.fill):
            raise UsageError("--batch-size and --fill apply to --packing batch")
        scale_bits, n, sizes = parse_params(args)
        check_writable(args.json, "--json")
        check_writable(args.export, "--export")
        r = evaluate(args.checkpoint, args.samples, args.data_dir, scale_bits, n, sizes, args.export, args.packing,
                     args.batch_size, args.fill)
    except (UsageError, CheckpointError, DataError, UnsupportedLayerError, HEParameterError, FormatError,
            ImportError, OSError) as e:
        msg = " ".join(str(e).split())
        print(f"pnn-he: error: {msg}", file=sys.stderr)
        return 2
    print_report(r)
    if args.json:
        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
