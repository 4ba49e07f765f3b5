"""The training loop: short runs that learn, reproducibility, learnable coefficients,
and the divergence guard (skip, roll back, give up, guard off)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.loop import Trainer
from testing import QUICK, assert_same_weights, run, weights


@pytest.mark.parametrize("kind", ["relu", 2, 22])
def test_short_digits_run_learns(tmp_path, kind):
    act = {"activation": "relu"} if kind == "relu" else {"degree": kind}
    summary, trainer = run(tmp_path, epochs=8, plots=True, **act)
    assert summary["status"] == "completed" and not summary["diverged"]
    assert summary["final_test_acc"] > 0.85, summary["final_test_acc"]
    assert summary["poly_layers"] == (0 if kind == "relu" else 3)
    out = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    if kind != "relu":
        assert (out / "activation.png").is_file() and (out / "ranges.png").is_file()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("epoch,step,lr")
    saved = json.loads((out / "summary.json").read_text())
    assert saved["config"]["degree"] == trainer.cfg.degree and saved["epoch_time_s"] > 0


def test_seeded_runs_are_reproducible_on_cpu(tmp_path):
    _, a = run(tmp_path, "a", dropout=0.2, seed=3)
    _, b = run(tmp_path, "b", dropout=0.2, seed=3)
    _, c = run(tmp_path, "c", dropout=0.2, seed=4)
    assert_same_weights(weights(a), weights(b))
    assert not torch.equal(weights(a)["0.weight"], weights(c)["0.weight"])


def test_mlp_and_learnable_coefficients_train(tmp_path):
    summary, trainer = run(tmp_path, model="mlp", hidden="64,32", learnable=True, degree=8, epochs=3,
                           act_position="after-bn")
    assert summary["status"] == "completed"
    coeffs = [m.coeffs for m in trainer.polys]
    fitted = pnn_ext.fit("relu", 8).coeffs
    assert all(isinstance(c, nn.Parameter) for c in coeffs)
    assert any(not np.allclose(c.detach().numpy(), fitted, atol=1e-6) for c in coeffs)  # they moved
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["coeffs"]["lr"] == pytest.approx(0.1 * trainer.cfg.lr) and groups["coeffs"]["weight_decay"] == 0


# ---------------------------------------------------------------- divergence guard

def _poison(trainer, calls):
    """Make the first conv output NaN on the given training forward calls (1-based): the
    training steps' (a calibration pass, also in training mode, runs without grad)."""
    count = {"n": 0}

    def hook(module, args, out):
        if module.training and torch.is_grad_enabled():
            count["n"] += 1
            if count["n"] in calls:
                return out * float("nan")
        return out
    trainer.model[0].register_forward_hook(hook)
    return count


def test_guard_skips_an_injected_nan_step(tmp_path):
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "g")})
    trainer = Trainer(cfg)
    _poison(trainer, {3})
    summary = trainer.run()
    assert summary["status"] == "completed" and not summary["diverged"]
    assert summary["nonfinite_steps"] == 1 and summary["rollbacks"] == 0
    per_epoch = len(trainer.train_loader)
    assert summary["steps"] == 2 * per_epoch - 1          # the poisoned step was skipped
    for v in trainer.model.state_dict().values():          # BatchNorm statistics included
        if torch.is_tensor(v) and v.is_floating_point():
            assert torch.isfinite(v).all()


def test_guard_rolls_back_then_declares_divergence(tmp_path):
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "g"), "guard_patience": 2, "max_rollbacks": 2})
    trainer = Trainer(cfg)
    _poison(trainer, set(range(1, 10_000)))                # every step from the first
    summary = trainer.run()
    assert summary["status"] == "diverged" and summary["diverged"]
    assert summary["rollbacks"] == 2 and summary["nonfinite_steps"] == 6
    assert summary["lr_scale"] == pytest.approx(0.25)      # two rollbacks at x0.5 before giving up
    assert "rollbacks" in summary["diverged_at"]["reason"] and "why" not in summary["diverged_at"]


def test_guard_rollback_recovers_with_lower_lr(tmp_path):
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "g"), "guard_patience": 2, "epochs": 2})
    trainer = Trainer(cfg)
    per_epoch = len(trainer.train_loader)
    _poison(trainer, {per_epoch + 2, per_epoch + 3})        # two in a row in epoch 2
    summary = trainer.run()
    assert summary["status"] == "completed" and summary["rollbacks"] == 1
    assert summary["lr_scale"] == 0.5 and summary["epochs_completed"] == 2
    assert trainer.optimizer.param_groups[0]["lr"] <= 0.5 * cfg.lr


def test_guard_off_stops_and_records_divergence(tmp_path):
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "g"), "guard": False})
    trainer = Trainer(cfg)
    per_epoch = len(trainer.train_loader)
    _poison(trainer, {per_epoch + 4})
    summary = trainer.run()
    assert summary["status"] == "diverged"
    assert summary["diverged_at"]["epoch"] == 2 and summary["diverged_at"]["step"] == per_epoch + 3
    assert summary["epochs_completed"] == 1 and summary["test_acc_at_stop"] > 0.3   # not the NaN forward's BN
    for v in trainer.model.state_dict().values():
        if torch.is_tensor(v) and v.is_floating_point():
            assert torch.isfinite(v).all()
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["diverged"] is True


def test_guard_off_restores_the_last_finite_weights(tmp_path):
    """Weights gone NaN in epoch 2 with the guard off: the run stops diverged with the
    weights of its last finite checkpoint (epoch 1's), whose test accuracy it records."""
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "g"), "guard": False})
    trainer = Trainer(cfg)
    per_epoch = len(trainer.train_loader)
    count = {"n": 0}

    def after_step(optimizer, args, kwargs):
        count["n"] += 1
        if count["n"] == per_epoch + 2:
            with torch.no_grad():
                trainer.model[0].weight.fill_(float("nan"))
    trainer.optimizer.register_step_post_hook(after_step)
    summary = trainer.run()
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 1
    assert summary["test_acc_at_stop"] > 0.3
    saved = torch.load(tmp_path / "g" / "last.pt", weights_only=False)["model"]
    for k, v in trainer.model.state_dict().items():
        if torch.is_tensor(v) and v.is_floating_point():
            assert torch.equal(v, saved[k]), k
