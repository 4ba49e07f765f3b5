"""``pnn-export RUN --onnx model.onnx --aoti model.pt2``: a pnn-train run (its directory or a
checkpoint) as an ONNX file, checked in onnxruntime, and/or an AOTInductor package, checked
by loading it back, both with a dynamic batch dimension. The check inputs are random
samples of the run's sample shape drawn from N(0, 1), the scale of pnn-train's normalised
data. A user's mistake is one line, ``pnn-export: error: ...``, and exit code 2."""
from __future__ import annotations

import argparse
import sys

from ..errors import ArgumentParser, UsageError, run_main

EXAMPLE_BATCH = 2


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="pnn-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a pnn-train run directory (its best.pt, else last.pt) or checkpoint file")
    p.add_argument("--onnx", default=None, metavar="FILE.onnx", help="write an ONNX file (opset 18) here")
    p.add_argument("--aoti", default=None, metavar="FILE.pt2",
                   help="write an AOTInductor package here (load it with `import pnn_ext` and "
                        "torch._inductor.aoti_load_package)")
    p.add_argument("--batch-size", type=int, default=EXAMPLE_BATCH,
                   help=f"batch size of the example traced (default {EXAMPLE_BATCH}); the files accept any")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs (default 0)")
    return p


def _export(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if not (args.onnx or args.aoti):
        raise UsageError("nothing to do: give --onnx FILE.onnx and/or --aoti FILE.pt2")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    import torch

    from ..train import load_run
    from .aoti import export_aoti
    from .checks import check_path
    from .onnx import export_onnx
    for flag, path, suffix in (("--onnx", args.onnx, ".onnx"), ("--aoti", args.aoti, ".pt2")):
        if path:  # both checked before the first (slow) export
            try:
                check_path(path, suffix)
            except ValueError as e:
                raise UsageError(f"{flag}: {e}") from None
    run = load_run(args.run)
    g = torch.Generator().manual_seed(args.seed)
    example = torch.randn((args.batch_size, *run.data.in_shape), generator=g)
    what = f"{run.config.model} on {run.data.name}"
    if args.onnx:
        r = export_onnx(run.model, example, args.onnx)
        print(f"wrote {r.path} ({what}, ONNX): onnxruntime agrees with PyTorch to {r.max_error:.2g} of max |y| "
              f"(limit {r.tolerance:g}) at batch sizes {', '.join(map(str, r.batch_sizes))}")
    if args.aoti:
        r = export_aoti(run.model, example, args.aoti)
        print(f"wrote {r.path} ({what}, AOTInductor): the loaded package agrees with PyTorch to {r.max_error:.2g} "
              f"of max |y| (limit {r.tolerance:g}) at batch sizes {', '.join(map(str, r.batch_sizes))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..train import CheckpointError, DataError
    return run_main("pnn-export", _export, argv, (ValueError, CheckpointError, DataError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
