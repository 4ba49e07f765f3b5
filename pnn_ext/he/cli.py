"""``pnn-he CHECKPOINT``: fold a pnn-train checkpoint, run test samples encrypted
(CKKS, TenSEAL) and report agreement with the plaintext model, logit error, time,
depth and the parameters used. ``--packing sample`` (latency: one sample per
ciphertext) or ``batch`` (throughput: one feature of up to N/2 samples per
ciphertext, the whole test set by default).

The client/server split works on files: ``pnn-he fold|keygen|encrypt|infer|decrypt``
(pnn_ext.he.split_cli; both command lines share pnn_ext.he.cli_args), or over the
network: ``pnn-he serve|client``, and ``pnn-he certify`` makes the range certificate
(pnn_ext.he.service_cli). A user's mistake
is one line, ``pnn-he: error: ...``, and exit code 2, checked before the encrypted run
where it can be."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import run_main
from .cli_args import Parser, UsageError, add_param_flags, check_output, parse_params, write_json
from .fold import UnsupportedLayerError
from .measure import evaluate, print_report
from .model import ModelFileError
from .params import HEParameterError
from .sealed_file import FormatError
from .service_cli import SERVICE_COMMANDS, run_service_command
from .session_store import ServiceError
from .split_cli import SUBCOMMANDS, run_subcommand


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
    p.add_argument("--export", default=None, help="write the folded model (weights and Chebyshev coefficients) "
                                                  "to this .npz")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    return p


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv)
    if argv and argv[0] in SERVICE_COMMANDS:
        return run_service_command(argv)
    args = parser().parse_args(argv)
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.packing == "sample" and (args.batch_size is not None or args.fill):
        raise UsageError("--batch-size and --fill apply to --packing batch")
    scale_bits, n, sizes = parse_params(args)
    check_output(args.json, "--json", (args.checkpoint,))
    check_output(args.export, "--export", (args.checkpoint,), suffix=".npz")
    if args.json and args.export and os.path.realpath(args.json) == os.path.realpath(args.export):
        raise UsageError("--json and --export name the same file")
    r = evaluate(args.checkpoint, args.samples, args.data_dir, scale_bits, n, sizes, args.export, args.packing,
                 args.batch_size, args.fill)
    print_report(r)
    if args.json:
        write_json(args.json, r)
    return 0


def main(argv: list[str] | None = None) -> int:
    """pnn-he's exit code: 0, or 2 with one line ``pnn-he: error: ...`` on a user's mistake."""
    from ..train import CheckpointError, DataError
    user_errors = (CheckpointError, DataError, UnsupportedLayerError, HEParameterError, FormatError, ModelFileError,
                   ServiceError, ImportError, OSError)
    return run_main("pnn-he", _main, argv, user_errors=user_errors)


if __name__ == "__main__":
    sys.exit(main())
