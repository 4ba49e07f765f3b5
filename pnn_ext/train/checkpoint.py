"""Checkpoints: written atomically (temporary file in the same directory, fsync,
rename), read with ``weights_only=True``, with a clear error when one is
truncated or corrupted. Random-number states are stored as tensors and plain
Python values so that the safe loader accepts them.

Each checkpoint carries a SHA-256 digest of every entry (model tensors, optimizer
state, RNG states, counters, config), computed from the values before they are
written and stored in the same file, and checked on every load: torch's zip
reader checks no CRC, so flipped bits inside tensor data otherwise load silently."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch

from ..atomic_file import atomic_write
from .artifacts import CHECKPOINTS


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (missing, truncated, corrupted or of another format)."""


FORMAT = 2  # bumped when the layout of the saved dict changes (2: the "digest" entry)
READABLE = (1, 2)  # format 1 (before digests) loads, unverified

# Settings a checkpoint must share with the run that loads it (plus hidden for MLPs):
# they decide the model's structure or where its weights came from.
SAME_MODEL = ("dataset", "model", "activation", "degree", "basis", "norm", "act_position", "learnable", "target",
              "fit_method", "num_classes")
# Settings that may differ on resume without --allow-changes: where files are, how long
# the run goes, how it reports; none changes what a step computes.
FREE_ON_RESUME = ("resume", "overwrite", "allow_changes", "out_dir", "data_dir", "workers", "device", "epochs",
                  "max_steps", "progress", "plots", "hidden")


def _feed(h, obj) -> None:
    """Feed ``obj`` (what a checkpoint holds: tensors, dicts, lists, tuples, str, numbers,
    None) into the hash ``h``, types and structure included."""
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def digest(obj: dict) -> dict[str, str]:
    """SHA-256 of each entry of a checkpoint dict but the digest itself."""
    out = {}
    for key, value in obj.items():
        if key != "digest":
            h = hashlib.sha256()
            _feed(h, value)
            out[key] = h.hexdigest()
    return out


# What a damaged entry is called in the error message.
REGION = {"model": "the model's tensor data", "optimizer": "the optimizer state", "rng": "the random-number states"}


def nonfinite_entries(state: dict) -> list[str]:
    """Names of the floating tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it: a crash
    at any point leaves either the previous file or the new one, never half of one.
    A dict with a "format" entry (a checkpoint) gets its "digest" entry here."""
    if "format" in obj:
        obj = {**obj, "format": FORMAT}
        obj["digest"] = digest(obj)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_write(path, prefix=os.path.basename(path) + ".", durable=True) as fh:
        torch.save(obj, fh)


def check_same_model(saved: dict, cfg, path: str) -> None:
    """A CheckpointError naming the first setting of ``cfg`` (a TrainConfig) that
    differs from the checkpoint's config ``saved``."""
    for key in SAME_MODEL + (("hidden",) if cfg.model == "mlp" else ()):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(f"checkpoint {path!r} was made with {key}={saved.get(key)!r}, this run has "
                                  f"{key}={getattr(cfg, key)!r}")


def _others(path: str) -> str:
    """' Other checkpoints in its directory: best.pt (intact, epoch 3).' (or nothing)."""
    found = []
    for name in CHECKPOINTS:
        other = os.path.join(os.path.dirname(path) or ".", name)
        if os.path.basename(path) == name or not os.path.isfile(other):
            continue
        try:
            found.append(f"{name} (intact, epoch {load(other, others=False)['epoch']})")
        except CheckpointError:
            found.append(f"{name} (damaged too)")
    return f" Other checkpoints in its directory: {', '.join(found)}." if found else ""


def load(path: str, map_location="cpu", others: bool = True) -> dict:
    """A checkpoint, its digest verified; CheckpointError if it is missing, unreadable,
    of another format or damaged (the message names the other checkpoints beside it)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be loaded "
                              f"({type(e).__name__}: {first}).{_others(path) if others else ''}") from None
    if not isinstance(obj, dict) or obj.get("format") not in READABLE:
        raise CheckpointError(f"{path!r} is not a pnn-train checkpoint (format {FORMAT})")
    if obj["format"] >= 2:
        saved, now = obj.get("digest"), digest(obj)
        if isinstance(saved, dict):
            bad = [REGION.get(k, f"its {k!r} entry") for k in sorted(set(now) | set(saved))
                   if saved.get(k) != now.get(k)]
        else:  # missing, or not a digest at all
            bad = ["digest"]
        if bad:
            raise CheckpointError(f"checkpoint {path!r} is corrupted: the digest written with it does not match "
                                  f"{', '.join(bad)}.{_others(path) if others else ''}")
    return obj


def changed_settings(saved: dict, cfg) -> dict[str, list]:
    """{setting: [checkpoint's value, this run's value]} for each training setting of
    ``cfg`` (a TrainConfig) that differs from the checkpoint's config ``saved``."""
    skip = set(SAME_MODEL) | set(FREE_ON_RESUME)
    return {k: [saved.get(k), v] for k, v in cfg.to_dict().items()
            if k not in skip and k in saved and saved[k] != v}


def open_for_resume(path: str, cfg, spec=None) -> dict:
    """The checkpoint at ``path``, verified, for a resume of ``cfg`` (a TrainConfig) on
    data of DataSpec ``spec``: a CheckpointError if it is damaged, holds non-finite
    values, is of another model or data, or (without cfg.allow_changes) was made with
    other training settings, each named. Reads only; the checkpoint's "changes" entry
    gains this resume's changes, which "resume_changes" holds alone."""
    # On the CPU (load's default): the RNG states must stay CPU tensors; load_state_dict moves the rest.
    ck = load(path)
    check_same_model(ck["config"], cfg, path)
    if spec is not None and "data" in ck:
        d = ck["data"]
        now = {"layout": spec.layout, "in_shape": list(spec.in_shape), "num_classes": spec.num_classes}
        for key, value in now.items():
            if (list(d[key]) if key == "in_shape" else d[key]) != value:
                raise CheckpointError(f"checkpoint {path!r} was made for data with {key} {d[key]!r}, this run's "
                                      f"data has {value!r}")
    bad = nonfinite_entries(ck["model"])
    if bad:
        raise CheckpointError(f"checkpoint {path!r} holds non-finite values ({', '.join(bad[:3])}); it cannot be "
                              f"resumed")
    changes = changed_settings(ck["config"], cfg)
    if changes and not cfg.allow_changes:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise CheckpointError(f"resuming {path!r} with settings that differ from its run: {listed}; pass "
                              f"--allow-changes to apply them (recorded in summary.json), or drop them")
    if "auto" in changes.get("bound", []):
        raise CheckpointError(f"resuming {path!r}: bound {changes['bound'][0]!r} -> {changes['bound'][1]!r}; "
                              f"--bound auto calibrates at initialisation, so a resume cannot switch to or from it")
    if "fit_weight" in changes:
        raise CheckpointError(f"resuming {path!r}: fit_weight {changes['fit_weight'][0]!r} -> "
                              f"{changes['fit_weight'][1]!r}; the fits are weighted at initialisation, so a resume "
                              f"cannot change it")
    if changes and "scheduler" in changes:
        raise CheckpointError(f"resuming {path!r}: the scheduler cannot change on resume "
                              f"({changes['scheduler'][0]!r} -> {changes['scheduler'][1]!r})")
    ck["changes"] = list(ck.get("changes", [])) + ([{"epoch": ck["epoch"], "settings": changes}] if changes else [])
    ck["resume_changes"] = changes  # for the loop to apply; not saved (the next state() is built afresh)
    return ck


def restore(ck: dict | str, cfg, model, optimizer, scheduler) -> dict:
    """Put a checkpoint (a dict from :func:`open_for_resume`, or a path) made by a run of
    the same model as ``cfg`` (a TrainConfig) into model, optimizer, scheduler and the
    RNG states; returns it for the loop's counters."""
    if isinstance(ck, str):
        ck = open_for_resume(ck, cfg)
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
