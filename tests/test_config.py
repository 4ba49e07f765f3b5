"""pnn-train's settings: flags, config files, types, defaults shared with the library."""
import dataclasses
import json
import subprocess
import sys

import pytest

from pnn_ext.train import config
from pnn_ext.train.config import TrainConfig, build_parser, parse_config
from testing import ROOT


def test_help_documents_every_setting_with_its_default():
    text = build_parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert text.count("(default:") >= len(dataclasses.fields(TrainConfig))
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


def test_setting_types_are_type_objects():
    """Types come from the annotations as objects (typing.get_type_hints), not their text:
    a list[int] setting reads as a list of ints, never as a float."""
    from dataclasses import dataclass, field

    hints = config.setting_types()
    assert hints["epochs"] is int and hints["lr"] is float and hints["bound"] == str | None
    assert config.coerce("8,16", list[int]) == [8, 16] and config.coerce([1, "2"], tuple[int, ...]) == (1, 2)
    assert config.coerce("null", float | None) is None and config.coerce(3, float) == 3.0
    for value, hint in (("8,x", list[int]), (2.5, int), ("yes please", bool), ([1], float)):
        with pytest.raises(ValueError):
            config.coerce(value, hint)

    @dataclass
    class Odd:
        table: dict = field(default_factory=dict)
    with pytest.raises(TypeError, match="setting table: unsupported type"):
        config.setting_types(Odd)


def test_flag_values_are_checked_by_type():
    from pnn_ext.errors import UsageError
    with pytest.raises(UsageError, match=r"epochs must be int, got '2\.5'"):
        parse_config(["--epochs", "2.5"])
    assert parse_config(["--bound", "none"]).bound is None and parse_config(["--bound", "40"]).bound == 40.0


def test_data_dir_default_is_pnn_data_else_inside_the_clone(monkeypatch):
    monkeypatch.delenv("PNN_DATA", raising=False)
    assert TrainConfig().data_dir == "data"
    monkeypatch.setenv("PNN_DATA", "/datasets")
    assert TrainConfig().data_dir == "/datasets" and TrainConfig(data_dir="here").data_dir == "here"
    assert "(default: $PNN_DATA, else ./data)" in " ".join(build_parser().format_help().split())


def test_library_and_command_line_share_their_defaults():
    import inspect

    import pnn_ext
    from pnn_ext import fitting, models

    cfg = TrainConfig()
    for cls in (models.MLP, models.SmallCNN, models.ResNet18):
        params = inspect.signature(cls).parameters
        assert params["act_position"].default == cfg.act_position == "before-bn", cls
        assert params["norm"].default == cfg.norm, cls
    assert inspect.signature(models.MLP).parameters["hidden"].default == tuple(cfg.hidden_sizes())
    for fn in (pnn_ext.PolyActivation, pnn_ext.convert, fitting.fit):
        params = inspect.signature(fn).parameters
        assert params["degree"].default == cfg.degree and params["basis"].default == cfg.basis, fn
        assert params["method"].default == cfg.fit_method, fn
    assert inspect.signature(pnn_ext.PolyActivation).parameters["target"].default == cfg.target
    assert cfg.lam == pnn_ext.nn.LAMBDA


def test_settings_from_python_are_held_to_their_types():
    for bad, match in (({"degree": True}, r"degree must be int, got True"), ({"lr": "0.1"}, r"lr must be float"),
                       ({"degree": 129}, r"degree must be an integer from 1 to 128"),
                       ({"lam": float("nan")}, r"lam must be a finite number"),
                       ({"seed": -1}, r"seed must be in 0\.\.2\*\*32-1")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
