"""The checkpoint file itself (pnn_ext.train.checkpoint), function by function on tiny
hand-made checkpoints: the digest (a stable format), every refusal of load and
open_for_resume with its message, restore, and the random-number states.
(tests/test_checkpoint.py covers the same module through training runs.)"""
import hashlib
import os
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from pnn_ext.train import checkpoint
from pnn_ext.train.checkpoint import CheckpointError
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.data import DataSpec

SPEC = DataSpec("digits", "image", (1, 8, 8), 10)


def _cfg(**kw) -> TrainConfig:
    if kw.get("allow_changes"):
        kw["resume"] = "last"
    return TrainConfig(**{"dataset": "digits", "degree": 2, "progress": False, "plots": False, **kw})


def _ck(cfg=None, **kw) -> dict:
    model = nn.Linear(2, 1)
    return {"format": checkpoint.FORMAT, "epoch": 3, "model": model.state_dict(), "config": (cfg or _cfg()).to_dict(),
            # as Trainer.state() writes it: dataclasses.asdict(DataSpec), in_shape a tuple
            "data": {"name": "digits", "layout": "image", "in_shape": (1, 8, 8), "num_classes": 10}, **kw}


def _save(path, obj) -> str:
    checkpoint.save_atomic(obj, str(path))
    return str(path)


# ---------------------------------------------------------------- the digest

def test_digest_is_a_stable_format():
    """Files written by earlier versions must keep verifying: the digest of a fixed
    checkpoint is pinned (types, shapes, structure and bytes all enter it)."""
    obj = {"format": 2, "t": torch.arange(6, dtype=torch.int32).reshape(2, 3), "e": torch.zeros(0),
           "d": {"b": [1, 2.5], 1: (None, "s")}, "digest": "ignored"}
    assert checkpoint.digest(obj) == {
        "format": "7ac29efe6979ab4c1f424f2d2719cec0fbb1eb9b2a532686a16feb3c7db968c2",
        "t": "fb6abb1a0d031366644be07fffcc2ac6577fcbc77921775e3d8d2a5fb8daac72",
        "e": "7892cb871b74b502156ad9f51659b35c29aeee791d0ca8e3ac7b259fd3a8f7e4",
        "d": "3093b513ceb4a55e1ee098d3a9a9f5d1dc033a615aa464eee67b00b1dc1d691d"}
    # the same bytes from the rule written out: type and value of a scalar, "T" dtype shape data for a tensor
    assert checkpoint.digest({"format": 2})["format"] == hashlib.sha256(b"int:2;").hexdigest()
    data = torch.arange(6, dtype=torch.int32).numpy().tobytes()
    assert checkpoint.digest(obj)["t"] == hashlib.sha256(b"Ttorch.int32(2, 3)" + data).hexdigest()


def test_digest_sees_type_shape_and_structure():
    def d(v):
        return checkpoint.digest({"v": v})["v"]
    z = torch.zeros(2, 3)
    different = [z, torch.zeros(3, 2), torch.zeros(2, 3, dtype=torch.int32), torch.zeros(6), [1, 2], (1, 2), [1, 2, 3],
                 {"a": 1}, {"a": 2}, {"b": 1}, {"a": 1, "b": 1}, 1, "1", 1.0, None, True, torch.zeros(0),
                 torch.zeros(0, dtype=torch.int64)]
    assert len({d(v) for v in different}) == len(different)
    assert d(z.t().contiguous().t()) == d(z) and d(torch.ones(3, 2).t()) == d(torch.ones(2, 3))  # layout is not content
    assert d({"a": 1, "b": 2}) == d({"b": 2, "a": 1})                                           # nor key order
    assert d(nn.Parameter(torch.ones(2))) == d(torch.ones(2))
    assert set(checkpoint.digest({"x": 1, "digest": {"x": "?"}})) == {"x"}


def test_nonfinite_entries():
    state = {"a": torch.tensor([1.0, float("nan")]), "b": torch.tensor([float("-inf")]), "c": torch.ones(2),
             "i": torch.tensor([1]), "n": 3.0, "e": torch.zeros(0)}
    assert checkpoint.nonfinite_entries(state) == ["a", "b"]


# ---------------------------------------------------------------- save and load

def test_save_adds_format_and_digest_and_load_verifies(tmp_path):
    obj = {"format": 1, "epoch": 2, "model": {"w": torch.ones(2)}}
    path = _save(tmp_path / "sub" / "c.pt", obj)                       # the directory is made
    assert "digest" not in obj and obj["format"] == 1                  # the caller's dict is left alone
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT == 2
    assert raw["digest"] == checkpoint.digest({**obj, "format": 2})
    ck = checkpoint.load(path)
    assert ck["epoch"] == 2 and torch.equal(ck["model"]["w"], torch.ones(2))
    plain = _save(tmp_path / "plain.pt", {"v": 1})                     # not a checkpoint: no digest
    assert torch.load(plain, weights_only=True) == {"v": 1}


def test_load_refuses_missing_damaged_and_foreign_files(tmp_path, monkeypatch):
    missing = str(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(repr(missing))} does not exist$"):
        checkpoint.load(missing)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(str(bad))
    assert re.fullmatch(rf"checkpoint {re.escape(repr(str(bad)))} is truncated or corrupted and cannot be loaded "
                        r"\(UnpicklingError: [^\n]+\)\.", str(e.value)), str(e.value)
    for obj in ([1, 2], {"format": 3}, {"epoch": 1}):
        torch.save(obj, tmp_path / "foreign.pt")
        with pytest.raises(CheckpointError, match=r"^'.*foreign\.pt' is not a pnn-train checkpoint \(format 2\)$"):
            checkpoint.load(str(tmp_path / "foreign.pt"))

    def raises_silently(*a, **k):
        raise ValueError()
    monkeypatch.setattr(checkpoint.torch, "load", raises_silently)
    with pytest.raises(CheckpointError, match=r"cannot be loaded \(ValueError: \)\.$"):
        checkpoint.load(str(bad))


def test_load_names_the_damaged_entries(tmp_path):
    path = _save(tmp_path / "c.pt", {"format": 2, "epoch": 1, "model": {"w": torch.ones(2)}, "rng": {"s": 1}})
    raw = torch.load(path, weights_only=True)
    tampered = {**raw, "model": {"w": torch.tensor([1.0, 2.0])}, "epoch": 5}
    torch.save(tampered, path)
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*c\.pt' is corrupted: the digest written with it does "
                                              r"not match its 'epoch' entry, the model's tensor data\.$"):
        checkpoint.load(path)
    torch.save({**raw, "rng": {"s": 2}, "optimizer": {}}, path)      # an entry the digest does not know counts
    with pytest.raises(CheckpointError, match=r"does not match the optimizer state, the random-number states\.$"):
        checkpoint.load(path)
    for digest in (None, "abc"):
        torch.save({**raw, "digest": digest}, path)
        with pytest.raises(CheckpointError, match=r"does not match digest\.$"):
            checkpoint.load(path)
    del raw["digest"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"does not match digest\.$"):
        checkpoint.load(path)
    torch.save({**raw, "format": 1, "epoch": 9}, path)                 # format 1 had no digest: loads unverified
    assert checkpoint.load(path)["epoch"] == 9


def test_load_names_the_other_checkpoints_beside_a_damaged_one(tmp_path, monkeypatch):
    _save(tmp_path / "best.pt", {"format": 2, "epoch": 4})
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\. Other checkpoints in its directory: best\.pt \(intact, epoch 4\)\.$"
                       ):
        checkpoint.load(str(tmp_path / "last.pt"))
    with pytest.raises(CheckpointError, match=r"cannot be loaded \([^)]*\)\.$"):
        checkpoint.load(str(tmp_path / "last.pt"), others=False)
    with pytest.raises(CheckpointError, match=r"Other checkpoints in its directory: last\.pt \(damaged too\)\.$"):
        (tmp_path / "best.pt").write_bytes(b"x")
        checkpoint.load(str(tmp_path / "best.pt"))
    os.remove(tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"cannot be loaded \([^)]*\)\.$"):   # alone: no list
        checkpoint.load(str(tmp_path / "last.pt"))
    # A damaged digest names them as well; a relative path looks in the working directory.
    _save(tmp_path / "best.pt", {"format": 2, "epoch": 6})
    torch.save({"format": 2, "epoch": 1, "digest": {}}, tmp_path / "last.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"^checkpoint 'last\.pt' is corrupted: .*its 'epoch' entry, its "
                                              r"'format' entry\. Other checkpoints in its directory: best\.pt "
                                              r"\(intact, epoch 6\)\.$"):
        checkpoint.load("last.pt")
    with pytest.raises(CheckpointError, match=r"'format' entry\.$"):
        checkpoint.load("last.pt", others=False)


def test_load_maps_tensors_to_the_given_device(tmp_path, monkeypatch):
    path = _save(tmp_path / "c.pt", {"format": 2, "w": torch.ones(1)})
    seen = []
    real = torch.load

    def spy(*a, **k):
        seen.append((k["map_location"], k["weights_only"]))
        return real(*a, **k)
    monkeypatch.setattr(checkpoint.torch, "load", spy)
    def on_cpu(storage, location):
        return storage
    checkpoint.load(path)
    checkpoint.load(path, map_location=on_cpu)
    assert seen == [("cpu", True), (on_cpu, True)]


# ---------------------------------------------------------------- resuming

def test_check_same_model_names_the_setting(tmp_path):
    saved = _cfg().to_dict()
    checkpoint.check_same_model(saved, _cfg(lr=0.5), "p")              # a training setting: not its business
    with pytest.raises(CheckpointError, match=r"^checkpoint 'p' was made with degree=2, this run has degree=8$"):
        checkpoint.check_same_model(saved, _cfg(degree=8), "p")
    with pytest.raises(CheckpointError, match=r"made with basis='chebyshev', this run has basis='monomial'$"):
        checkpoint.check_same_model(saved, _cfg(basis="monomial"), "p")
    checkpoint.check_same_model(saved, _cfg(hidden="8"), "p")           # hidden matters for MLPs only
    mlp = _cfg(model="mlp", hidden="32,16").to_dict()
    with pytest.raises(CheckpointError, match=r"made with hidden='32,16', this run has hidden='8'$"):
        checkpoint.check_same_model(mlp, _cfg(model="mlp", hidden="8"), "p")
    with pytest.raises(CheckpointError, match=r"made with num_classes=None, this run has num_classes=3$"):
        checkpoint.check_same_model({k: v for k, v in saved.items() if k != "num_classes"} | {"num_classes": None},
                                    _cfg(num_classes=3), "p")


def test_changed_settings_lists_the_training_settings_that_differ():
    saved = _cfg().to_dict()
    assert checkpoint.changed_settings(saved, _cfg(epochs=9, out_dir="elsewhere", degree=8)) == {}
    assert checkpoint.changed_settings(saved, _cfg(lr=0.5, lam=3.0)) == {"lr": [saved["lr"], 0.5],
                                                                          "lam": [saved["lam"], 3.0]}
    del saved["lam"]                                                     # a setting the checkpoint predates
    assert checkpoint.changed_settings(saved, _cfg(lam=3.0)) == {}


def test_open_for_resume_checks_data_values_and_settings(tmp_path):
    path = _save(tmp_path / "c.pt", _ck(changes=[{"epoch": 1, "settings": {"lr": [1, 2]}}]))
    ck = checkpoint.open_for_resume(path, _cfg(), SPEC)
    assert ck["epoch"] == 3 and ck["resume_changes"] == {} and ck["changes"] == [{"epoch": 1,
                                                                                  "settings": {"lr": [1, 2]}}]
    assert checkpoint.open_for_resume(path, _cfg(), None)["epoch"] == 3
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*c\.pt' was made with degree=2, this run has degree=3$"):
        checkpoint.open_for_resume(path, _cfg(degree=3), SPEC)
    for spec, msg in ((DataSpec("digits", "sequence", (1, 8, 8), 10), "layout 'image', this run's data has 'sequence'"),
                      (DataSpec("digits", "image", (1, 8, 9), 10),
                       r"in_shape \(1, 8, 8\), this run's data has \[1, 8, 9\]"),
                      (DataSpec("digits", "image", (1, 8, 8), 3), "num_classes 10, this run's data has 3")):
        with pytest.raises(CheckpointError, match=rf"^checkpoint '.*c\.pt' was made for data with {msg}$"):
            checkpoint.open_for_resume(path, _cfg(), spec)
    nodata = _save(tmp_path / "n.pt", {k: v for k, v in _ck().items() if k != "data"})    # format 1 had none
    assert checkpoint.open_for_resume(nodata, _cfg(), SPEC)["changes"] == []
    nan = _ck()
    nan["model"] = {"w": torch.tensor([float("nan")]), "b": torch.tensor([float("inf")]), "c": torch.ones(1),
                    "d": torch.tensor([float("nan")]), "e": torch.tensor([float("nan")])}
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*nan\.pt' holds non-finite values \(w, b, d\); it cannot "
                                              r"be resumed$"):
        checkpoint.open_for_resume(_save(tmp_path / "nan.pt", nan), _cfg(), SPEC)


def test_open_for_resume_with_changed_settings(tmp_path):
    path = _save(tmp_path / "c.pt", _ck(changes=[{"epoch": 1, "settings": {"lam": [1, 2]}}]))
    with pytest.raises(CheckpointError, match=r"^resuming '.*c\.pt' with settings that differ from its run: "
                                              r"lam 1000\.0 -> 3\.0, lr 0\.001 -> 0\.5; pass --allow-changes to apply "
                                              r"them \(recorded in summary\.json\), or drop them$"):
        checkpoint.open_for_resume(path, _cfg(lr=0.5, lam=3.0), SPEC)
    ck = checkpoint.open_for_resume(path, _cfg(lr=0.5, allow_changes=True), SPEC)
    assert ck["resume_changes"] == {"lr": [0.001, 0.5]}
    assert ck["changes"] == [{"epoch": 1, "settings": {"lam": [1, 2]}}, {"epoch": 3, "settings": {"lr": [0.001, 0.5]}}]
    with pytest.raises(CheckpointError, match=r"^resuming '.*c\.pt': bound None -> 'auto'; --bound auto calibrates "
                                              r"at initialisation, so a resume cannot switch to or from it$"):
        checkpoint.open_for_resume(path, _cfg(bound="auto", allow_changes=True), SPEC)
    auto = _save(tmp_path / "a.pt", _ck(_cfg(bound="auto")))
    with pytest.raises(CheckpointError, match=r"bound 'auto' -> 4\.0;"):
        checkpoint.open_for_resume(auto, _cfg(bound=4.0, allow_changes=True), SPEC)
    with pytest.raises(CheckpointError, match=r"^resuming '.*c\.pt': the scheduler cannot change on resume "
                                              r"\('plateau' -> 'cosine'\)$"):
        checkpoint.open_for_resume(path, _cfg(scheduler="cosine", allow_changes=True), SPEC)
    again = checkpoint.open_for_resume(path, _cfg(bound=4.0, allow_changes=True), SPEC)
    assert again["resume_changes"] == {"bound": [None, 4.0]}


def test_restore_puts_back_model_optimizer_schedule_and_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    sched.step()
    state = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "rng": checkpoint.rng_state()}
    want = torch.rand(3)
    other = nn.Linear(2, 1)
    opt2 = torch.optim.SGD(other.parameters(), lr=9.0)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=2)
    ck = {**_ck(_cfg(epochs=7)), **state}
    assert checkpoint.restore(ck, _cfg(epochs=7), other, opt2, sched2) is ck
    assert torch.equal(other.weight, model.weight) and torch.equal(torch.rand(3), want)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) and sched2.last_epoch == 1
    assert sched2.T_max == 7                                           # --epochs may extend a resumed run
    checkpoint.restore(ck, _cfg(epochs=0), other, opt2, sched2)
    assert sched2.T_max == 1
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=5)
    checkpoint.restore({**ck, "scheduler": None}, _cfg(), other, opt2, plateau)   # no saved schedule: left as is
    assert plateau.patience == 5
    checkpoint.restore(ck, _cfg(), other, opt2, None)
    path = _save(tmp_path / "c.pt", {**ck, "optimizer": opt.state_dict(), "scheduler": None})
    with torch.no_grad():
        other.weight.zero_()
    assert checkpoint.restore(path, _cfg(epochs=7), other, opt2, None)["resume_changes"] == {}   # a path: verified
    assert torch.equal(other.weight, model.weight)


def test_rng_states_round_trip_every_generator():
    checkpoint.seed_everything(5)
    random.gauss(0, 1)                                  # a cached second normal in each generator
    np.random.normal()
    state = checkpoint.rng_state()
    want = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(2))
    checkpoint.seed_everything(6)
    checkpoint.set_rng_state(state)
    got = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(2))
    assert got[:4] == want[:4] and torch.equal(got[4], want[4])
    assert state["numpy"]["has_gauss"] == 1 and isinstance(state["numpy"]["gauss"], float)
    assert state["python_version"] == 3 and "cuda" not in state
    assert state["numpy"]["keys"].dtype == torch.int64 and isinstance(state["numpy"]["pos"], int)


def test_seed_everything_seeds_python_numpy_and_torch():
    checkpoint.seed_everything(11)
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[0] == random.Random(11).random() and got[1] == np.random.RandomState(11).rand()
    assert torch.equal(got[2], torch.rand(1, generator=torch.Generator().manual_seed(11)))



def test_cuda_generators_are_saved_and_restored_where_cuda_is_used(monkeypatch):
    """On a machine whose CUDA is initialised the CUDA generators' states travel too; a
    checkpoint with them resumes on a machine without CUDA, which skips them."""
    cuda_state = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in checkpoint.rng_state()            # CUDA present but unused: nothing to save
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = checkpoint.rng_state()
    assert state["cuda"] is cuda_state
    checkpoint.set_rng_state(state)
    assert restored == [cuda_state]
    checkpoint.set_rng_state({k: v for k, v in state.items() if k != "cuda"})   # saved without CUDA
    assert restored == [cuda_state]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "cuda" not in checkpoint.rng_state()
    checkpoint.set_rng_state(state)                      # resumed without CUDA
    assert restored == [cuda_state]
