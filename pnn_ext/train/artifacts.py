"""The files of a run directory (pnn-train's --out-dir): their names, and the writers
of the metrics, the summary and the plots. Every module that reads or writes a
run's files takes the names from here.

    last.pt, best.pt            checkpoints (pnn_ext.train.checkpoint)
    metrics.csv, metrics.jsonl  one row per epoch, rewritten from the history each epoch
    summary.json                how the run ended, accuracies, config, command, environment
All JSON is strict: NaN and inf are written as null.
    curves.png, activation.png, ranges.png   plots (pnn_ext.train.plots)
"""
from __future__ import annotations

import json
import math
import os
import platform

import numpy as np
import torch

from .. import ops
from ..atomic_file import atomic_write
from ..strict_json import dumps

LAST = "last.pt"
BEST = "best.pt"
CHECKPOINTS = (LAST, BEST)
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES_PNG = "curves.png"
ACTIVATION_PNG = "activation.png"
RANGES_PNG = "ranges.png"
PLOTS = (CURVES_PNG, ACTIVATION_PNG, RANGES_PNG)
# What a fresh run with --overwrite removes (last.pt is replaced by the run's first save).
REPLACED = (BEST, SUMMARY, METRICS_CSV, METRICS_JSONL, *PLOTS)

CSV_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_ce", "train_boundary", "train_acc", "val_loss", "val_acc",
               "test_loss", "test_acc", "nonfinite_steps", "epoch_time_s", "max_abs_x", "max_frac_outside_b")


def path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, name)


def write_text(file: str, text: str) -> None:
    """Write through a temporary file and a rename: readers never see half a file."""
    with atomic_write(file) as fh:
        fh.write(text.encode())


def write_json(file: str, obj) -> None:
    write_text(file, dumps(obj, indent=2) + "\n")


def clear(out_dir: str) -> None:
    """Remove the outputs of an earlier run, so that none is mistaken for the new run's."""
    for name in REPLACED:
        if os.path.exists(path(out_dir, name)):
            os.remove(path(out_dir, name))


def write_metrics(out_dir: str, history: list[dict]) -> None:
    """metrics.jsonl and metrics.csv, rewritten from the history (so a resumed run
    never holds rows of the epochs it redid)."""
    write_text(path(out_dir, METRICS_JSONL), "".join(dumps(r) + "\n" for r in history))
    rows = [",".join(CSV_COLUMNS)]
    for r in history:
        r = {**r, "max_abs_x": max(r["layer_max_abs_x"], default=float("nan")),
             "max_frac_outside_b": max(r["layer_frac_outside_b"], default=float("nan"))}
        rows.append(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in CSV_COLUMNS))
    write_text(path(out_dir, METRICS_CSV), "\n".join(rows) + "\n")


def write_summary(out_dir: str, summary: dict) -> None:
    write_json(path(out_dir, SUMMARY), summary)


def read_summary(run_dir: str) -> dict | None:
    """A run's summary.json, or None when the run has none (not started, or killed hard)."""
    file = path(run_dir, SUMMARY)
    if not os.path.isfile(file):
        return None
    with open(file) as fh:
        return json.load(fh)


def write_plots(out_dir: str, history: list[dict], polys: list) -> list[str]:
    """curves.png, and for polynomial networks activation.png and ranges.png; returns the names written."""
    from . import plots  # matplotlib only when plots are written
    written = []
    if history:
        plots.curves(path(out_dir, CURVES_PNG), history)
        written.append(CURVES_PNG)
    if polys:
        plots.activation(path(out_dir, ACTIVATION_PNG), polys)
        written.append(ACTIVATION_PNG)
        if history:
            plots.ranges(path(out_dir, RANGES_PNG), history, polys)
            written.append(RANGES_PNG)
    return written


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "cpu_capability": ops.cpu_capability(), "cuda_kernels": ops.has_cuda_kernels(),
           "threads": torch.get_num_threads(), "machine": platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def summary(status: str, history: list[dict], **fields) -> dict:
    """summary.json's content: the accuracies read from the per-epoch history, then
    ``fields`` (divergence, counters, timing, config, command, environment) as given."""
    tests = [r["test_acc"] for r in history]
    vals = [r["val_acc"] for r in history]
    best = max(range(len(history)), key=lambda i: vals[i]) if history and all(map(math.isfinite, vals)) else None
    return {
        "status": status,
        "final_test_acc": tests[-1] if tests else None,
        "best_test_acc": max(tests) if tests else None,
        "best_val_acc": vals[best] if best is not None else None,
        "test_acc_at_best_val": tests[best] if best is not None else None,
        "best_epoch": history[best]["epoch"] if best is not None else None,
        "diverged": status == "diverged",
        "epoch_time_s": float(np.mean([r["epoch_time_s"] for r in history])) if history else None,
        **fields,
    }


def progress_bar(iterable, enabled: bool, desc: str):
    """A tqdm bar over ``iterable`` when enabled and stderr is a terminal, else ``iterable``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    # disable=None: no bar when stderr is not a terminal (logs, CI), the epoch lines remain
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5, disable=None)


def epoch_line(r: dict, epochs: int) -> str:
    """The line pnn-train prints after each epoch."""
    outside = max(r["layer_frac_outside_b"], default=0.0)
    maxx = max(r["layer_max_abs_x"], default=0.0)
    ranges = f"  max|x| {maxx:.1f}  outside B {100 * outside:.2g}%" if r["layer_max_abs_x"] else ""
    return (f"epoch {r['epoch']:3d}/{epochs}  loss {r['train_loss']:.4f}  ce {r['train_ce']:.4f}  "
            f"boundary {r['train_boundary']:.2e}  train {100 * r['train_acc']:.2f}%  val {100 * r['val_acc']:.2f}%  "
            f"test {100 * r['test_acc']:.2f}%  lr {r['lr']:.2e}  {r['epoch_time_s']:.1f}s{ranges}")
