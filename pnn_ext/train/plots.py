"""PNG plots beside the metrics: training curves, the fitted polynomial against
its target, and per-layer input ranges over epochs (file names and the writer of
a run's plots: pnn_ext.train.artifacts)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..fitting import TARGETS  # noqa: E402
from ..reference import poly_eval  # noqa: E402


def _log_scale_if_positive(ax, values: list[float]) -> None:
    """A log y axis where every plotted value is positive and finite; else the linear one
    (matplotlib warns on a log axis with nothing positive: a loss of exactly 0, a NaN)."""
    if values and all(math.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")


def curves(path: str, history: list[dict]) -> None:
    ep = [r["epoch"] for r in history]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    losses = {"train_loss": "train loss (CE + λ·boundary)", "train_ce": "train CE", "val_loss": "val CE",
              "test_loss": "test CE"}
    for key, label in losses.items():
        a.plot(ep, [r[key] for r in history], "o-", label=label)
    _log_scale_if_positive(a, [r[key] for r in history for key in losses])
    a.set_title("loss")
    boundary = [r["train_boundary"] for r in history]
    b.plot(ep, boundary, "o-", color="C3")
    _log_scale_if_positive(b, boundary)
    b.set_title("mean boundary term Σ L_i (train)")
    for key in ("train_acc", "val_acc", "test_acc"):
        c.plot(ep, [100 * r[key] for r in history], "o-", label=key.replace("_acc", ""))
    c.set_title("accuracy %")
    for ax in (a, b, c):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def activation(path: str, polys: list) -> None:
    """p over [-1.5B, 1.5B] against its target, B and alpha*B marked; one curve per
    distinct coefficient vector (all layers share one unless coefficients are learnable)."""
    if not polys:
        return
    first = polys[0]
    bound, alpha = first.bound, first.alpha
    x = torch.linspace(-1.5 * bound, 1.5 * bound, 2001, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    target = TARGETS.get(first.target)
    ref = None
    if target is not None:
        ref = target(x.numpy())
        ax.plot(x.numpy(), ref, "k--", lw=1.5, label=f"{first.target}")
    seen: list[torch.Tensor] = []
    for i, m in enumerate(polys):
        c = m.coeffs.detach().double().cpu()
        if any(torch.equal(c, s) for s in seen):
            continue
        seen.append(c)
        y = poly_eval(x / m.bound, c, m.basis)
        ax.plot(x.numpy(), y.numpy(), lw=1.2, label=f"p, degree {m.degree}" + (f" (layer {i})" if len(polys) > 1
                                                                                   and m.learnable else ""))
        if len(seen) >= 8:
            break
    for v, style, name in ((bound, "-", "B"), (alpha * bound, ":", "αB")):
        for s in (-1, 1):
            ax.axvline(s * v, color="C3", ls=style, lw=1, label=f"±{name} = {v:g}" if s > 0 else None)
    if ref is not None:
        lo, hi = float(np.min(ref)), float(np.max(ref))
        pad = 0.5 * (hi - lo) + 1
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(f"fitted polynomial, degree {first.degree}, basis {first.basis}")
    ax.set_xlabel("x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ranges(path: str, history: list[dict], polys: list) -> None:
    if not polys or not history or not history[0]["layer_max_abs_x"]:
        return
    ep = [r["epoch"] for r in history]
    mx = np.array([r["layer_max_abs_x"] for r in history])
    fr = np.array([r["layer_frac_outside_b"] for r in history])
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for i in range(mx.shape[1]):
        a.plot(ep, mx[:, i], "o-", ms=3, label=f"layer {i}")
        b.plot(ep, 100 * fr[:, i], "o-", ms=3, label=f"layer {i}")
    a.axhline(polys[0].bound, color="C3", label=f"B = {polys[0].bound:g}")
    a.axhline(polys[0].alpha * polys[0].bound, color="C3", ls=":", label=f"αB = {polys[0].alpha * polys[0].bound:g}")
    a.set_title("max |x| at each activation (training batches)")
    b.set_title("% of inputs outside [-B, B] (mean over batches)")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
