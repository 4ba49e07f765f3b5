"""The training framework: CLI and config, data, models, the loop (guard, clipping,
reproducibility), checkpoints and resume, distributed step, ablation."""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.train import ablation, checkpoint, config, data, models
from pnn_ext.train.config import TrainConfig, build_parser, parse_config
from pnn_ext.train.data import DataError
from pnn_ext.clip import clip_gradients
from pnn_ext.train.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(ROOT, "..", "shared", "data")
QUICK = dict(dataset="digits", epochs=2, batch_size=64, progress=False, plots=False)


def run(tmp_path, name="run", **kw) -> tuple[dict, Trainer]:
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / name), **kw})
    trainer = Trainer(cfg)
    return trainer.run(), trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if torch.is_tensor(v)}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- CLI, config

def test_help_documents_every_setting_with_its_default():
    text = build_parser().format_help()
    for f in config.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert text.count("(default:") >= len(config.fields(TrainConfig))
    out = subprocess.run([sys.executable, "-m", "pnn_ext.train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--clip {selective,all,none}" in out.stdout


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_config_precedence_defaults_file_flags(tmp_path, fmt):
    settings = {"epochs": 3, "lr": 0.01, "clip-norm": 0.5, "boundary_loss": False}
    path = tmp_path / f"c.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(settings))
    else:
        path.write_text("\n".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()))
    cfg = parse_config(["--config", str(path), "--lr", "0.002", "--boundary-loss"])
    assert cfg.epochs == 3 and cfg.clip_norm == 0.5        # from the file
    assert cfg.lr == 0.002 and cfg.boundary_loss is True    # flags win
    assert cfg.degree == TrainConfig().degree               # default


def test_config_file_values_take_the_setting_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nboundary-loss: 'false'\nepochs: 3\nhidden: 64\nbound: null\n")  # YAML: '1e-3' is a str
    cfg = parse_config(["--config", str(path)])
    assert cfg.lr == 1e-3 and cfg.boundary_loss is False and cfg.epochs == 3 and cfg.hidden == "64"
    assert cfg.bound is None
    for bad, message in (("epochs: 2.5", "epochs must be int"), ("guard: maybe", "guard must be bool"),
                         ("lr: [1]", "lr must be float"), ("degree: null", "degree must be int")):
        path.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message):
            parse_config(["--config", str(path)])


def test_config_errors_name_the_setting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown setting 'epochz'"):
        parse_config(["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        TrainConfig(clip_norm=0)
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig(model="resnet9000")
    with pytest.raises(ValueError, match="hidden"):
        TrainConfig(hidden="256,x")
    out = subprocess.run([sys.executable, "-m", "pnn_ext.train", "--dataset", "npz:/no/such.npz", "--no-plots"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "npz file '/no/such.npz' does not exist" in out.stderr


# ---------------------------------------------------------------- short runs

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


# ---------------------------------------------------------------- clipping

def _with_grads(model):
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 10
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["selective", "all", "none"])
def test_clipping_modes_touch_exactly_the_right_parameters(mode):
    model = models.SmallCNN(1, 10, (8, 8))
    before = _with_grads(model)
    is_bn = {n: isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.BatchNorm1d | nn.BatchNorm2d)
             for n, _ in model.named_parameters()}
    assert any(is_bn.values()) and not all(is_bn.values())
    n_other, n_bn = clip_gradients(model, mode, 0.1, "cpu")
    after = {n: p.grad for n, p in model.named_parameters()}
    other_norm = torch.linalg.vector_norm(torch.stack([after[n].norm() for n in after if not is_bn[n]]))
    total_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in after.values()]))
    assert n_other == pytest.approx(torch.linalg.vector_norm(
        torch.stack([before[n].norm() for n in before if not is_bn[n]])).item(), rel=1e-5)
    for n in after:
        changed = not torch.equal(after[n], before[n])
        if mode == "none":
            assert not changed, n
        elif mode == "selective":
            assert changed != is_bn[n], n          # exactly the non-BatchNorm gradients move
        else:
            assert changed, n
    if mode == "selective":
        assert other_norm.item() == pytest.approx(0.1, rel=1e-4)
    if mode == "all":
        assert total_norm.item() == pytest.approx(0.1, rel=1e-4)


# ---------------------------------------------------------------- divergence guard

def _poison(trainer, calls):
    """Make the first conv output NaN on the given training forward calls (1-based)."""
    count = {"n": 0}

    def hook(module, args, out):
        if module.training:
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
    assert "rollbacks" in summary["diverged_at"]["reason"]


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


# ---------------------------------------------------------------- checkpoints

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


# ---------------------------------------------------------------- data

def _write_idx(path, array):
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(directory, n_train=200, n_test=50):
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        images[np.arange(n), labels * 2, :] = 255                # a learnable mark
        _write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        _write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)


def test_mnist_from_gzipped_idx_files_without_download(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets, "MNIST", None)   # any download attempt would fail
    _fake_mnist(tmp_path / "MNIST" / "raw")
    summary, trainer = run(tmp_path, dataset="mnist", data_dir=str(tmp_path), epochs=1, max_steps=2)
    assert summary["steps"] == 2 and trainer.data.in_shape == (1, 28, 28) and len(trainer.data.test) == 50


@pytest.mark.skipif(not os.path.isdir(os.path.join(MNIST_DIR, "MNIST", "raw")), reason="no local MNIST")
def test_real_mnist_idx_files():
    arrays = data.load_arrays("mnist", MNIST_DIR)
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_test"].shape == (10000, 28, 28)
    assert set(np.unique(arrays["y_train"])) == set(range(10))


def test_mnist_missing_files_and_no_network_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="not in .*Pass --data-dir"):
        data.load_arrays("mnist", str(tmp_path))


def test_truncated_idx_file(tmp_path):
    _fake_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(DataError, match="truncated"):
        data.load_arrays("mnist", str(tmp_path))


def _npz(tmp_path, **arrays):
    base = dict(x_train=np.random.rand(40, 6).astype(np.float32), y_train=np.arange(40) % 3,
                x_test=np.random.rand(10, 6).astype(np.float32), y_test=np.arange(10) % 3)
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "d.npz"
    np.savez(path, **base)
    return f"npz:{path}"


@pytest.mark.parametrize("arrays, message", [
    (dict(y_test=None), r"lacks keys \['y_test'\]"),
    (dict(y_train=np.arange(39) % 3), "y_train has 39 labels but x_train has 40 samples"),
    (dict(y_train=(np.arange(40) % 3)[:, None]), "y_train must be 1-D"),
    (dict(y_train=np.full(40, 0.5)), "y_train must hold integer class indices"),
    (dict(y_test=-np.ones(10, int)), "y_test has a negative label"),
    (dict(x_test=np.random.rand(10, 5)), r"x_test samples have shape \(5,\), x_train samples \(6,\)"),
    (dict(x_train=np.random.rand(40)), "x_train must be"),
    (dict(x_train=np.full((40, 6), np.nan)), "NaN or inf"),
])
def test_npz_errors(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        data.load(TrainConfig(dataset=_npz(tmp_path, **arrays)))


def test_too_few_training_samples_after_the_split(tmp_path):
    ds = _npz(tmp_path, x_train=np.random.rand(2, 6), y_train=np.arange(2))
    with pytest.raises(DataError, match="1 training sample"):
        data.load(TrainConfig(dataset=ds, val_fraction=0.5))


def test_npz_missing_file_and_not_an_npz(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(TrainConfig(dataset=f"npz:{tmp_path / 'none.npz'}"))
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read npz"):
        data.load(TrainConfig(dataset=f"npz:{tmp_path / 'x.npz'}"))


@pytest.mark.parametrize("shape, layout, kind, in_shape", [
    ((40, 6), "auto", "features", (6,)),
    ((40, 7, 5), "auto", "image", (1, 7, 5)),
    ((40, 2, 9), "sequence", "sequence", (2, 9)),
    ((40, 3, 8, 8), "auto", "image", (3, 8, 8)),
])
def test_npz_layouts_train(tmp_path, shape, layout, kind, in_shape):
    rng = np.random.default_rng(0)
    ds = _npz(tmp_path, x_train=rng.random(shape), x_test=rng.random((10, *shape[1:])))
    summary, trainer = run(tmp_path, dataset=ds, layout=layout, model="mlp", hidden="16,8", epochs=1,
                           batch_size=8, val_fraction=0.2)
    assert trainer.data.layout == kind and trainer.data.in_shape == in_shape
    assert trainer.data.num_classes == 3 and summary["status"] == "completed"
    assert len(trainer.data.val) == 8 and len(trainer.data.train) == 32


def test_normalisation_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(5, 2, (500, 4)), y_train=np.zeros(500, int),
                  x_test=rng.normal(50, 2, (100, 4)), y_test=np.zeros(100, int))
    d = data.prepare(arrays, name="t", val_fraction=0.2)
    x_tr = d.train.tensors[0]
    assert x_tr.mean(0).abs().max() < 1e-5 and (x_tr.std(0) - 1).abs().max() < 1e-5
    assert d.test.tensors[0].mean() > 15                       # not re-centred on its own statistics


def test_image_model_on_features_is_a_clear_error():
    cfg = TrainConfig(model="small-cnn")
    with pytest.raises(ValueError, match="needs images.*use --model mlp"):
        models.build_model(cfg, (6,), "features", 3)


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = data.augment_batch(x, g, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):   # each output is a window of the padded image, maybe mirrored
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("position", ["before-bn", "after-bn"])
def test_resnet18_published_form(position):
    cfg = TrainConfig(model="resnet18", act_position=position, degree=8, dropout=0.1)
    model = models.build_model(cfg, (3, 32, 32), "image", 10)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    polys = list(pnn_ext.nn.poly_modules(model))
    assert len(polys) == 17 and all(p.degree == 8 for p in polys)
    stem_types = [type(m) for m in model.stem]
    assert stem_types.index(pnn_ext.PolyActivation) < stem_types.index(nn.BatchNorm2d) if position == "before-bn" \
        else stem_types.index(pnn_ext.PolyActivation) > stem_types.index(nn.BatchNorm2d)
    model.eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and len(pnn_ext.boundary_loss(model).shape) == 0


def test_torchvision_model_converted():
    cfg = TrainConfig(model="torchvision:resnet18", degree=4)
    model = models.build_model(cfg, (1, 28, 28), "image", 10)
    model.eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(len(m.boundary_terms) for m in pnn_ext.nn.poly_modules(model)) == 17
    with pytest.raises(ValueError, match="torchvision:no_such_net"):
        models.build_model(TrainConfig(model="torchvision:no_such_net"), (3, 8, 8), "image", 10)


def test_kaiming_uniform_init():
    model = models.MLP(100, 10, (50,))
    models.kaiming_uniform_init(model)
    w = model[1].weight
    limit = (6 / 100) ** 0.5                      # gain sqrt(2) * sqrt(3 / fan_in)
    assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit and model[1].bias.abs().max() == 0


# ---------------------------------------------------------------- distributed

def test_two_process_ddp_step_equals_single_process_on_combined_batch(tmp_path):
    common = ["--dataset", "digits", "--model", "mlp", "--hidden", "64,32", "--norm", "none", "--max-steps", "1",
              "--epochs", "1", "--clip-norm", "0.05", "--no-plots", "--no-progress", "--degree", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "pnn_ext.train", *common, "--batch-size", "64",
                             "--out-dir", str(tmp_path / "single")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "pnn_ext.train", *common, "--batch-size", "32", "--out-dir", str(tmp_path / "ddp")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    init = models.build_model(TrainConfig(model="mlp", hidden="64,32", norm="none", degree=8), (1, 8, 8), "image", 10)
    assert a["step"] == b["step"] == 1
    moved = 0
    for k, v in a["model"].items():
        if torch.is_tensor(v) and v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, rtol=0, atol=2e-6, msg=k)
    for k, v in init.state_dict().items():
        if k in a["model"] and torch.is_tensor(v) and v.is_floating_point() and "coeffs" not in k:
            moved += int(not torch.allclose(v, a["model"][k]))
    assert moved >= 4   # the step really changed the weights
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and not (tmp_path / "ddp" / "rank1").exists()


# ---------------------------------------------------------------- ablation

def test_ablation_command_writes_table_and_plot(tmp_path):
    out = tmp_path / "abl"
    rc = ablation.main(["--degrees", "2", "--seeds", "0", "--variants", "full,no-clip", "--out-dir", str(out), "--",
                        "--epochs", "1", "--no-progress", "--no-plots", "--max-steps", "3"])
    assert rc == 0
    md = (out / "ablation.md").read_text()
    assert "| 2 | full | 1 | 0/1 |" in md and "| 2 | no-clip | 1 | 0/1 |" in md
    assert (out / "ablation.png").is_file()
    cfg = json.loads((out / "degree2" / "no-clip" / "seed0" / "summary.json").read_text())["config"]
    assert cfg["clip"] == "none" and cfg["guard"] is False and cfg["degree"] == 2
    shutil.rmtree(out / "degree2" / "full")       # a second call reruns only what is missing,
    os.remove(out / "degree2" / "no-clip" / "seed0" / "summary.json")  # and resumes an interrupted run
    assert ablation.main(["--degrees", "2", "--seeds", "0", "--variants", "full,no-clip", "--out-dir", str(out),
                          "--", "--epochs", "1", "--no-progress", "--no-plots", "--max-steps", "3"]) == 0
    assert (out / "degree2" / "full" / "seed0" / "summary.json").is_file()
    resumed = json.loads((out / "degree2" / "no-clip" / "seed0" / "summary.json").read_text())
    assert "--resume last" in resumed["command"] and resumed["status"] == "completed"
