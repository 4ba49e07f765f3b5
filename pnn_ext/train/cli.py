"""``pnn-train`` / ``python -m pnn_ext.train``: parse the configuration, train, print the result."""
from __future__ import annotations

import os
import sys

from .checkpoint import CheckpointError
from .config import parse_config
from .data import DataError


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"pnn-train: error: {e}", file=sys.stderr)
        return 2
    from .loop import Trainer
    args = sys.argv[1:] if argv is None else argv
    world = os.environ.get("WORLD_SIZE", "1")
    launcher = f"torchrun --nproc_per_node {world} -m pnn_ext.train" if world != "1" else "pnn-train"
    try:  # set-up errors (data, model, device) are the user's to fix: a message, no traceback
        trainer = Trainer(cfg, command=" ".join([launcher, *args]))
    except (DataError, FileExistsError, ValueError, CheckpointError) as e:
        print(f"pnn-train: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = trainer.run()
    except CheckpointError as e:
        print(f"pnn-train: error: {e}", file=sys.stderr)
        return 2
    if trainer.dist.main:
        acc = summary["final_test_acc"]
        acc_s = f"{100 * acc:.2f}%" if acc is not None else "n/a"
        best = summary["test_acc_at_best_val"]
        extra = f" (at best validation epoch {summary['best_epoch']}: {100 * best:.2f}%)" if best is not None else ""
        act = "relu" if cfg.activation == "relu" else f"degree {cfg.degree}"
        print(f"{summary['status']}: {cfg.model} on {cfg.dataset}, {act}: test accuracy {acc_s}{extra}; "
              f"{summary['epochs_completed']} epochs, {summary['total_time_s']:.1f}s, "
              f"non-finite steps {summary['nonfinite_steps']}, rollbacks {summary['rollbacks']}; "
              f"outputs in {cfg.out_dir}")
    from .distributed import shutdown
    shutdown(trainer.dist)
    return 1 if summary["status"] == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())
