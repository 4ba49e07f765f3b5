"""``--bound auto``: B per polynomial layer from the inputs it sees at initialisation.

Rule: B_i = margin x q_i / alpha^2, q_i the ``quantile`` of |x| reaching layer i
in one forward of a few training samples. The boundary penalty, which starts at
alpha * B, then starts (margin / alpha) x q_i out: 2.5 q at degree 2 (alpha 1),
5 q from degree 8 on (alpha 0.5) with the default margin. pnn-sweep's B maps
(docs/stability.md) put the cliff at alpha * B of about 1.2-1.6 q at every
degree; above it degree 2 slowly loses accuracy from B of about 3 q (a wider
interval, a coarser fit), while degrees 8-32 lose nothing up to B of 10-25 q and
are more stable at large learning rates the wider B is. alpha, the preset's own
degree dependence, carries that difference into the rule.

The pass runs in training mode (BatchNorm normalises with batch statistics, as
in training) with BatchNorm's running statistics and the random number
generators put back afterwards, so the run that follows is the run it would
have been with those B given by hand. A forward pre-hook moves each layer's B
(refitting its polynomial, PolyActivation.set_bound) just before the layer
runs, so every layer is measured behind layers that are already calibrated:
an uncalibrated early layer would hand later ones inputs blown up by a
polynomial evaluated outside its interval. A module called more than once per
forward keeps the largest B its calls ask for.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import fitting
from ..nn import PolyActivation

MAX_VALUES = 1 << 20  # |x| values per layer the quantile is taken over (a random subset beyond)
FLOOR = 1e-3          # the quantile of a dead layer (all zeros) would make B = 0


def calibrate(model: nn.Module, x: torch.Tensor, quantile: float, margin: float, seed: int = 0,
              method: str = fitting.METHOD) -> list[dict]:
    """Set every PolyActivation's B in ``model`` from one forward of ``x`` (B = margin x
    quantile / alpha^2, the polynomial refitted there by ``method``); returns per layer
    {"layer", "quantile_abs_x", "max_abs_x", "bound"}."""
    polys = [(name, m) for name, m in model.named_modules() if isinstance(m, PolyActivation)]
    records: dict[str, dict] = {}
    gen = torch.Generator().manual_seed(seed)

    def hook(name: str):
        def pre(module: PolyActivation, args):
            v = args[0].detach().abs().flatten().float()
            if v.numel() > MAX_VALUES:
                v = v[torch.randperm(v.numel(), generator=gen)[:MAX_VALUES].to(v.device)]
            q, top = float(torch.quantile(v, quantile)), float(v.max())
            bound = margin * max(q, FLOOR) / module.alpha ** 2
            seen = records.get(name)
            if seen is None or bound > seen["bound"]:
                module.set_bound(bound, method=method)
                records[name] = {"layer": name, "quantile_abs_x": q, "max_abs_x": top, "bound": module.bound}
        return pre

    bn = [b for m in model.modules() if isinstance(m, _BatchNorm) for b in m.buffers(recurse=False)]
    saved_bn = [b.clone() for b in bn]
    was_training = model.training
    handles = [m.register_forward_pre_hook(hook(name)) for name, m in polys]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.train()
            model(x)
    finally:
        for h in handles:
            h.remove()
        for b, s in zip(bn, saved_bn):
            b.copy_(s)
        model.train(was_training)
    return [records[name] for name, _ in polys if name in records]


def calibrate_run(model: nn.Module, train_set, cfg, device: torch.device) -> list[dict]:
    """pnn-train's calibration: cfg.calibrate_samples training samples chosen by the run's seed."""
    xs = train_set.tensors[0]
    pick = torch.randperm(len(xs), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.calibrate_samples]
    try:
        return calibrate(model, xs[pick].to(device), cfg.calibrate_quantile, cfg.calibrate_margin, cfg.seed,
                         cfg.fit_method)
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        # BatchNorm normalises with batch statistics in this pass, as in training: one sample
        # is too few where a channel has one value per sample (BatchNorm1d on features).
        raise ValueError(f"--bound auto: the calibration pass on {len(pick)} training sample(s) cannot run: "
                         f"BatchNorm in training mode needs more than one value per channel ({e}); pass "
                         f"--calibrate-samples 2 or more") from None
