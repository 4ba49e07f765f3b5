"""Resuming a run: the checkpoint (read and verified before the run starts) restored,
and the settings changed at the resume (--allow-changes) made to take effect where the
checkpoint holds their old values."""
from __future__ import annotations

import os

import torch

from .. import fitting
from . import checkpoint
from .artifacts import LAST, path


def restore(trainer, ck: dict | str, counters: bool = True) -> float:
    """Load model, optimizer, scheduler, RNG states, epoch, step and history (and the
    guard's counters when ``counters``) from a checkpoint (a verified dict or a path)
    into ``trainer``; returns the checkpoint's lr_scale."""
    t = trainer
    ck = checkpoint.restore(ck, t.cfg, t.model, t.optimizer, t.scheduler)
    t.epoch, t.step, t.history = ck["epoch"], ck["step"], list(ck["history"])
    t.best_val = ck["best_val"]
    t.changes = list(ck.get("changes", []))
    t.recalibration = ck.get("recalibration")
    if counters:
        t.lr_scale, t.nonfinite, t.rollbacks = ck["lr_scale"], ck["nonfinite"], ck["rollbacks"]
    return ck["lr_scale"]


def apply_changes(trainer, changes: dict[str, list]) -> None:
    """Learning rates, weight decay, the plateau schedule, B (refitted on the new
    interval), alpha and the boundary form take their new values; the other settings are
    read from the config at every step."""
    cfg, optimizer, scheduler = trainer.cfg, trainer.optimizer, trainer.scheduler
    old_lr = changes.get("lr", [cfg.lr])[0]
    old_cs = changes.get("coeff_lr_scale", [cfg.coeff_lr_scale])[0]
    ratios = [cfg.lr / old_lr * (cfg.coeff_lr_scale / old_cs if g.get("name") == "coeffs" else 1.0)
              for g in optimizer.param_groups]
    for g, r in zip(optimizer.param_groups, ratios):
        g["lr"] *= r
        if g.get("name") == "weights":
            g["weight_decay"] = cfg.weight_decay
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.base_lrs = [b * r for b, r in zip(scheduler.base_lrs, ratios)]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.factor, scheduler.patience = cfg.plateau_factor, cfg.plateau_patience
    bound, alpha = fitting.preset(cfg.degree)
    for m in trainer.polys:
        if "bound" in changes:  # coefficients are in t = x / B: a new interval needs a new fit
            m.set_bound(cfg.bound if cfg.bound is not None else bound, method=cfg.fit_method)
        if "alpha" in changes:
            m.alpha = cfg.alpha if cfg.alpha is not None else alpha
        if "boundary_form" in changes:  # the restored state dict brought the checkpoint's form
            m.boundary_form = cfg.boundary_form


def resume(trainer) -> None:
    """Restore the verified checkpoint ``trainer.resume_ck``, apply the changed settings,
    and make OUT_DIR/last.pt this state (rollbacks go there)."""
    file, ck = trainer.resume_path, trainer.resume_ck
    trainer.resume_ck = None
    restore(trainer, ck)
    new = ck["resume_changes"]
    if new:
        apply_changes(trainer, new)
        trainer.log("resuming with changed settings (--allow-changes): " +
                    ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in new.items()))
    trainer.log(f"resumed from {file} at epoch {trainer.epoch}, step {trainer.step}")
    if new or os.path.abspath(file) != os.path.abspath(path(trainer.out, LAST)):
        trainer.save(best=False)
