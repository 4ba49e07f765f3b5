"""The divergence guard's decisions, function by function, on a tiny model and
hand-written checkpoints: which checkpoint a rollback takes, what it restores and
keeps, the learning rate it leaves, when it gives up, and what it records and logs.
(tests/test_loop.py drives the same guard through whole training runs.)"""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pnn_ext.train import checkpoint, guard
from pnn_ext.train.distributed import Dist

LR = 0.01


def _model(fill: float = 0.0) -> nn.Module:
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(fill)
    return m


def _state(model, epoch: int, lr_scale: float, **kw) -> dict:
    """A checkpoint as Trainer.state() writes it (the fields a rollback reads)."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR * lr_scale)
    return {"format": checkpoint.FORMAT, "epoch": epoch, "step": 10 * epoch, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": None, "rng": checkpoint.rng_state(),
            "history": [{"epoch": e} for e in range(epoch)], "best_val": 0.5, "lr_scale": lr_scale,
            "nonfinite": 3, "rollbacks": 0, "changes": [], **kw}


def _save(tmp_path, name: str, model, epoch: int, lr_scale: float = 1.0) -> None:
    checkpoint.save_atomic(_state(model, epoch, lr_scale), str(tmp_path / name))


def _trainer(tmp_path, **kw) -> SimpleNamespace:
    model = _model(7.0)
    logs: list[str] = []
    t = SimpleNamespace(cfg=SimpleNamespace(max_rollbacks=2, rollback_lr_factor=0.5, guard=True, epochs=4),
                        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=LR * 0.25), scheduler=None,
                        out=str(tmp_path), log=logs.append, logs=logs, dist=Dist(), device=torch.device("cpu"),
                        epoch=3, step=33, history=["mine"], best_val=0.9, changes=[], lr_scale=0.25, nonfinite=7,
                        rollbacks=1, divergence=None, stop_test_acc=None, data=SimpleNamespace(test="test-set"))
    t.evaluated = []
    t.evaluate = lambda dataset: (t.evaluated.append(dataset), (0.4, 0.75))[1]
    for k, v in kw.items():
        setattr(t.cfg if hasattr(t.cfg, k) else t, k, v)
    return t


def _poison(model, names=("0.weight",)) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for n in names:
            state[n].view(-1)[0] = float("nan")


# ---------------------------------------------------------------- nonfinite_state

def test_nonfinite_state_names_the_entries_with_nan_or_inf():
    m = _model()
    assert guard.nonfinite_state(m, Dist(), torch.device("cpu")) == []
    _poison(m, ["0.bias"])
    with torch.no_grad():
        m[1].running_var[1] = float("inf")               # a BatchNorm statistic counts too
    assert guard.nonfinite_state(m, Dist(), torch.device("cpu")) == ["0.bias", "1.running_var"]


def test_nonfinite_state_of_another_rank(monkeypatch):
    seen = []

    def all_true(flag, dist):
        seen.append((None if flag.is_meta else bool(flag), flag.device.type, dist.world))
        return torch.tensor(False)
    monkeypatch.setattr(guard.distributed, "all_true", all_true)
    assert guard.nonfinite_state(_model(), Dist(world=2), torch.device("meta")) == ["(on another rank)"]
    assert seen == [(None, "meta", 2)]                   # this rank's flag, on the given device
    assert guard.nonfinite_state(_model(), Dist(world=2), torch.device("cpu")) == ["(on another rank)"]
    assert seen[-1] == (True, "cpu", 2)                  # all finite here
    m = _model()
    _poison(m)
    assert guard.nonfinite_state(m, Dist(world=2), torch.device("cpu")) == ["0.weight"]
    assert seen[-1][0] is False


# ---------------------------------------------------------------- rollback_target

def test_rollback_target_prefers_last_then_best(tmp_path):
    logs = []
    assert guard.rollback_target(str(tmp_path), logs.append) is None          # nothing saved yet
    _save(tmp_path, "best.pt", _model(1.0), epoch=1)
    assert guard.rollback_target(str(tmp_path), logs.append)["epoch"] == 1     # no last.pt: best.pt
    _save(tmp_path, "last.pt", _model(2.0), epoch=2)
    ck = guard.rollback_target(str(tmp_path), logs.append)
    assert ck["epoch"] == 2 and float(ck["model"]["0.weight"][0, 0]) == 2.0
    assert logs == []


def test_rollback_target_skips_a_damaged_or_nonfinite_checkpoint(tmp_path):
    logs = []
    _save(tmp_path, "best.pt", _model(1.0), epoch=1)
    (tmp_path / "last.pt").write_bytes(b"not a zip")
    assert guard.rollback_target(str(tmp_path), logs.append)["epoch"] == 1
    assert len(logs) == 1 and logs[0].startswith("[guard] not rolling back to last.pt: checkpoint ")
    assert "truncated or corrupted" in logs[0] and "\n" not in logs[0]
    bad = _model(2.0)
    _poison(bad)
    _save(tmp_path, "last.pt", bad, epoch=2)
    assert guard.rollback_target(str(tmp_path), logs.append)["epoch"] == 1
    assert logs[1:] == ["[guard] not rolling back to last.pt: it holds non-finite values"]
    _save(tmp_path, "best.pt", bad, epoch=1)
    assert guard.rollback_target(str(tmp_path), logs.append) is None
    assert logs[2:] == ["[guard] not rolling back to last.pt: it holds non-finite values",
                        "[guard] not rolling back to best.pt: it holds non-finite values"]


# ---------------------------------------------------------------- rollback

def test_rollback_restores_the_checkpoint_and_lowers_the_learning_rate(tmp_path):
    _save(tmp_path, "best.pt", _model(2.0), epoch=2, lr_scale=0.5)
    (tmp_path / "last.pt").write_bytes(b"")               # damaged: the rollback says so and takes best.pt
    t = _trainer(tmp_path)
    t.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(t.optimizer, T_max=4)
    guard.rollback(t, {"epoch": 4, "step": 35, "nonfinite_in_a_row": 3})
    # the checkpoint's weights, epoch, step and history; the guard's own counters kept
    assert all(float(v.float().flatten()[0]) == 2.0 for k, v in t.model.state_dict().items()
               if k.endswith(("weight", "bias")))
    assert (t.epoch, t.step, t.history, t.best_val) == (2, 20, [{"epoch": 0}, {"epoch": 1}], 0.5)
    assert (t.rollbacks, t.nonfinite) == (2, 7)
    # lr_scale 0.25 -> 0.125; the checkpoint's rate (0.5 * LR) carries its own scale 0.5
    assert t.lr_scale == 0.125
    assert [g["lr"] for g in t.optimizer.param_groups] == [pytest.approx(LR * 0.125)]
    # a cosine schedule's base rate (the optimizer's LR/4 it started from) scales by the same 1/4
    assert t.scheduler.base_lrs == [pytest.approx(LR * 0.25 * 0.25)]
    assert t.logs[0].startswith("[guard] not rolling back to last.pt: ")
    assert t.logs[1:] == ["[guard] 3 non-finite steps in a row at epoch 4: rolled back to epoch 2, "
                          "learning rate x0.125"]
    assert t.divergence is None


def test_rollback_gives_up_after_max_rollbacks(tmp_path):
    _save(tmp_path, "last.pt", _model(2.0), epoch=2)
    t = _trainer(tmp_path, rollbacks=2)
    with pytest.raises(guard.NonFinite):
        guard.rollback(t, {"epoch": 4, "step": 35, "nonfinite_in_a_row": 3})
    assert t.divergence == {"epoch": 4, "step": 35, "nonfinite_in_a_row": 3,
                            "reason": "non-finite steps persisted after 2 rollbacks"}
    assert (t.epoch, t.rollbacks, t.lr_scale) == (3, 2, 0.25) and t.logs == []
    t = _trainer(tmp_path, rollbacks=2)
    with pytest.raises(guard.NonFinite):
        guard.rollback(t, {"epoch": 4, "step": 35, "why": "bad state"})
    # "why" stays in the record until stop_diverged drops it
    assert t.divergence == {"epoch": 4, "step": 35, "why": "bad state",
                            "reason": "bad state persisted after 2 rollbacks"}


def test_rollback_without_an_intact_checkpoint_gives_up(tmp_path):
    t = _trainer(tmp_path)
    with pytest.raises(guard.NonFinite):
        guard.rollback(t, {"epoch": 1, "step": 2, "nonfinite_in_a_row": 3})
    assert t.divergence == {"epoch": 1, "step": 2, "nonfinite_in_a_row": 3,
                            "reason": "no intact checkpoint with finite values to roll back to"}
    assert t.rollbacks == 1 and t.lr_scale == 0.25


# ---------------------------------------------------------------- rolled_back_on_state

def test_finite_state_at_the_end_of_an_epoch_goes_on(tmp_path):
    t = _trainer(tmp_path)
    assert guard.rolled_back_on_state(t) is False
    assert (t.rollbacks, t.epoch, t.divergence, t.logs) == (1, 3, None, [])


def _spy_devices(monkeypatch):
    """The devices the guard checks model state on."""
    devices = []
    real = guard.nonfinite_state

    def spy(model, dist, device):
        devices.append(device)
        return real(model, dist, device)
    monkeypatch.setattr(guard, "nonfinite_state", spy)
    return devices


def test_nonfinite_state_rolls_back_naming_three_entries(tmp_path, monkeypatch):
    _save(tmp_path, "last.pt", _model(2.0), epoch=2, lr_scale=0.5)
    t = _trainer(tmp_path)
    devices = _spy_devices(monkeypatch)
    _poison(t.model, ["0.weight", "0.bias", "1.weight", "1.bias"])
    assert guard.rolled_back_on_state(t) is True
    assert devices == [t.device]
    assert t.rollbacks == 2 and t.epoch == 2 and t.divergence is None
    assert t.logs == ["[guard] non-finite model state (0.weight, 0.bias, 1.weight) at epoch 4: rolled back to "
                      "epoch 2, learning rate x0.125"]
    t = _trainer(tmp_path, rollbacks=2)
    _poison(t.model)
    with pytest.raises(guard.NonFinite):
        guard.rolled_back_on_state(t)
    assert t.divergence == {"epoch": 4, "step": 33, "nonfinite_in_a_row": 0, "why": "non-finite model state (0.weight)",
                            "reason": "non-finite model state (0.weight) persisted after 2 rollbacks"}


def test_nonfinite_state_with_the_guard_off_stops(tmp_path):
    _save(tmp_path, "last.pt", _model(2.0), epoch=2)
    t = _trainer(tmp_path, guard=False)
    _poison(t.model, ["1.bias"])
    with pytest.raises(guard.NonFinite):
        guard.rolled_back_on_state(t)
    assert t.divergence == {"epoch": 4, "step": 33, "nonfinite_in_a_row": 0,
                            "reason": "non-finite model state (1.bias) (guard off)"}
    assert t.rollbacks == 1 and t.epoch == 3


# ---------------------------------------------------------------- stop_diverged

def test_stop_diverged_goes_back_to_the_last_finite_weights(tmp_path, monkeypatch):
    _save(tmp_path, "best.pt", _model(2.0), epoch=2)
    (tmp_path / "last.pt").write_bytes(b"")
    t = _trainer(tmp_path, divergence={"epoch": 4, "step": 35, "reason": "it broke", "why": "x"})
    _poison(t.model)
    devices = _spy_devices(monkeypatch)
    guard.stop_diverged(t)
    assert devices == [t.device, t.device]
    assert float(t.model[0].weight[0, 0]) == 2.0 and not checkpoint.nonfinite_entries(t.model.state_dict())
    assert t.stop_test_acc == 0.75 and t.evaluated == ["test-set"]
    assert t.divergence == {"epoch": 4, "step": 35, "reason": "it broke"}
    assert t.logs[0].startswith("[guard] not rolling back to last.pt: ")
    assert t.logs[1:] == ["[diverged] at epoch 4, step 35: it broke"]


def test_stop_diverged_keeps_finite_weights_and_records_no_accuracy_without_them(tmp_path):
    _save(tmp_path, "last.pt", _model(2.0), epoch=2)
    t = _trainer(tmp_path, divergence={"epoch": 1, "step": 2, "reason": "r"})
    guard.stop_diverged(t)                               # its own weights are finite: kept
    assert float(t.model[0].weight[0, 0]) == 7.0 and t.stop_test_acc == 0.75
    t = _trainer(tmp_path / "empty", divergence={"epoch": 1, "step": 2, "reason": "r"})
    _poison(t.model)
    guard.stop_diverged(t)                               # nothing to go back to: no accuracy of NaN weights
    assert t.stop_test_acc is None and t.evaluated == [] and torch.isnan(t.model[0].weight[0, 0])
    assert t.logs == ["[diverged] at epoch 1, step 2: r"]
