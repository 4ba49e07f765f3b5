"""The training loop: objective CE + lambda * sum of boundary terms, clipping
(selective / all / none), the divergence guard, per-epoch evaluation, metrics,
checkpoints and exact resume.

Everything a run could refuse is checked in ``Trainer.__init__`` (settings, data, the
model, one forward pass on a training batch, the checkpoint to resume, the output
directory) before ``run()`` removes or writes anything.

Over 400 lines: the step, the epoch, the guard's rollbacks, the checkpoints and the
checks before the run all work on the Trainer's state; apart, they would pass it around."""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, DistributedSampler

from .. import fitting
from ..clip import clip_gradients
from ..errors import Terminated, one_line
from ..nn import boundary_loss, poly_modules
from . import artifacts, checkpoint, distributed, finetune, optim
from .artifacts import BEST, LAST
from .calibrate import calibrate_run
from .config import TrainConfig
from .data import Data, augment_batch, load
from .evaluation import evaluate
from .models import build_model


class NonFinite(Exception):
    """A step with a non-finite loss, gradient or BatchNorm statistic and the guard off, or
    a divergence the guard could not repair."""


class Rollback(Exception):
    """guard_patience non-finite steps in a row: go back to the last checkpoint."""


class Trainer:
    """One run of a TrainConfig. ``run()`` returns the summary it writes to OUT_DIR/summary.json."""

    def __init__(self, cfg: TrainConfig, data: Data | None = None, command: str | None = None):
        self.cfg = cfg
        self.command = command  # how the run was started, for the summary
        self.dist, self.device = distributed.init(cfg.device)
        # Checked before the DDP constructor (a collective): no rank can have written yet.
        last = artifacts.path(cfg.out_dir, LAST)
        if not cfg.resume and not cfg.overwrite and os.path.exists(last):
            raise FileExistsError(f"{cfg.out_dir} already holds a run ({last}): pass --resume last to continue it "
                                  f"or --overwrite to start over")
        self.resume_path = (last if cfg.resume == "last" else cfg.resume) if cfg.resume else ""
        if self.resume_path and not os.path.isfile(self.resume_path):
            raise checkpoint.CheckpointError(f"checkpoint {self.resume_path!r} to resume does not exist")
        if self.device.type != "cuda" and (cfg.bf16 or cfg.channels_last):
            raise ValueError("bf16 and channels_last are for CUDA runs; this run is on the CPU")
        checkpoint.seed_everything(cfg.seed)
        self.data = data if data is not None else load(cfg)
        self.model = build_model(cfg, self.data.in_shape, self.data.layout, self.data.num_classes)
        # A resumed run takes its weights from its own checkpoint; the source is still recorded.
        self.init_info = finetune.load_init(self.model, cfg.init_from, load_weights=not cfg.resume) \
            if cfg.init_from else None
        self.model = self.model.to(self.device)
        # --bound auto: B per layer (after --init-from's weights) before the optimizer and DDP see the
        # model (a resumed run's B then come from its checkpoint, the state dict's extra state)
        self.calibration = (calibrate_run(self.model, self.data.train, cfg, self.device) if cfg.bound == "auto"
                            else None)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.polys = list(poly_modules(self.model))
        self.bn_buffers = [b for m in self.model.modules() if isinstance(m, _BatchNorm)
                           for b in m.buffers(recurse=False)]
        self.bn_float = [b for b in self.bn_buffers if b.is_floating_point()]
        self._dry_run()
        # Read and verified now, applied in run(): a damaged or mismatched checkpoint stops
        # the run before anything is written.
        self.resume_ck = checkpoint.open_for_resume(self.resume_path, cfg, self.data.spec) if cfg.resume else None
        self.changes: list[dict] = []  # settings changed at resumes (--allow-changes), for the summary
        if self.dist.main:
            _check_writable(cfg.out_dir)
        self.net: nn.Module = self.model  # what forward calls (DDP wrapper when distributed)
        if self.dist.enabled:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = optim.make_optimizer(self.model, cfg)
        self.scheduler = optim.make_scheduler(self.optimizer, cfg)
        self.sampler = DistributedSampler(self.data.train, num_replicas=self.dist.world, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed)
        # Dropping an incomplete last batch keeps BatchNorm away from a batch of one.
        self.train_loader = DataLoader(self.data.train, batch_size=cfg.batch_size, sampler=self.sampler,
                                       num_workers=cfg.workers, drop_last=len(self.sampler) > cfg.batch_size,
                                       pin_memory=self.device.type == "cuda")
        self.progressive = finetune.Progressive(self.model, cfg.replace_epochs, len(self.train_loader)) \
            if cfg.replace == "progressive" else None
        self.out = cfg.out_dir
        self.epoch = 0          # completed epochs
        self.step = 0           # optimizer steps taken
        self.history: list[dict] = []
        self.nonfinite = 0      # steps skipped or stopped on
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.divergence: dict | None = None
        self.best_val = -1.0
        self.stop_test_acc: float | None = None
        self.interrupted_by: str | None = None

    def _dry_run(self) -> None:
        """One forward pass in training mode on the first training batch, undone (BatchNorm
        statistics and the RNG put back): a batch too small for BatchNorm, an image too
        small for the model's pooling or a degree the op refuses stops the run here."""
        n = min(self.cfg.batch_size, len(self.data.train))
        x, y = self.data.train[:n]
        saved = {k: v.clone() for k, v in self.model.state_dict().items() if torch.is_tensor(v)}
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                self.model.train()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.bf16):
                    logits = self.model(x.to(self.device))
                F.cross_entropy(logits.float(), y.to(self.device))
        except (RuntimeError, ValueError, IndexError) as e:
            raise ValueError(f"the model cannot train on this data (one forward pass on a training batch of {n}, "
                             f"batch_size {self.cfg.batch_size}): {one_line(e)}") from None
        finally:
            self.model.load_state_dict(saved, strict=False)

    # ------------------------------------------------------------ one step
    def _forward(self, x: torch.Tensor, y: torch.Tensor):
        cfg = self.cfg
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = self.net(x)
        ce = F.cross_entropy(logits.float(), y)
        bl = boundary_loss(self.model).to(self.device)
        loss = ce + cfg.lam * bl if cfg.boundary_loss else ce
        return logits, ce, bl, loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> list[float] | None:
        """Forward, backward, clip, check, update. Returns [loss, ce, boundary, correct]
        on the host (one host sync per step, shared with the finiteness check), or None
        when skipped."""
        cfg = self.cfg
        # BatchNorm updates its running statistics in the forward; a skipped step
        # must not leave NaN there, so they are kept aside (a few KB) and put back.
        saved = [b.clone() for b in self.bn_buffers]
        logits, ce, bl, loss = self._forward(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        n_other, n_bn = clip_gradients(self.model, cfg.clip, cfg.clip_norm, self.device)
        ok = torch.isfinite(loss) & torch.isfinite(n_other) & torch.isfinite(n_bn)
        if self.bn_float:  # the statistics this forward updated: NaN or inf there is a bad step too
            ok = ok & torch.cat([b.reshape(-1) for b in self.bn_float]).isfinite().all()
        ok = distributed.all_true(ok, self.dist)
        correct = (logits.argmax(1) == y).sum()
        row = torch.stack([ok.float(), loss.detach().float(), ce.detach(), bl.detach().float(), correct.float()])
        vals = row.tolist()
        if not vals[0]:
            self.optimizer.zero_grad(set_to_none=True)
            if saved:
                torch._foreach_copy_(self.bn_buffers, saved)
            return None
        self.optimizer.step()
        self.step += 1
        return vals[1:]

    # ------------------------------------------------------------ epochs
    def train_epoch(self) -> dict:
        cfg, epoch = self.cfg, self.epoch
        self.net.train()
        self.sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + self.dist.rank)
        sums = [0.0] * 4  # loss, ce, boundary, correct: host values train_step already synced
        seen, in_a_row, start = 0, 0, time.time()
        range_max = torch.zeros(len(self.polys), device=self.device)
        frac_sum = torch.zeros(len(self.polys), device=self.device)
        batches = 0
        bar = artifacts.progress_bar(self.train_loader, enabled=cfg.progress and self.dist.main,
                        desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for x, y in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.data.augment:
                x = augment_batch(x, gen)
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.progressive is not None:
                for name in self.progressive.apply(self.step):
                    self.log(f"[replace] step {self.step}: activation {name} is polynomial now")
            out = self.train_step(x, y)
            if out is None:
                self.nonfinite += 1
                in_a_row += 1
                where = {"epoch": epoch + 1, "step": self.step, "nonfinite_in_a_row": in_a_row}
                if not cfg.guard:
                    self.divergence = {**where, "reason": "non-finite loss, gradient or BatchNorm statistic "
                                                          "(guard off)"}
                    raise NonFinite()
                if in_a_row >= cfg.guard_patience:
                    raise Rollback(where)
                continue
            in_a_row = 0
            sums = [a + b for a, b in zip(sums, out)]
            seen += len(y)
            batches += 1
            if self.polys:
                stats = torch.stack([m.range_stats if m.range_stats is not None else
                                     torch.zeros(2, device=self.device) for m in self.polys]).float()
                range_max = torch.maximum(range_max, stats[:, 0])
                frac_sum += stats[:, 1]
            if bar is not self.train_loader:
                bar.set_postfix(loss=f"{sums[0] / batches:.4f}", ce=f"{sums[1] / batches:.4f}",
                                boundary=f"{sums[2] / batches:.2e}", acc=f"{100 * sums[3] / seen:.2f}%", refresh=False)
            if cfg.max_steps and self.step >= cfg.max_steps:
                break
        # Over all ranks: means over every process's batches, ranges over every shard.
        totals = distributed.reduce_(torch.tensor([*sums, seen, batches], dtype=torch.float64, device=self.device),
                                     self.dist).tolist()
        distributed.reduce_(range_max, self.dist, "max")
        distributed.reduce_(frac_sum, self.dist)
        s, seen, n = totals[:4], totals[4], max(totals[5], 1)
        return {"train_loss": s[0] / n, "train_ce": s[1] / n, "train_boundary": s[2] / n,
                "train_acc": s[3] / max(seen, 1), "epoch_time_s": time.time() - start,
                "layer_max_abs_x": range_max.tolist(), "layer_frac_outside_b": (frac_sum / n).tolist()}

    def evaluate(self, dataset) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) in eval mode; every rank evaluates the whole set."""
        cfg = self.cfg
        return evaluate(self.model, dataset, self.device, max(cfg.batch_size, 256), cfg.bf16, cfg.channels_last)

    # ------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"format": checkpoint.FORMAT, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "rng": checkpoint.rng_state(), "history": self.history, "best_val": self.best_val,
                "lr_scale": self.lr_scale, "nonfinite": self.nonfinite, "rollbacks": self.rollbacks,
                "config": self.cfg.to_dict(), "data": dataclasses.asdict(self.data.spec), "changes": self.changes}

    def nonfinite_state(self) -> list[str]:
        """Entries of the model's state (parameters and buffers, BatchNorm statistics
        included) that hold NaN or inf, on any rank; [] when all are finite."""
        bad = checkpoint.nonfinite_entries(self.model.state_dict())
        if distributed.all_true(torch.tensor(not bad, device=self.device), self.dist):
            return []
        return bad or ["(on another rank)"]

    def save(self, best: bool) -> None:
        if not self.dist.main:
            return
        state = self.state()
        checkpoint.save_atomic(state, artifacts.path(self.out, LAST))
        if best:
            checkpoint.save_atomic(state, artifacts.path(self.out, BEST))

    def restore(self, ck: dict | str, counters: bool = True) -> float:
        """Load model, optimizer, scheduler, RNG states, epoch, step and history (and
        the guard's counters when ``counters``) from a checkpoint (a verified dict or a
        path); returns the checkpoint's lr_scale."""
        ck = checkpoint.restore(ck, self.cfg, self.model, self.optimizer, self.scheduler)
        self.epoch, self.step, self.history = ck["epoch"], ck["step"], list(ck["history"])
        self.best_val = ck["best_val"]
        self.changes = list(ck.get("changes", []))
        if counters:
            self.lr_scale, self.nonfinite, self.rollbacks = ck["lr_scale"], ck["nonfinite"], ck["rollbacks"]
        return ck["lr_scale"]

    def _apply_changes(self, changes: dict[str, list]) -> None:
        """Make settings changed at a resume (--allow-changes) take effect where the
        checkpoint holds their old values: learning rates, weight decay, the plateau
        schedule, B (refitted on the new interval), alpha and the boundary form. The others
        are read from the config at every step."""
        cfg = self.cfg
        old_lr = changes.get("lr", [cfg.lr])[0]
        old_cs = changes.get("coeff_lr_scale", [cfg.coeff_lr_scale])[0]
        ratios = [cfg.lr / old_lr * (cfg.coeff_lr_scale / old_cs if g.get("name") == "coeffs" else 1.0)
                  for g in self.optimizer.param_groups]
        for g, r in zip(self.optimizer.param_groups, ratios):
            g["lr"] *= r
            if g.get("name") == "weights":
                g["weight_decay"] = cfg.weight_decay
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.scheduler.base_lrs = [b * r for b, r in zip(self.scheduler.base_lrs, ratios)]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.factor, self.scheduler.patience = cfg.plateau_factor, cfg.plateau_patience
        bound, alpha = fitting.preset(cfg.degree)
        for m in self.polys:
            if "bound" in changes:  # coefficients are in t = x / B: a new interval needs a new fit
                m.set_bound(cfg.bound if cfg.bound is not None else bound, method=cfg.fit_method)
            if "alpha" in changes:
                m.alpha = cfg.alpha if cfg.alpha is not None else alpha
            if "boundary_form" in changes:  # the restored state dict brought the checkpoint's form
                m.boundary_form = cfg.boundary_form

    def _rollback_target(self) -> dict | None:
        """The newest intact checkpoint of this run with finite model state (last.pt,
        else best.pt), or None: a rollback never loads a damaged or non-finite one."""
        for name in (LAST, BEST):
            file = artifacts.path(self.out, name)
            if not os.path.isfile(file):
                continue
            try:
                ck = checkpoint.load(file)
            except checkpoint.CheckpointError as e:
                self.log(f"[guard] not rolling back to {name}: {one_line(e)}")
                continue
            if checkpoint.nonfinite_entries(ck["model"]):
                self.log(f"[guard] not rolling back to {name}: it holds non-finite values")
                continue
            return ck
        return None

    def _rollback(self, where: dict) -> None:
        if self.rollbacks >= self.cfg.max_rollbacks:
            self.divergence = {**where, "reason": f"{where.pop('why', 'non-finite steps')} persisted after "
                                                  f"{self.rollbacks} rollbacks"}
            raise NonFinite()
        target = self._rollback_target()  # every rank reads the same files
        if target is None:
            self.divergence = {**where, "reason": "no intact checkpoint with finite values to roll back to"}
            raise NonFinite()
        why = where.pop("why", f"{where.get('nonfinite_in_a_row')} non-finite steps in a row")
        self.rollbacks += 1
        saved_scale = self.restore(target, counters=False)
        self.lr_scale *= self.cfg.rollback_lr_factor
        # the checkpoint's learning rate already carries its own scale
        optim.scale_lr(self.optimizer, self.scheduler, self.lr_scale / saved_scale)
        self.log(f"[guard] {why} at epoch {where['epoch']}: rolled back to epoch {self.epoch}, "
                 f"learning rate x{self.lr_scale:g}")

    # ------------------------------------------------------------ the run
    def log(self, msg: str) -> None:
        if self.dist.main:
            print(msg, flush=True)

    def run(self) -> dict:
        cfg = self.cfg
        last = artifacts.path(self.out, LAST)
        if self.dist.main:
            os.makedirs(self.out, exist_ok=True)
        if cfg.resume:
            path, ck = self.resume_path, self.resume_ck
            self.resume_ck = None
            self.restore(ck)
            new = ck["resume_changes"]
            if new:
                self._apply_changes(new)
                self.log("resuming with changed settings (--allow-changes): " +
                         ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in new.items()))
            self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")
            if new or os.path.abspath(path) != os.path.abspath(last):
                self.save(best=False)  # rollbacks go to OUT_DIR/last.pt: it must be this state
        else:
            if cfg.overwrite and self.dist.main:
                artifacts.clear(self.out)
            self.save(best=False)  # epoch 0: the base for a rollback before the first epoch ends
        start, status = time.time(), "running"
        try:
            while self.epoch < cfg.epochs and not (cfg.max_steps and self.step >= cfg.max_steps):
                try:
                    row = self.train_epoch()
                except Rollback as r:
                    self._rollback(r.args[0])
                    continue
                bad = self.nonfinite_state()
                if bad:  # parameters or buffers went NaN/inf although every step looked finite
                    where = {"epoch": self.epoch + 1, "step": self.step, "nonfinite_in_a_row": 0,
                             "why": f"non-finite model state ({', '.join(bad[:3])})"}
                    if not cfg.guard:
                        self.divergence = {**{k: v for k, v in where.items() if k != "why"},
                                           "reason": where["why"] + " (guard off)"}
                        raise NonFinite()
                    self._rollback(where)
                    continue
                self.epoch += 1
                row.update(self._evaluate_epoch(row))
                self.history.append(row)
                improved = row["val_acc"] > self.best_val if math.isfinite(row["val_acc"]) else True
                # best.pt is a PNN's: epochs that ended with a stand-in activation do not compete.
                improved = improved and (self.progressive is None or self.progressive.done())
                if improved:
                    self.best_val = row["val_acc"] if math.isfinite(row["val_acc"]) else self.best_val
                self.save(best=improved)
                if self.dist.main:
                    artifacts.write_metrics(self.out, self.history)
                self.log(artifacts.epoch_line(row, cfg.epochs))
            status = "completed"
        except NonFinite:
            status = "diverged"
            self.divergence.pop("why", None)
            if self.nonfinite_state():  # report the accuracy of the last finite weights, not of NaN ones
                target = self._rollback_target()
                if target is not None:
                    self.model.load_state_dict(target["model"])
            self.stop_test_acc = self.evaluate(self.data.test)[1] if not self.nonfinite_state() else None
            self.log(f"[diverged] at epoch {self.divergence['epoch']}, step {self.divergence['step']}: "
                     f"{self.divergence['reason']}")
        except KeyboardInterrupt as e:
            status = "interrupted"
            self.interrupted_by = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            summary = self._summary(status, time.time() - start)
            if self.dist.main:
                artifacts.write_summary(self.out, summary)
        if self.dist.main and cfg.plots:
            artifacts.write_plots(self.out, self.history, self.polys)
        return summary

    def _evaluate_epoch(self, row: dict) -> dict:
        val_loss, val_acc, test_loss, test_acc = distributed.from_rank0(
            [*self.evaluate(self.data.val), *self.evaluate(self.data.test)], self.dist, self.device)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss if math.isfinite(val_loss) else row["train_loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        return {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                "nonfinite_steps": self.nonfinite}

    def _summary(self, status: str, seconds: float) -> dict:
        return artifacts.summary(
            status, self.history, diverged_at=self.divergence,
            test_acc_at_stop=self.stop_test_acc,  # accuracy of the last finite weights, where a diverged run stopped
            nonfinite_steps=self.nonfinite, rollbacks=self.rollbacks, lr_scale=self.lr_scale,
            interrupted_by=self.interrupted_by, resumed_with_changes=self.changes,
            epochs_completed=self.epoch, steps=self.step, total_time_s=seconds,
            parameters=sum(p.numel() for p in self.model.parameters()), poly_layers=len(self.polys),
            bounds=[m.bound for m in self.polys], calibration=self.calibration,
            max_abs_x_over_b=max(  # over the completed epochs, for pnn-sweep's map
                (x / m.bound for r in self.history for x, m in zip(r["layer_max_abs_x"], self.polys)), default=None),
            init_from=self.init_info, replacement=self.progressive.schedule() if self.progressive else None,
            world_size=self.dist.world, command=self.command, environment=artifacts.environment(self.device),
            config=self.cfg.to_dict())


def _check_writable(out_dir: str) -> None:
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
