"""The optimizer and learning-rate schedule of a run: AdamW with parameter groups,
ReduceLROnPlateau / cosine / none."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..nn import PolyActivation
from .config import TrainConfig


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: conv/linear weights (weight decay), BatchNorm parameters and
    biases (no decay), learnable polynomial coefficients (coeff_lr_scale * lr, no decay)."""
    coeffs, no_decay, decay = [], [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(m, PolyActivation):
                coeffs.append(p)
            elif isinstance(m, _BatchNorm) or p.dim() <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "name": "weights"},
              {"params": no_decay, "weight_decay": 0.0, "name": "bn_and_bias"}]
    if coeffs:
        groups.append({"params": coeffs, "weight_decay": 0.0, "lr": cfg.lr * cfg.coeff_lr_scale, "name": "coeffs"})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    return None


def scale_lr(optimizer: torch.optim.Optimizer, scheduler, ratio: float) -> None:
    """Multiply every group's learning rate (and a cosine schedule's base rates) by ``ratio``."""
    for g in optimizer.param_groups:
        g["lr"] *= ratio
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.base_lrs = [b * ratio for b in scheduler.base_lrs]
