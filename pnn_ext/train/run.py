"""Opening a finished (or interrupted) pnn-train run: :func:`load_run`, the one way
the HE tools, the benchmarks and users get a trained model back."""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

from torch import nn

from . import checkpoint
from .artifacts import BEST, LAST
from .config import TrainConfig
from .data import Data, DataSpec, load
from .model_registry import build_model


class Run(NamedTuple):
    """A trained model with what made it. Unpacks as ``model, config, data = load_run(path)``."""
    model: nn.Module        # in eval mode, on the CPU, weights of the checkpoint
    config: TrainConfig     # the run's settings (resume and overwrite cleared)
    data: DataSpec          # dataset name, sample layout and shape, classes

    def load_data(self) -> Data:
        """The run's dataset, split and normalised exactly as in training (from config.data_dir)."""
        return load(self.config)


def checkpoint_path(path: str) -> str:
    """A run directory's best.pt (else last.pt); a file path as it is."""
    if os.path.isdir(path):
        for name in (BEST, LAST):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise checkpoint.CheckpointError(f"run directory {path!r} holds no checkpoint ({BEST} or {LAST})")
    return path


def load_run(path: str, data_dir: str | None = None) -> Run:
    """Open a pnn-train run: ``path`` is its output directory (best.pt is read, else
    last.pt) or a checkpoint file. ``data_dir`` replaces the run's data directory
    (for Run.load_data, and for checkpoints that predate the saved data spec, whose
    dataset is loaded here to find the sample shape). Raises CheckpointError for a
    missing, damaged or non-finite checkpoint and DataError when the data is needed and missing."""
    path = checkpoint_path(path)
    ck = checkpoint.load(path)
    bad = checkpoint.nonfinite_entries(ck["model"])
    if bad:  # a model that cannot be evaluated (nor encrypted): refused here, not deep inside a tool
        raise checkpoint.CheckpointError(f"checkpoint {path!r} holds non-finite values ({', '.join(bad[:3])})")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in ck["config"].items() if k in known}
    settings.update(resume="", overwrite=False)
    if data_dir is not None:
        settings["data_dir"] = data_dir
    cfg = TrainConfig(**settings)
    if "data" in ck:
        d = ck["data"]
        spec = DataSpec(d["name"], d["layout"], tuple(d["in_shape"]), d["num_classes"])
    else:
        spec = load(cfg).spec
    model = build_model(cfg, spec.in_shape, spec.layout, spec.num_classes)
    model.load_state_dict(ck["model"])
    return Run(model.eval(), cfg, spec)
