"""Checkpoints: written atomically (temporary file in the same directory, fsync,
rename), read with ``weights_only=True``, with a clear error when one is
truncated or corrupted. Random-number states are stored as tensors and plain
Python values so that the safe loader accepts them."""
from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import torch

from .artifacts import CHECKPOINTS


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (missing, truncated, corrupted or of another format)."""


FORMAT = 1  # bumped when the layout of the saved dict changes

# Settings a checkpoint must share with the run that loads it (plus hidden for MLPs).
SAME_MODEL = ("dataset", "model", "activation", "degree", "basis", "norm", "act_position")


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it: a crash
    at any point leaves either the previous file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def check_same_model(saved: dict, cfg, path: str) -> None:
    """A CheckpointError naming the first setting of ``cfg`` (a TrainConfig) that
    differs from the checkpoint's config ``saved``."""
    for key in SAME_MODEL + (("hidden",) if cfg.model == "mlp" else ()):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(f"checkpoint {path!r} was made with {key}={saved.get(key)!r}, this run has "
                                  f"{key}={getattr(cfg, key)!r}")


def load(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        others = [p for p in CHECKPOINTS if os.path.isfile(os.path.join(os.path.dirname(path), p))
                  and os.path.basename(path) != p]
        hint = f" Other checkpoints in its directory: {', '.join(others)}." if others else ""
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be loaded "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).{hint}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a pnn-train checkpoint (format {FORMAT})")
    return obj


def restore(path: str, cfg, model, optimizer, scheduler) -> dict:
    """Load a checkpoint made by a run of the same model as ``cfg`` (a TrainConfig) into
    model, optimizer, scheduler and the RNG states; returns it for the loop's counters."""
    # On the CPU: the RNG states must stay CPU tensors; load_state_dict moves the rest.
    ck = load(path, map_location="cpu")
    check_same_model(ck["config"], cfg, path)
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    if scheduler is not None and ck["scheduler"] is not None:
        scheduler.load_state_dict(ck["scheduler"])
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            scheduler.T_max = max(cfg.epochs, 1)  # --epochs may extend a resumed run
    set_rng_state(ck["rng"])
    return ck


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": list(random.getstate()[1]) + [random.getstate()[2]],
        "python_version": random.getstate()[0],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((state["python_version"], tuple(py[:-1]), py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
