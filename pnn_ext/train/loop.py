"""The training loop: objective CE + lambda * sum of boundary terms, clipping
(selective / all / none), per-epoch evaluation, metrics and checkpoints.

Beside it: the checks made before a run writes anything (prerun), the divergence guard
and its rollbacks (guard), resuming with changed settings (resume). Everything a run
could refuse is checked in ``Trainer.__init__`` before ``run()`` removes or writes anything."""
from __future__ import annotations

import dataclasses
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, DistributedSampler

from ..clip import clip_gradients
from ..errors import Terminated
from ..nn import boundary_loss, poly_modules
from . import artifacts, checkpoint, distill, distributed, finetune, optim, prerun
from .artifacts import BEST, LAST
from .calibrate import calibrate_run
from .config import TrainConfig
from .data import Data, augment_batch, load
from .evaluation import evaluate
from .guard import NonFinite, Rollback, rollback, rolled_back_on_state, stop_diverged
from .model_registry import build_model
from .resume import resume

# --recalibrate-epoch is skipped where lambda x the boundary term exceeded this share of the
# cross-entropy in a warm-up epoch (see Trainer._recalibrate).
PENALTY_AT_WORK = 0.05


class Trainer:
    """One run of a TrainConfig. ``run()`` returns the summary it writes to OUT_DIR/summary.json."""

    def __init__(self, cfg: TrainConfig, data: Data | None = None, command: str | None = None):
        self.cfg = cfg
        self.command = command  # how the run was started, for the summary
        self.dist, self.device = distributed.init(cfg.device)
        self.resume_path = prerun.resume_path(cfg, self.device)
        checkpoint.seed_everything(cfg.seed)
        self.data = data if data is not None else load(cfg)
        self.model = build_model(cfg, self.data.in_shape, self.data.layout, self.data.num_classes)
        # A resumed run takes its weights from its own checkpoint; the source is still recorded.
        self.init_info = finetune.load_init(self.model, cfg.init_from, load_weights=not cfg.resume) \
            if cfg.init_from else None
        self.model = self.model.to(self.device)
        self.teacher = distill.load_teacher(cfg.teacher, self.data.spec, self.device) if cfg.teacher else None
        # --bound auto, --fit-weight inputs: B (and fit) per layer (after --init-from's weights) before the
        # optimizer and DDP see the model (a resumed run's come from its checkpoint, the state dict's extra state)
        self.calibration = (calibrate_run(self.model, self.data.train, cfg, self.device)
                            if cfg.bound == "auto" or cfg.fit_weight == "inputs" else None)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.polys = list(poly_modules(self.model))
        self.bn_buffers = [b for m in self.model.modules() if isinstance(m, _BatchNorm)
                           for b in m.buffers(recurse=False)]
        self.bn_float = [b for b in self.bn_buffers if b.is_floating_point()]
        prerun.dry_run(self.model, self.data, cfg, self.device)
        # Read and verified now, applied in run(): a damaged or mismatched checkpoint stops
        # the run before anything is written.
        self.resume_ck = checkpoint.open_for_resume(self.resume_path, cfg, self.data.spec) if cfg.resume else None
        self.changes: list[dict] = []  # settings changed at resumes (--allow-changes), for the summary
        if self.dist.main:
            prerun.check_writable(cfg.out_dir)
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
        self.recalibration: list[dict] | None = None  # --recalibrate-epoch: the B set then (in checkpoints)

    # ------------------------------------------------------------ one step
    def _forward(self, x: torch.Tensor, y: torch.Tensor):
        cfg = self.cfg
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = self.net(x)
        ce = F.cross_entropy(logits.float(), y)
        task = ce
        if self.teacher is not None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16):
                soft = self.teacher(x)
            task = (1 - cfg.distill_weight) * ce + cfg.distill_weight * distill.distill_loss(
                logits, soft, cfg.distill_temperature)
        bl = boundary_loss(self.model).to(self.device)
        loss = task + cfg.lam * bl if cfg.boundary_loss else task
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
                "layer_max_abs_x": range_max.tolist(), "layer_frac_outside_b": (frac_sum / n).tolist(),
                "layer_bound": [m.bound for m in self.polys]}

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
                "config": self.cfg.to_dict(), "data": dataclasses.asdict(self.data.spec), "changes": self.changes,
                "recalibration": self.recalibration}

    def save(self, best: bool) -> None:
        if not self.dist.main:
            return
        state = self.state()
        checkpoint.save_atomic(state, artifacts.path(self.out, LAST))
        if best:
            checkpoint.save_atomic(state, artifacts.path(self.out, BEST))

    # ------------------------------------------------------------ the run
    def log(self, msg: str) -> None:
        if self.dist.main:
            print(msg, flush=True)

    def run(self) -> dict:
        cfg = self.cfg
        if self.dist.main:
            os.makedirs(self.out, exist_ok=True)
        if cfg.resume:
            resume(self)
        else:
            if cfg.overwrite and self.dist.main:
                artifacts.clear(self.out)
            self.save(best=False)  # epoch 0: the base for a rollback before the first epoch ends
        start = time.time()
        try:
            while self.epoch < cfg.epochs and not (cfg.max_steps and self.step >= cfg.max_steps):
                if cfg.recalibrate_after() and self.epoch == cfg.recalibrate_after() and self.recalibration is None:
                    self._recalibrate()
                try:
                    row = self.train_epoch()
                except Rollback as r:
                    rollback(self, r.args[0])
                    continue
                if rolled_back_on_state(self):
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
            stop_diverged(self)  # the accuracy of the last finite weights, not of NaN ones
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

    def _recalibrate(self) -> None:
        """--recalibrate-epoch: B and alpha per layer from the inputs the trained layers see
        now, the polynomials refitted there; saved at once, so a resume or rollback from
        here on finds the new B (and does not measure again).

        Skipped (every B and alpha kept, each record marked) where the boundary loss was
        more than PENALTY_AT_WORK of the cross-entropy in a warm-up epoch: the penalty is then
        holding the inputs in, as at large learning rates, and B = 1.6 q would leave it more
        than it can do (MNIST MLP, degree 22, lr 3e-2: 51 % with B fixed, 11 % when
        recalibrated). On the small CNN at lr 1e-3 it is 0-1 %; at lr 3e-2, and in the cnn1d's
        first epoch, 13 % to 1e12 times the cross-entropy."""
        share = max((self.cfg.lam * r["train_boundary"] / r["train_ce"] for r in self.history
                     if r.get("train_ce")), default=0.0)
        if not share <= PENALTY_AT_WORK:  # a NaN share (a diverging warm-up) skips too
            self.recalibration = [{"bound": m.bound, "alpha": m.alpha, "skipped": "boundary loss at work in the "
                                   "warm-up", "warmup_boundary_share": share} for m in self.polys]
            self.log(f"not recalibrated after epoch {self.epoch}: the boundary loss reached {share:.3g} x the "
                     f"cross-entropy in the warm-up (B stays: the penalty is holding the inputs in)")
            self.save(best=False)
            return
        self.recalibration = calibrate_run(self.model, self.data.train, self.cfg, self.device, recalibrate=True)
        self.log(f"recalibrated after epoch {self.epoch}: B = " +
                 ", ".join(f"{r['bound']:.3g}" for r in self.recalibration) +
                 f" (alpha {self.cfg.recalibrated_alpha():g})")
        self.save(best=False)

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
            bounds=[m.bound for m in self.polys], calibration=self.calibration, recalibration=self.recalibration,
            max_abs_x_over_b=max(  # over the completed epochs, for pnn-sweep's map
                (x / b for r in self.history
                 for x, b in zip(r["layer_max_abs_x"], r.get("layer_bound", [m.bound for m in self.polys]))),
                default=None),
            init_from=self.init_info, replacement=self.progressive.schedule() if self.progressive else None,
            world_size=self.dist.world, command=self.command, environment=artifacts.environment(self.device),
            config=self.cfg.to_dict())

