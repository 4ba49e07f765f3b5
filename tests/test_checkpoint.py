"""Checkpoints: exact resume, atomic writes, damaged files, refusing to replace or to
mix runs, the safe loader, and opening a run with load_run."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pnn_ext.train import CheckpointError, DataSpec, checkpoint, load_run
from pnn_ext.train.config import TrainConfig
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
