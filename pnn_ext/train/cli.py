"""``pnn-train`` / ``python -m pnn_ext.train``: parse the configuration, train, print the result.

Exit codes: 0 completed, 1 diverged, 2 a user's mistake (one line, nothing written),
130 Ctrl-C and 143 SIGTERM (summary.json says interrupted); see pnn_ext.errors."""
from __future__ import annotations

import os
import sys

from ..errors import run_main
from .checkpoint import CheckpointError
from .config import parse_config
from .data import DataError

# Mistakes of the user's, reported in one line: settings and flags (ValueError), data
# (DataError), checkpoints, an existing run, files and directories that are missing.
USER_ERRORS = (ValueError, DataError, CheckpointError, FileExistsError, FileNotFoundError)


def _train(argv: list[str] | None) -> int:
    cfg = parse_config(argv)
    from .loop import Trainer
    args = sys.argv[1:] if argv is None else argv
    world = os.environ.get("WORLD_SIZE", "1")
    launcher = f"torchrun --nproc_per_node {world} -m pnn_ext.train" if world != "1" else "pnn-train"
    trainer = Trainer(cfg, command=" ".join([launcher, *args]))  # every check before anything is written
    try:
        summary = trainer.run()
    except (CheckpointError, DataError):
        raise
    except ValueError as e:  # not a setting (those were all checked above): a bug, with its traceback
        raise RuntimeError(f"pnn-train: internal error during the run: {e}") from e
    except KeyboardInterrupt:
        if trainer.dist.main:
            print(f"pnn-train: stopped; summary.json (status interrupted) and the last epoch's checkpoint are in "
                  f"{cfg.out_dir}; --resume last continues", file=sys.stderr)
        raise
    if trainer.dist.main:
        acc = summary["final_test_acc"]
        acc_s = f"{100 * acc:.2f}%" if acc is not None else "n/a"
        best = summary["test_acc_at_best_val"]
        extra = f" (at best validation epoch {summary['best_epoch']}: {100 * best:.2f}%)" if best is not None else ""
        act = f"degree {cfg.degree}" if cfg.activation == "poly" else cfg.activation
        print(f"{summary['status']}: {cfg.model} on {cfg.dataset}, {act}: test accuracy {acc_s}{extra}; "
              f"{summary['epochs_completed']} epochs, {summary['total_time_s']:.1f}s, "
              f"non-finite steps {summary['nonfinite_steps']}, rollbacks {summary['rollbacks']}; "
              f"outputs in {cfg.out_dir}")
    from .distributed import shutdown
    shutdown(trainer.dist)
    return 1 if summary["status"] == "diverged" else 0


def main(argv: list[str] | None = None) -> int:
    return run_main("pnn-train", _train, argv, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
