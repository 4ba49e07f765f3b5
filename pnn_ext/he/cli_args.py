"""What both pnn-he command lines share (the one-process run, pnn_ext.he.cli, and the
client/server subcommands, pnn_ext.he.split_cli): the CKKS flags and their checks,
output paths checked before any work, the report file, and opening a checkpoint."""
from __future__ import annotations

import argparse
import os

import numpy as np

from ..atomic_file import atomic_write, directory_problem
from ..errors import ArgumentParser as Parser
from ..errors import UsageError
from ..strict_json import dumps

__all__ = ["Parser", "UsageError", "add_param_flags", "check_output", "choose_params", "load_folded",
           "parse_params", "save_npy", "write_json"]


def check_output(path: str | None, flag: str, inputs: tuple = (), suffix: str | None = None) -> None:
    """An output path the command may write: in an existing writable directory, with ``suffix``
    when given (numpy appends .npy/.npz to a name without it), and none of ``inputs``."""
    if not path:
        return
    if suffix and not path.endswith(suffix):
        raise UsageError(f"{flag} {path} must end in {suffix}")
    if (why := directory_problem(path)) is not None:
        raise UsageError(f"{flag} {path}: {why}")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a directory")
    for other in inputs:
        if other and _same_file(path, other):
            raise UsageError(f"{flag} {path} is also an input of this command: it would be overwritten")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)    # hard links
    except OSError:
        return False


def save_npy(path: str, array: np.ndarray) -> None:
    """np.save to a temporary file beside ``path``, renamed into place (never half a file)."""
    with atomic_write(path, prefix=".pnn-he-", suffix=".npy") as fh:
        np.save(fh, array)


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
    """(run, data, folded model with the training inputs' range) of a checkpoint; a missing or
    damaged one is a UsageError."""
    from ..train import CheckpointError, DataError, load_run
    from .fold import fold
    try:
        run = load_run(path, data_dir)
        data = run.load_data()
    except (CheckpointError, DataError, OSError) as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # torch.load on a damaged file: pickle, zip and EOF errors
        raise UsageError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    return run, data, fold(run.model, data.in_shape, inputs=data.train.tensors[0])
