"""``--bound auto``: B per polynomial layer from the inputs it sees at initialisation;
``--fit-weight inputs``: each layer's fit weighted by those inputs.

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
have been with those B (and fits) given by hand. A forward pre-hook moves each layer's B
(refitting its polynomial, PolyActivation.set_bound) just before the layer
runs, so every layer is measured behind layers that are already calibrated:
an uncalibrated early layer would hand later ones inputs blown up by a
polynomial evaluated outside its interval. A module called more than once per
forward keeps the largest B its calls ask for.

``--fit-weight inputs`` refits each layer (at its B, calibrated or not) by weighted
least squares, the weight being (1 - WEIGHT_FLOOR) x the histogram density of the
inputs measured in the same pass + WEIGHT_FLOOR x the uniform density on [-B, B]: a
degree-22 fit on [-47, 47] cannot resolve ReLU's kink finer than about B / d either
way, but the weighted fit spends its accuracy where the inputs are (about half the
uniform fit's error at |x| < 5 for inputs of spread 2-5) and keeps the rare large
inputs on a bounded curve (the floor), where a smaller B would let them leave the
interval.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import fitting
from ..nn import PolyActivation

MAX_VALUES = 1 << 20  # |x| values per layer the quantile is taken over (a random subset beyond)
FLOOR = 1e-3          # the quantile of a dead layer (all zeros) would make B = 0
WEIGHT_FLOOR = 0.1    # --fit-weight inputs: the share of the weight spread uniformly over [-B, B]
WEIGHT_BINS = 200     # --fit-weight inputs: histogram bins over [-B, B]


def input_weight(x: torch.Tensor, bound: float, floor: float = WEIGHT_FLOOR):
    """w(x) for :func:`pnn_ext.fit`: (1 - floor) x the histogram density of the values
    ``x`` inside [-bound, bound] + floor x the uniform density 1 / (2 bound) (the uniform
    density alone when no value is inside)."""
    edges = np.linspace(-bound, bound, WEIGHT_BINS + 1)
    counts, _ = np.histogram(x.detach().double().cpu().numpy(), edges)
    if counts.sum():
        mix = (1 - floor) * counts / (counts.sum() * (edges[1] - edges[0])) + floor / (2 * bound)
    else:
        mix = np.full(WEIGHT_BINS, 1 / (2 * bound))

    def weight(points: np.ndarray) -> np.ndarray:
        return mix[np.clip(((points + bound) / (2 * bound) * WEIGHT_BINS).astype(np.int64), 0, WEIGHT_BINS - 1)]
    return weight


def calibrate(model: nn.Module, x: torch.Tensor, quantile: float, margin: float, seed: int = 0,
              method: str = fitting.METHOD, auto_bound: bool = True, weighted: bool = False,
              sequential: bool = True, alpha: float | None = None) -> list[dict]:
    """Set every PolyActivation's B in ``model`` from one forward of ``x`` (B = margin x
    quantile / alpha^2; with ``auto_bound`` False each keeps its B), the polynomial
    refitted there by ``method``, weighted by the inputs measured when ``weighted``;
    ``alpha`` (recalibration): each layer's alpha is set to it first, and the rule uses it.
    Returns per layer {"layer", "quantile_abs_x", "max_abs_x", "bound", "alpha", "weighted"}.

    ``sequential`` (initialisation): each layer is moved just before it runs, so later
    layers are measured behind calibrated ones. ``sequential=False`` (recalibrating a
    trained network, whose B fit the inputs its layers see): every layer is measured in
    the one pass with the B it has, then all are moved. Moving an early layer first would
    there hand the later ones its inputs past the new, tighter B blown up by the
    polynomial (1e6 at 1.3 B, degree 22), and through BatchNorm's batch statistics spoil
    every value of the batch: a later layer then measured a quantile of 0.1 and overflowed.
    """
    polys = [(name, m) for name, m in model.named_modules() if isinstance(m, PolyActivation)]
    asked: dict[str, dict] = {}    # per layer, the largest B a call asked for and what it was measured on
    records: dict[str, dict] = {}  # per layer, the B it was moved to
    gen = torch.Generator().manual_seed(seed)

    def move(name: str, module: PolyActivation, bound: float, signed: torch.Tensor, q: float, top: float):
        module.set_bound(bound, method=method, weight=input_weight(signed, bound) if weighted else None)
        if alpha is not None:
            module.alpha = float(alpha)
        records[name] = {"layer": name, "quantile_abs_x": q, "max_abs_x": top, "bound": module.bound,
                         "alpha": module.alpha, "weighted": weighted}

    def hook(name: str):
        def pre(module: PolyActivation, args):
            signed = args[0].detach().flatten().float()
            if signed.numel() > MAX_VALUES:
                signed = signed[torch.randperm(signed.numel(), generator=gen)[:MAX_VALUES].to(signed.device)]
            v = signed.abs()
            q, top = float(torch.quantile(v, quantile)), float(v.max())
            if not (np.isfinite(q) and np.isfinite(top)):
                raise ValueError(f"calibration: the inputs of layer {name!r} are not finite (an earlier layer's "
                                 f"polynomial overflowed, or the network has diverged): no B can be measured")
            rule_alpha = module.alpha if alpha is None else alpha
            bound = margin * max(q, FLOOR) / rule_alpha ** 2 if auto_bound else module.bound
            if name not in asked or bound > asked[name]["bound"]:
                asked[name] = {"module": module, "bound": bound, "signed": signed, "q": q, "top": top}
                if sequential:
                    move(name, **asked[name])
        return pre

    bn = [b for m in model.modules() if isinstance(m, _BatchNorm) for b in m.buffers(recurse=False)]
    saved_bn = [b.clone() for b in bn]
    handles = [m.register_forward_pre_hook(hook(name)) for name, m in polys]
    try:
        _training_forward(model, x)
    finally:
        for h in handles:
            h.remove()
        for b, s in zip(bn, saved_bn):
            b.copy_(s)
    if not sequential:
        for name, a in asked.items():
            move(name, **a)
        _reestimate_batchnorm(model, x)
    return [records[name] for name, _ in polys if name in records]


def _training_forward(model: nn.Module, x: torch.Tensor) -> None:
    """One forward of ``x`` in training mode (BatchNorm on batch statistics), without grad,
    the random generators (dropout) and the model's mode put back afterwards."""
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
            model.train()
            model(x)
    finally:
        model.train(was_training)


def _clamp_to_bound(module: PolyActivation, args):
    return (args[0].clamp(-module.bound, module.bound),)


def _reestimate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """BatchNorm's running statistics from one training-mode forward of ``x`` through the
    moved polynomials. The old ones describe the old polynomials' outputs (at B = 35, degree
    8 is 1.2 above ReLU at 0; at B = 8, 0.3): on digits, whose epoch is 23 steps, the
    evaluation after a recalibration fell from 66 to 57 % while training reached 94 %.

    In this pass each polynomial's inputs are clamped to [-B, B]: B = 1.6 q leaves a few of
    1024 samples past it (the boundary loss pulls them in over the next steps), and one
    batch of 1024 spreads such a value, 1e5 at 1.15 B, through every later BatchNorm's
    batch statistics (the unclamped pass overflowed them on digits' MLP, 2 of 3 seeds). If
    the statistics still come out non-finite, the old ones are kept."""
    bn = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    buffers = [b for m in bn for b in m.buffers(recurse=False)]
    saved = [b.clone() for b in buffers]
    momenta = [m.momentum for m in bn]
    clamps = [m.register_forward_pre_hook(_clamp_to_bound) for m in model.modules() if isinstance(m, PolyActivation)]
    try:
        for m in bn:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: this one batch's statistics
        _training_forward(model, x)
        if not all(bool(torch.isfinite(b).all()) for b in buffers):
            for b, old in zip(buffers, saved):
                b.copy_(old)
    finally:
        for h in clamps:
            h.remove()
        for m, momentum in zip(bn, momenta):
            m.momentum = momentum


def calibrate_run(model: nn.Module, train_set, cfg, device: torch.device, auto_bound: bool | None = None,
                  recalibrate: bool = False) -> list[dict]:
    """pnn-train's calibration (--bound auto, --fit-weight inputs) or, with ``recalibrate``,
    --recalibrate-epoch's (every layer measured, then moved, by cfg.recalibrate_margin and
    cfg.recalibrated_alpha()): cfg.calibrate_samples training samples chosen by the run's seed."""
    xs = train_set.tensors[0]
    pick = torch.randperm(len(xs), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.calibrate_samples]
    try:
        if recalibrate:
            return calibrate(model, xs[pick].to(device), cfg.calibrate_quantile, cfg.recalibrate_margin, cfg.seed,
                             cfg.fit_method, weighted=cfg.fit_weight == "inputs", sequential=False,
                             alpha=cfg.recalibrated_alpha())
        return calibrate(model, xs[pick].to(device), cfg.calibrate_quantile, cfg.calibrate_margin, cfg.seed,
                         cfg.fit_method, auto_bound=cfg.bound == "auto" if auto_bound is None else auto_bound,
                         weighted=cfg.fit_weight == "inputs")
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        # BatchNorm normalises with batch statistics in this pass, as in training: one sample
        # is too few where a channel has one value per sample (BatchNorm1d on features).
        which = ("--recalibrate-epoch" if recalibrate else "--bound auto" if cfg.bound == "auto"
                 else "--fit-weight inputs")
        raise ValueError(f"{which}: the calibration pass on {len(pick)} training sample(s) cannot run: BatchNorm "
                         f"in training mode needs more than one value per channel ({e}); pass "
                         f"--calibrate-samples 2 or more") from None
