"""The divergence guard: a step with a non-finite loss, gradient or BatchNorm statistic
is skipped; ``guard_patience`` of them in a row, or non-finite model state at the end of
an epoch, roll the run back to its newest intact, finite checkpoint with a smaller
learning rate; ``max_rollbacks`` rollbacks (or none possible) end it as diverged."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import one_line
from . import artifacts, checkpoint, distributed, optim
from .artifacts import BEST, LAST
from .resume import restore


class NonFinite(Exception):
    """A step with a non-finite loss, gradient or BatchNorm statistic and the guard off, or
    a divergence the guard could not repair."""


class Rollback(Exception):
    """guard_patience non-finite steps in a row: go back to the last checkpoint."""


def nonfinite_state(model: nn.Module, dist, device: torch.device) -> list[str]:
    """Entries of the model's state (parameters and buffers, BatchNorm statistics
    included) that hold NaN or inf, on any rank; [] when all are finite."""
    bad = checkpoint.nonfinite_entries(model.state_dict())
    if distributed.all_true(torch.tensor(not bad, device=device), dist):
        return []
    return bad or ["(on another rank)"]


def rollback_target(out_dir: str, log) -> dict | None:
    """The newest intact checkpoint of the run in ``out_dir`` with finite model state
    (last.pt, else best.pt), or None: a rollback never loads a damaged or non-finite one."""
    for name in (LAST, BEST):
        file = artifacts.path(out_dir, name)
        if not os.path.isfile(file):
            continue
        try:
            ck = checkpoint.load(file)
        except checkpoint.CheckpointError as e:
            log(f"[guard] not rolling back to {name}: {one_line(e)}")
            continue
        if checkpoint.nonfinite_entries(ck["model"]):
            log(f"[guard] not rolling back to {name}: it holds non-finite values")
            continue
        return ck
    return None


def rollback(trainer, where: dict) -> None:
    """Roll ``trainer`` back (the guard's counters kept) and scale its learning rate by
    rollback_lr_factor, or raise NonFinite with ``trainer.divergence`` set."""
    if trainer.rollbacks >= trainer.cfg.max_rollbacks:
        trainer.divergence = {**where, "reason": f"{where.pop('why', 'non-finite steps')} persisted after "
                                                 f"{trainer.rollbacks} rollbacks"}
        raise NonFinite()
    target = rollback_target(trainer.out, trainer.log)  # every rank reads the same files
    if target is None:
        trainer.divergence = {**where, "reason": "no intact checkpoint with finite values to roll back to"}
        raise NonFinite()
    why = where.pop("why", f"{where.get('nonfinite_in_a_row')} non-finite steps in a row")
    trainer.rollbacks += 1
    saved_scale = restore(trainer, target, counters=False)
    trainer.lr_scale *= trainer.cfg.rollback_lr_factor
    # the checkpoint's learning rate already carries its own scale
    optim.scale_lr(trainer.optimizer, trainer.scheduler, trainer.lr_scale / saved_scale)
    trainer.log(f"[guard] {why} at epoch {where['epoch']}: rolled back to epoch {trainer.epoch}, "
                f"learning rate x{trainer.lr_scale:g}")


def rolled_back_on_state(trainer) -> bool:
    """At the end of an epoch whose every step looked finite: True when parameters or
    buffers went NaN/inf anyway and the run was rolled back; with the guard off, NonFinite."""
    bad = nonfinite_state(trainer.model, trainer.dist, trainer.device)
    if not bad:
        return False
    where = {"epoch": trainer.epoch + 1, "step": trainer.step, "nonfinite_in_a_row": 0}
    why = f"non-finite model state ({', '.join(bad[:3])})"
    if not trainer.cfg.guard:
        trainer.divergence = {**where, "reason": why + " (guard off)"}
        raise NonFinite()
    rollback(trainer, {**where, "why": why})
    return True


def stop_diverged(trainer) -> None:
    """A run that diverged: its model goes back to the last finite weights (when its own
    are not), whose test accuracy is recorded, and the divergence is logged."""
    trainer.divergence.pop("why", None)
    if nonfinite_state(trainer.model, trainer.dist, trainer.device):
        target = rollback_target(trainer.out, trainer.log)
        if target is not None:
            trainer.model.load_state_dict(target["model"])
    if not nonfinite_state(trainer.model, trainer.dist, trainer.device):
        trainer.stop_test_acc = trainer.evaluate(trainer.data.test)[1]
    d = trainer.divergence
    trainer.log(f"[diverged] at epoch {d['epoch']}, step {d['step']}: {d['reason']}")
