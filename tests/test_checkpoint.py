"""Checkpoints: exact resume, atomic writes, damaged files, refusing to replace or to
mix runs, the safe loader, and opening a run with load_run."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import pnn_ext
from pnn_ext import fitting
from pnn_ext.train import CheckpointError, DataSpec, checkpoint, load_run
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.guard import rollback_target
from pnn_ext.train.loop import Trainer
from testing import QUICK, ROOT, assert_same_weights, run, weights


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    kw = dict(epochs=3, dropout=0.3, scheduler="cosine", seed=1)
    _, full = run(tmp_path, "full", **kw)
    cfg = TrainConfig(**{**QUICK, **kw, "out_dir": str(tmp_path / "cut")})
    trainer = Trainer(cfg)
    per_epoch = len(trainer.train_loader)
    original, calls = Trainer.train_step, {"n": 0}

    def crash(self, x, y):
        calls["n"] += 1
        if calls["n"] == per_epoch + 3:                    # in the middle of epoch 2
            raise KeyboardInterrupt
        return original(self, x, y)
    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Trainer, "train_step", original)
    torch.manual_seed(12345)                                 # a fresh process would not share RNG state
    resumed = Trainer(TrainConfig(**{**QUICK, **kw, "out_dir": str(tmp_path / "cut"), "resume": "last"}))
    summary = resumed.run()
    assert summary["epochs_completed"] == 3
    assert_same_weights(weights(full), weights(resumed))
    assert [r["test_acc"] for r in full.history] == [r["test_acc"] for r in resumed.history]
    assert len((tmp_path / "cut" / "metrics.csv").read_text().splitlines()) == 4


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "v": torch.arange(3)}, path)

    def dies_halfway(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint.torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "v": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["v"], torch.arange(3))   # the previous one, intact
    assert os.listdir(tmp_path) == ["last.pt"]                         # no temporary file left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_checkpoint_gives_clear_error(tmp_path, damage):
    run(tmp_path, "c", epochs=1)
    last = tmp_path / "c" / "last.pt"
    blob = last.read_bytes()
    last.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": os.urandom(len(blob)), "empty": b""}[damage])
    with pytest.raises(checkpoint.CheckpointError, match=r"truncated or corrupted.*best\.pt"):
        Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "c"), "resume": "last"})).run()
    assert checkpoint.load(str(tmp_path / "c" / "best.pt"))["epoch"] == 1   # still good
    out = subprocess.run([sys.executable, "-m", "pnn_ext.train", "--out-dir", str(tmp_path / "c"), "--resume",
                          "last", "--no-plots"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "truncated or corrupted" in out.stderr


def test_fresh_run_refuses_to_replace_an_existing_one(tmp_path):
    run(tmp_path, "c", epochs=1)
    with pytest.raises(FileExistsError, match="--resume last.*--overwrite"):
        run(tmp_path, "c", epochs=1)
    assert run(tmp_path, "c", epochs=1, overwrite=True)[0]["status"] == "completed"


def test_resume_refuses_another_model(tmp_path):
    run(tmp_path, "c", epochs=1)
    with pytest.raises(checkpoint.CheckpointError, match="degree=22.*degree=8"):
        Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "c"), "resume": "last", "degree": 8})).run()


def test_checkpoints_load_with_weights_only(tmp_path):
    run(tmp_path, "c", epochs=1, learnable=True)
    ck = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and "rng" in ck and ck["config"]["learnable"] is True


def test_load_run_returns_model_config_and_data_spec(tmp_path):
    summary, trainer = run(tmp_path, "r", model="mlp", hidden="32,16", degree=8, epochs=1)
    model, cfg, spec = load_run(str(tmp_path / "r"))                      # the directory: its best.pt
    assert cfg.model == "mlp" and cfg.hidden == "32,16" and cfg.degree == 8 and not model.training
    assert spec == DataSpec("digits", "image", (1, 8, 8), 10) == trainer.data.spec
    x = trainer.data.test.tensors[0][:16]
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.model(x), rtol=0, atol=0)
    again = load_run(str(tmp_path / "r" / "last.pt"))
    torch.testing.assert_close(again.load_data().test.tensors[0], trainer.data.test.tensors[0], rtol=0, atol=0)
    # A checkpoint without the data spec (older format): the dataset is loaded to find it.
    ck = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    del ck["data"], ck["digest"]
    ck["format"] = 1
    torch.save(ck, tmp_path / "old.pt")
    assert load_run(str(tmp_path / "old.pt")).data == spec
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_run(str(tmp_path))


def _record_offset(path, suffix: str) -> int:
    """Byte offset of the data of the zip record (torch's checkpoint archive) named ``...suffix``."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", fh.read(30)[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _flip(path, offset: int, mask: int = 0x40) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= mask
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run (its directory), copied by each test that damages it."""
    tmp = tmp_path_factory.mktemp("finished")
    run(tmp, "r", epochs=1, model="mlp", hidden="16", degree=2)
    return tmp / "r"


def _storages(tree) -> int:
    """Distinct tensor storages in a checkpoint entry: the zip records it occupies."""
    seen = set()

    def walk(v):
        if torch.is_tensor(v):
            seen.add(v.untyped_storage().data_ptr())
        elif isinstance(v, dict):
            for w in v.values():
                walk(w)
        elif isinstance(v, (list, tuple)):
            for w in v:
                walk(w)
    walk(tree)
    return len(seen)


@pytest.mark.parametrize("region", ["zip-header", "model-data", "optimizer-state", "central-directory"])
def test_corruption_of_each_region_is_detected(finished, tmp_path, region):
    """One flipped bit anywhere: torch's zip reader checks no CRC, so tensor data would
    load silently changed; the digest names the damaged entry and the intact checkpoint."""
    shutil.copytree(finished, tmp_path / "r")
    last = tmp_path / "r" / "last.pt"
    ck = torch.load(last, weights_only=True)
    n_model = _storages(ck["model"])   # records data/0.. are numbered in the order the dict is written
    offset = {"zip-header": 0, "model-data": _record_offset(last, "data/0") + 1,
              "optimizer-state": _record_offset(last, f"data/{n_model}") + 2,
              "central-directory": len(last.read_bytes()) - 30}[region]
    _flip(last, offset)
    expected = {"model-data": r"is corrupted: the digest written with it does not match the model's tensor data",
                "optimizer-state": r"is corrupted: the digest written with it does not match the optimizer state"
                }.get(region, r"truncated or corrupted")
    with pytest.raises(CheckpointError, match=expected + r".*best\.pt \(intact, epoch 1\)"):
        checkpoint.load(str(last))
    cfg = TrainConfig(**{**QUICK, "model": "mlp", "hidden": "16", "degree": 2, "out_dir": str(tmp_path / "r"),
                         "resume": "last"})
    with pytest.raises(CheckpointError, match=expected):
        Trainer(cfg)                                     # refused before anything is written
    assert checkpoint.load(str(tmp_path / "r" / "best.pt"))["epoch"] == 1


def test_rollback_skips_damaged_and_nonfinite_checkpoints(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "r")
    cfg = TrainConfig(**{**QUICK, "model": "mlp", "hidden": "16", "degree": 2, "out_dir": str(tmp_path / "r"),
                         "resume": "last", "epochs": 3})
    trainer = Trainer(cfg)
    last, best = tmp_path / "r" / "last.pt", tmp_path / "r" / "best.pt"
    _flip(last, _record_offset(last, "data/0") + 1)
    assert rollback_target(trainer.out, print)["epoch"] == 1        # best.pt
    ck = checkpoint.load(str(best))
    next(v for k, v in ck["model"].items() if k.endswith("weight")).view(-1)[0] = float("nan")
    checkpoint.save_atomic(ck, str(best))                           # intact, but not finite
    assert rollback_target(trainer.out, print) is None


def test_nonfinite_batchnorm_statistics_are_never_completed_nor_saved(tmp_path):
    """The issue's case: a bound far too small makes BatchNorm's running variance inf
    while the loss stays finite; the run must end diverged, with finite checkpoints."""
    for guard in (True, False):
        summary, trainer = run(tmp_path, f"g{guard}", epochs=2, bound=0.5, degree=22, guard=guard)
        assert summary["status"] == "diverged" and summary["nonfinite_steps"] > 0, summary
        for name in ("last.pt", "best.pt"):
            if (tmp_path / f"g{guard}" / name).exists():
                assert not checkpoint.nonfinite_entries(checkpoint.load(str(tmp_path / f"g{guard}" / name))["model"])
        json.loads((tmp_path / f"g{guard}" / "summary.json").read_text())  # strict JSON: no bare NaN


def test_resume_with_changed_settings_needs_allow_changes(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "r")
    base = {**QUICK, "model": "mlp", "hidden": "16", "degree": 2, "out_dir": str(tmp_path / "r"), "resume": "last"}
    with pytest.raises(CheckpointError, match=r"lam 1000\.0 -> 10\.0, lr 0\.001 -> 0\.01.*--allow-changes"):
        Trainer(TrainConfig(**{**base, "lr": 0.01, "lam": 10.0, "epochs": 2}))
    trainer = Trainer(TrainConfig(**{**base, "lr": 0.01, "lam": 10.0, "bound": 9.0, "epochs": 2,
                                     "allow_changes": True}))
    summary = trainer.run()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["resumed_with_changes"] == [{"epoch": 1, "settings": {"lr": [0.001, 0.01], "bound": [None, 9.0],
                                                                        "lam": [1000.0, 10.0]}}]
    assert trainer.history[-1]["lr"] == pytest.approx(0.01)         # applied, not only recorded
    assert all(m.bound == 9.0 for m in trainer.polys)
    refit = torch.as_tensor(fitting.fit("relu", 2, 9.0).coeffs, dtype=torch.float32)  # in t = x / B: refitted
    assert all(torch.allclose(m.coeffs, refit) for m in trainer.polys)
    with pytest.raises(CheckpointError, match=r"bound 9\.0 -> 'auto'.*--bound auto calibrates at initialisation"):
        Trainer(TrainConfig(**{**base, "lr": 0.01, "lam": 10.0, "bound": "auto", "epochs": 3, "allow_changes": True}))
    again = Trainer(TrainConfig(**{**base, "lr": 0.01, "lam": 10.0, "bound": 9.0, "epochs": 3}))
    assert again.resume_ck["epoch"] == 2 and again.resume_ck["resume_changes"] == {}   # the run's settings now


def test_allow_changes_applies_alpha_and_the_boundary_form(finished, tmp_path):
    """--allow-changes with a new alpha and boundary form: the modules take both (the
    checkpoint's state dict had brought back alpha = 1.0 and the exponential form), and
    the boundary terms of the resumed epoch are the quadratic form's, past alpha*B."""
    shutil.copytree(finished, tmp_path / "r")
    base = {**QUICK, "model": "mlp", "hidden": "16", "degree": 2, "out_dir": str(tmp_path / "r"), "resume": "last"}
    trainer = Trainer(TrainConfig(**{**base, "alpha": 0.25, "boundary_form": "quadratic", "epochs": 2,
                                     "allow_changes": True}))
    summary = trainer.run()
    assert summary["resumed_with_changes"] == [{"epoch": 1, "settings": {"alpha": [None, 0.25],
                                                                        "boundary_form": ["exp", "quadratic"]}}]
    assert [(m.alpha, m.boundary_form) for m in trainer.polys] == [(0.25, "quadratic")] * len(trainer.polys)
    m = trainer.polys[0]
    x = torch.tensor([0.0, 0.3 * m.bound, -0.5 * m.bound])       # excesses past 0.25 B: 0, 0.05 B, 0.25 B
    m(x)
    want = ((0.05 * m.bound) ** 2 + (0.25 * m.bound) ** 2) / 3
    assert float(m.boundary_terms[-1]) == pytest.approx(want, rel=1e-6)  # this forward's term


def test_metrics_and_summary_are_strict_json(tmp_path):
    summary, _ = run(tmp_path, "r", epochs=1, val_fraction=0.0)      # no validation set: val_loss is NaN
    for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
        assert row["val_loss"] is None and row["val_acc"] is None
    json.loads((tmp_path / "r" / "summary.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    for bad in ({"batch_size": 1, "model": "small-cnn"}, {"dataset": "npz:" + str(tmp_path / "none.npz")}):
        with pytest.raises(ValueError):
            Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "r"), "overwrite": True, **bad}))
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_apply_changes_rescales_each_group_and_keeps_a_rollback_scale():
    """--allow-changes on lr and coeff_lr_scale multiplies each group's rate by its own
    ratio (a rollback's x0.5 on the checkpoint's rates stays), sets the new weight decay
    on the decayed group only, and the plateau schedule's factor and patience."""
    from types import SimpleNamespace

    from pnn_ext.train import optim
    from pnn_ext.train.resume import apply_changes

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), pnn_ext.PolyActivation(2, learnable=True))
    old = TrainConfig(lr=1e-3, coeff_lr_scale=0.1, weight_decay=5e-4)
    opt = optim.make_optimizer(model, old)
    sched = optim.make_scheduler(opt, old)
    for g in opt.param_groups:
        g["lr"] *= 0.5                                    # a rollback happened before the checkpoint
    new = TrainConfig(lr=2e-3, coeff_lr_scale=0.4, weight_decay=1e-2, plateau_factor=0.3, plateau_patience=4)
    apply_changes(SimpleNamespace(cfg=new, optimizer=opt, scheduler=sched, polys=[model[1]]),
                  {"lr": [1e-3, 2e-3], "coeff_lr_scale": [0.1, 0.4], "weight_decay": [5e-4, 1e-2]})
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["weights"]["lr"] == pytest.approx(0.5 * 2e-3) and groups["bn_and_bias"]["lr"] == pytest.approx(1e-3)
    assert groups["coeffs"]["lr"] == pytest.approx(0.5 * 2e-3 * 0.4)
    assert (groups["weights"]["weight_decay"], groups["bn_and_bias"]["weight_decay"]) == (1e-2, 0.0)
    assert (sched.factor, sched.patience) == (0.3, 4)
