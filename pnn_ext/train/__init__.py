"""The training framework: ``pnn-train`` (see ``pnn-train --help``) and its parts.

Public: TrainConfig and parse_config (settings, flags, YAML/JSON), train (one run
in this process), load_run (open a finished run: model, config, data spec),
build_model, evaluate, and the errors CheckpointError and DataError. The modules:
config, data (datasets), models (--model names), loop (Trainer: objective,
clipping, divergence guard), optim, evaluation, checkpoint (atomic, exact
resume), artifacts (the run directory's files), plots, distributed, ablation
(pnn-ablate), calibrate (--bound auto), sweep, sweep_plan, sweep_run and
sweep_report (pnn-sweep: the command, its cells and checks, its engines, its
reports), run (load_run)."""
from .checkpoint import CheckpointError
from .config import TrainConfig, parse_config
from .data import Data, DataError, DataSpec
from .evaluation import evaluate
from .model_registry import build_model
from .run import Run, load_run

__all__ = ["CheckpointError", "Data", "DataError", "DataSpec", "Run", "TrainConfig", "build_model", "evaluate",
           "load_run", "parse_config", "train"]


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Run one training job in this process; returns the summary (also in OUT_DIR/summary.json)."""
    from .loop import Trainer
    cfg = TrainConfig(**{**(cfg.to_dict() if cfg else {}), **overrides})
    return Trainer(cfg).run()
