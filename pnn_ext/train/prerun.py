"""Checks made before a run removes or writes anything (``Trainer.__init__``): the output
directory and the checkpoint to resume, the device options, and one forward pass of the
model on a training batch. A run that would fail on its settings fails here."""
from __future__ import annotations

import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import one_line
from . import artifacts, checkpoint
from .artifacts import LAST
from .config import TrainConfig
from .data import Data


def resume_path(cfg: TrainConfig, device: torch.device) -> str:
    """The checkpoint a run resumes from ("" for a new run), after refusing a new run
    over an existing one without --overwrite, a missing checkpoint, and CUDA-only options
    on the CPU. Checked before any collective: no rank can have written yet."""
    last = artifacts.path(cfg.out_dir, LAST)
    if not cfg.resume and not cfg.overwrite and os.path.exists(last):
        raise FileExistsError(f"{cfg.out_dir} already holds a run ({last}): pass --resume last to continue it "
                              f"or --overwrite to start over")
    path = (last if cfg.resume == "last" else cfg.resume) if cfg.resume else ""
    if path and not os.path.isfile(path):
        raise checkpoint.CheckpointError(f"checkpoint {path!r} to resume does not exist")
    if device.type != "cuda" and (cfg.bf16 or cfg.channels_last):
        raise ValueError("bf16 and channels_last are for CUDA runs; this run is on the CPU")
    return path


def dry_run(model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device) -> None:
    """One forward pass in training mode on the first training batch, undone (BatchNorm
    statistics and the RNG put back): a batch too small for BatchNorm, an image too
    small for the model's pooling or a degree the op refuses stops the run here."""
    n = min(cfg.batch_size, len(data.train))
    x, y = data.train[:n]
    saved = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.train()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(x.to(device))
            F.cross_entropy(logits.float(), y.to(device))
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(f"the model cannot train on this data (one forward pass on a training batch of {n}, "
                         f"batch_size {cfg.batch_size}): {one_line(e)}") from None
    finally:
        model.load_state_dict(saved, strict=False)


def check_writable(out_dir: str) -> None:
    """A ValueError naming ``out_dir`` when files cannot be created in it (a file in
    the way, no permission, /proc); creates it when missing, writes nothing in it."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} exists and is not a directory")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ValueError(f"out_dir {out_dir!r} cannot be written: {e.strerror or e}") from None
