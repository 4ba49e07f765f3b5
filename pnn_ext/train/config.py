"""The run configuration: one dataclass, the command line built from it, and a
YAML/JSON file. Precedence: built-in defaults < config file < command-line flags."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

CHOICES = {
    "model": ("small-cnn", "mlp", "resnet18"),  # or "torchvision:NAME"
    "activation": ("poly", "relu"),
    "act_position": ("before-bn", "after-bn"),
    "norm": ("batch", "none"),
    "basis": ("chebyshev", "monomial"),
    "target": ("relu", "silu", "gelu"),
    "fit_method": ("lstsq", "remez"),
    "clip": ("selective", "all", "none"),
    "scheduler": ("plateau", "cosine", "none"),
    "device": ("auto", "cpu", "cuda"),
    "augment": ("auto", "on", "off"),
    "layout": ("auto", "image", "sequence", "features"),
}


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # data
    dataset: str = _f("digits", "digits | mnist | fashion-mnist | cifar10 | cifar100 | npz:PATH")
    data_dir: str = _f("data", "where torchvision datasets live (raw idx .gz files of MNIST are read from here, "
                               "nothing is downloaded when they are present)")
    layout: str = _f("auto", "how npz inputs are read: auto (4-D and 3-D arrays are images N×C×H×W / N×H×W, "
                             "2-D are features N×F), image, sequence (3-D N×C×T), features")
    val_fraction: float = _f(0.1, "fraction of the training set held out for validation")
    train_subset: int = _f(0, "use only this many training samples (0: all); for quick runs")
    augment: str = _f("auto", "random crop + horizontal flip: auto (on for CIFAR), on, off")
    batch_size: int = _f(128, "batch size per process")
    workers: int = _f(0, "DataLoader worker processes")
    # model
    model: str = _f("small-cnn", "small-cnn | mlp | resnet18 | torchvision:NAME (any torchvision classifier)")
    hidden: str = _f("256,128,64,32,16", "MLP hidden sizes, comma separated")
    norm: str = _f("batch", "normalisation layers: batch (BatchNorm) or none")
    act_position: str = _f("before-bn", "activation before BatchNorm (conv-act-bn, the published setup) or after "
                                        "it (conv-bn-act)")
    dropout: float = _f(0.0, "dropout probability before the classifier (and after MLP activations)")
    # activation
    activation: str = _f("poly", "poly (polynomial, fused op) or relu (baseline)")
    degree: int = _f(22, "polynomial degree")
    bound: float | None = _f(None, "B: the fit interval [-B, B] (default: preset for the degree)")
    alpha: float | None = _f(None, "the boundary penalty starts at alpha*B (default: preset for the degree)")
    target: str = _f("relu", "activation the polynomial is fitted to")
    basis: str = _f("chebyshev", "coefficient basis: chebyshev (Clenshaw) or monomial (Horner)")
    fit_method: str = _f("lstsq", "fit: least squares or remez (minimax)")
    learnable: bool = _f(False, "train the polynomial coefficients (learning rate coeff_lr_scale * lr)")
    # objective and optimisation
    epochs: int = _f(10, "training epochs")
    max_steps: int = _f(0, "end the run after this many optimizer steps in total, the epoch it stops in "
                           "counting as complete (0: no limit; for smoke tests)")
    boundary_loss: bool = _f(True, "add lambda * sum of boundary terms to the loss")
    lam: float = _f(1000.0, "lambda, the boundary-loss weight (the paper's value)")
    lr: float = _f(1e-3, "AdamW learning rate")
    coeff_lr_scale: float = _f(0.1, "learning rate of learnable coefficients, as a multiple of lr")
    weight_decay: float = _f(5e-4, "AdamW weight decay (not applied to BatchNorm, biases, coefficients)")
    clip: str = _f("selective", "gradient clipping: selective (all but BatchNorm), all, none")
    clip_norm: float = _f(1.0, "max global gradient norm c")
    scheduler: str = _f("plateau", "learning-rate schedule: plateau (ReduceLROnPlateau on val loss), cosine, none")
    plateau_factor: float = _f(0.5, "ReduceLROnPlateau factor")
    plateau_patience: int = _f(2, "ReduceLROnPlateau patience (epochs)")
    # divergence guard
    guard: bool = _f(True, "skip steps with a non-finite loss or gradient and roll back after guard_patience "
                           "in a row; off: stop at the first one and record the divergence")
    guard_patience: int = _f(5, "consecutive non-finite steps before rolling back to the last checkpoint")
    rollback_lr_factor: float = _f(0.5, "learning rate multiplier at each rollback")
    max_rollbacks: int = _f(3, "rollbacks before the run is declared diverged")
    # run
    seed: int = _f(0, "random seed (data order, init, dropout); runs are reproducible on CPU")
    device: str = _f("auto", "auto (cuda if available), cpu or cuda")
    bf16: bool = _f(False, "bfloat16 autocast (CUDA only)")
    channels_last: bool = _f(False, "channels_last memory format for image models (CUDA only)")
    out_dir: str = _f("runs/default", "directory for checkpoints, metrics, summary and plots")
    resume: str = _f("", "resume from a checkpoint: 'last' (OUT_DIR/last.pt) or a path")
    overwrite: bool = _f(False, "start afresh in an OUT_DIR that already holds a run (its checkpoints are replaced)")
    progress: bool = _f(True, "tqdm progress bar per epoch")
    plots: bool = _f(True, "write PNG plots at the end of the run")

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if name == "model" and value.startswith("torchvision:"):
                continue
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}"
                                 f"{' or torchvision:NAME' if name == 'model' else ''}, got {value!r}")
        positive = ("batch_size", "lr", "clip_norm", "degree", "rollback_lr_factor", "guard_patience")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("epochs", "max_steps", "train_subset", "workers", "max_rollbacks", "lam", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        try:
            self.hidden_sizes()
        except ValueError:
            raise ValueError(f"hidden must be comma-separated positive integers, got {self.hidden!r}") from None

    def hidden_sizes(self) -> list[int]:
        sizes = [int(s) for s in str(self.hidden).split(",") if s.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(self.hidden)
        return sizes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_of(f: dataclasses.Field):
    t = str(f.type)
    return {"int": int, "float": float, "str": str, "bool": bool}.get(t.split(" ")[0], float)


def build_parser() -> argparse.ArgumentParser:
    """Every field of TrainConfig is a flag (underscores become dashes); booleans
    get --x / --no-x. Defaults are SUPPRESSed so that only flags actually given
    override the config file."""
    p = argparse.ArgumentParser(
        prog="pnn-train",
        description="Train a polynomial neural network (fused polynomial activations, exponential boundary "
                    "loss, selective gradient clipping). Also: python -m pnn_ext.train; distributed: "
                    "torchrun --nproc_per_node N -m pnn_ext.train ...",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML or JSON file of settings (keys as below, dashes or underscores); "
                                    "flags given on the command line override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"] + f" (default: {f.default})"
        kind = _type_of(f)
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        elif f.name in CHOICES and f.name != "model":
            p.add_argument(flag, choices=CHOICES[f.name], help=help_)
        elif f.name in ("bound", "alpha"):
            p.add_argument(flag, type=float, help=help_)
        else:
            p.add_argument(flag, type=kind, help=help_)
    return p


def load_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as fh:
        text = fh.read()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml
        data = yaml.safe_load(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of settings, got {type(data).__name__}")
    known = {f.name: f for f in fields(TrainConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"config file {path!r}: unknown setting {key!r}")
        try:
            out[name] = _coerce(value, known[name])
        except ValueError:
            raise ValueError(f"config file {path!r}: {key} must be {_type_name(known[name])}, got {value!r}") from None
    return out


def _type_name(f: dataclasses.Field) -> str:
    return _type_of(f).__name__ + (" or null" if "None" in str(f.type) else "")


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _coerce(value, f: dataclasses.Field):
    """A file value as the field's type. YAML 1.1 reads 1e-3 (no dot) as a string and
    JSON has no ints-vs-floats discipline, so values are converted, and refused when
    they are not what the setting is (never silently kept as the wrong type)."""
    kind = _type_of(f)
    if value is None:
        if "None" in str(f.type):
            return None
        raise ValueError(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE:
            return True
        if str(value).strip().lower() in _FALSE:
            return False
        raise ValueError(value)
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise ValueError(value)
    if kind is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    if kind is float:
        return float(value)
    return str(value)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the --config file, then the flags given."""
    args = vars(build_parser().parse_args(argv))
    settings: dict[str, Any] = {}
    path = args.pop("config", None)
    if path:
        settings.update(load_file(path))
    settings.update(args)
    return TrainConfig(**settings)
