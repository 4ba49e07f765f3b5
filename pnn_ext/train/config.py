"""The run configuration: one dataclass, the command line built from it, and a
YAML/JSON file. Precedence: built-in defaults < config file < command-line flags.

Defaults the library shares (degree, basis, target, fit method, lambda, activation
position, normalisation, MLP sizes) are read from the library modules that define
them, so the command line and the library cannot disagree. Each setting's type is
its annotation, read with typing.get_type_hints: int, float, str, bool, X | None,
list[X] or tuple[X, ...].

Over 400 lines because every setting of pnn-train is declared here once, with its help
text, type and checks (the flags, the config file and the docs' flag table all read it);
splitting the list would scatter one table."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from .. import fitting, models
from .. import nn as pnn_nn
from ..errors import ArgumentParser
from ..reference import BASES, BOUNDARY_FORMS
from .model_registry import MODELS, TORCHVISION

# The default of a polynomial run whose B is the preset (or auto): one epoch at that wide B,
# then each layer's B = 1.3 q / 0.9^2 = 1.6 q (q the 0.999 quantile of |x| it sees then), the
# penalty from 0.9 B = 1.44 q: just above the cliff of the stability map (alpha B of 1.2-1.6 q at
# initialisation), where a degree-22 fit of ReLU is about 6 times sharper than at B = 47.
# Fashion-MNIST, small CNN, 3 seeds: 1.2 points behind ReLU before, 0.5 after (docs/accuracy.md).
RECALIBRATE_EPOCH, RECALIBRATE_MARGIN, RECALIBRATE_ALPHA = 1, 1.3, 0.9

CHOICES = {
    "model": tuple(MODELS),  # or "torchvision:NAME"
    "activation": ("poly", "relu", "silu", "gelu"),
    "act_position": models.ACT_POSITIONS,
    "norm": models.NORMS,
    "basis": BASES,
    "target": tuple(fitting.TARGETS),
    "fit_method": fitting.METHODS,
    "fit_weight": ("uniform", "inputs"),
    "clip": ("selective", "all", "none"),
    "scheduler": ("plateau", "cosine", "none"),
    "device": ("auto", "cpu", "cuda"),
    "augment": ("auto", "on", "off"),
    "layout": ("auto", "image", "sequence", "features"),
    "boundary_form": BOUNDARY_FORMS,
    "replace": ("all", "progressive"),
}


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # data
    dataset: str = _f("digits", "digits | mnist | fashion-mnist | cifar10 | cifar100 | npz:PATH")
    data_dir: str = _f("", "where datasets live: MNIST's original idx files (in DATA_DIR, DATA_DIR/raw or "
                           "DATA_DIR/MNIST/raw; nothing is downloaded when they are present), CIFAR archives",
                       shown="$PNN_DATA, else ./data")
    num_classes: int = _f(0, "classes K: labels must be 0..K-1 (0: K is one more than the largest label, and "
                              "every class below it must have a sample)")
    layout: str = _f("auto", "how npz inputs are read: auto (4-D and 3-D arrays are images N×C×H×W / N×H×W, "
                             "2-D are features N×F), image, sequence (3-D N×C×T), features")
    val_fraction: float = _f(0.1, "fraction of the training set held out for validation")
    train_subset: int = _f(0, "use only this many training samples (0: all); for quick runs")
    augment: str = _f("auto", "random crop + horizontal flip: auto (on for CIFAR), on, off")
    batch_size: int = _f(128, "batch size per process")
    workers: int = _f(0, "DataLoader worker processes")
    # model
    model: str = _f("small-cnn", "small-cnn | mlp | resnet18 | cnn1d (1-D convolutions for sequences N×C×T; "
                                 "with --layout auto it reads N×H×W images row by row: T = H rows of W "
                                 "pixels) | torchvision:NAME (any torchvision classifier)")
    hidden: str = _f(",".join(map(str, models.MLP_HIDDEN)), "MLP hidden sizes, comma separated")
    norm: str = _f(models.NORM, "normalisation layers: batch (BatchNorm) or none")
    act_position: str = _f(models.ACT_POSITION, "activation before BatchNorm (conv-act-bn, the published setup) "
                                                "or after it (conv-bn-act)")
    dropout: float = _f(0.0, "dropout probability before the classifier (and after MLP activations)")
    # activation
    activation: str = _f("poly", "poly (polynomial, fused op), or an exact baseline: relu, silu or gelu "
                                 "(the network a smooth --target approximates)")
    degree: int = _f(fitting.DEGREE, f"polynomial degree, 1..{fitting.MAX_DEGREE}")
    # str, not float: "auto" is a value; __post_init__ turns numbers into floats.
    bound: str | None = _f(None, "B: the fit interval [-B, B], a number or auto: per layer, B = calibrate_margin x "
                                 "the calibrate_quantile of |x| at initialisation / alpha^2 (default: preset for "
                                 "the degree)")
    calibrate_quantile: float = _f(0.999, "--bound auto: the quantile of |x| measured per layer")
    calibrate_margin: float = _f(2.5, "--bound auto: B = margin x that quantile / alpha^2")
    calibrate_samples: int = _f(1024, "--bound auto: training samples in the calibration pass")
    recalibrate_epoch: int | None = _f(None, "after this many epochs, set each layer's B and alpha again from the "
                                             "inputs it sees then (B = recalibrate_margin x the calibrate_quantile "
                                             "of |x| / recalibrate_alpha^2) and refit its polynomial there "
                                             "(learnable coefficients restart from that fit); 0: never",
                                       shown="1 for a polynomial run whose B is the preset or auto, else 0")
    recalibrate_margin: float = _f(RECALIBRATE_MARGIN, "--recalibrate-epoch: B = margin x the quantile / "
                                                       "recalibrate_alpha^2")
    recalibrate_alpha: float | None = _f(None, "--recalibrate-epoch: each layer's alpha from then on (the boundary "
                                               "penalty starts at alpha*B)",
                                         shown=f"--alpha if given, else {RECALIBRATE_ALPHA}")
    alpha: float | None = _f(None, "the boundary penalty starts at alpha*B (default: preset for the degree)")
    target: str = _f(fitting.TARGET, "activation the polynomial is fitted to")
    basis: str = _f(fitting.BASIS, "coefficient basis: chebyshev (Clenshaw) or monomial (Horner)")
    fit_method: str = _f(fitting.METHOD, "fit: least squares or remez (minimax)")
    fit_weight: str = _f("uniform", "least-squares weight over [-B, B]: uniform, or inputs (each layer's fit "
                                    "weighted by the inputs it sees at initialisation, measured in the "
                                    "--bound auto calibration pass; see pnn_ext.train.calibrate)")
    learnable: bool = _f(False, "train the polynomial coefficients (learning rate coeff_lr_scale * lr)")
    # fine-tuning (pnn_ext.train.finetune)
    init_from: str = _f("", "start from a trained run's checkpoint or run directory (a ReLU run, or a PNN of "
                            "another degree): every weight and BatchNorm statistic but the activations, which "
                            "come from this run's settings (fitted afresh); the architectures must match")
    replace: str = _f("all", "activations at the start: all polynomial from the first step, or progressive: "
                             "polynomial one layer after another (in module order, input side first), the others "
                             "running the function they are fitted to, over the first --replace-epochs epochs")
    replace_epochs: float = _f(1.0, "with --replace progressive: epochs over which the layers are swapped "
                                    "(layer i of n from step floor(i/n * replace_epochs * steps per epoch))")
    teacher: str = _f("", "distil from a trained run (its directory or checkpoint; a ReLU network or a PNN, "
                          "same data): the loss becomes (1 - distill_weight) x CE + distill_weight x T^2 x "
                          "KL(teacher || student at temperature T) + lambda x boundary terms")
    distill_weight: float = _f(0.5, "--teacher: weight of the teacher's soft targets (0..1)")
    distill_temperature: float = _f(4.0, "--teacher: softmax temperature T of teacher and student")
    # objective and optimisation
    epochs: int = _f(10, "training epochs")
    max_steps: int = _f(0, "end the run after this many optimizer steps in total, the epoch it stops in "
                           "counting as complete (0: no limit; for smoke tests)")
    boundary_loss: bool = _f(True, "add lambda * sum of boundary terms to the loss")
    boundary_form: str = _f("exp", "shape of each boundary term: exp (the paper's, mean expm1(|x| - alpha*B) past "
                                   "alpha*B) or quadratic (mean max(|x| - alpha*B, 0)^2, the paper's suggested check)")
    lam: float = _f(pnn_nn.LAMBDA, "lambda, the boundary-loss weight (the paper's value)")
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
    overwrite: bool = _f(False, "start afresh in an OUT_DIR that already holds a run (its checkpoints are replaced, "
                                "once every setting, the data, the model and one forward pass have been checked)")
    allow_changes: bool = _f(False, "with --resume: accept training settings that differ from the checkpoint's "
                                    "(they apply from the resumed epoch on and are recorded in summary.json); "
                                    "without it such a resume is refused, naming each difference")
    progress: bool = _f(True, "tqdm progress bar per epoch")
    plots: bool = _f(True, "write PNG plots at the end of the run")

    def __post_init__(self) -> None:
        if not self.data_dir:
            self.data_dir = os.environ.get("PNN_DATA") or "data"
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if name == "model" and value.startswith(TORCHVISION):
                continue
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}"
                                 f"{' or torchvision:NAME' if name == 'model' else ''}, got {value!r}")
        self._check_types()
        fitting.check_degree(self.degree)
        for name, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        positive = ("batch_size", "lr", "clip_norm", "rollback_lr_factor", "guard_patience", "coeff_lr_scale",
                    "plateau_factor", "alpha", "replace_epochs", "distill_temperature", "recalibrate_margin",
                    "recalibrate_alpha")
        for name in positive:
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("epochs", "max_steps", "train_subset", "workers", "max_rollbacks", "lam", "weight_decay",
                     "plateau_patience", "num_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.recalibrate_epoch is not None and self.recalibrate_epoch < 0:
            raise ValueError(f"recalibrate_epoch must be >= 0, got {self.recalibrate_epoch!r}")
        if self.recalibrate_epoch and not self.recalibrate_epoch < self.epochs:
            raise ValueError(f"recalibrate_epoch ({self.recalibrate_epoch}) must be below epochs ({self.epochs}): "
                             f"B is set again after that many epochs, before the next one")
        if self.fit_weight == "inputs" and self.fit_method != "lstsq":
            raise ValueError(f"fit_weight inputs weights the least-squares fit: it needs fit_method lstsq, got "
                             f"{self.fit_method!r}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight!r}")
        if not self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be < 1, got {self.plateau_factor!r}")
        if not self.rollback_lr_factor <= 1:
            raise ValueError(f"rollback_lr_factor must be <= 1, got {self.rollback_lr_factor!r}")
        if not 0 <= self.seed < 2 ** 32:  # numpy's seed range
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: --resume continues the run in OUT_DIR, "
                             "--overwrite replaces it")
        if self.allow_changes and not self.resume:
            raise ValueError("allow_changes is for --resume (settings that differ from the checkpoint's)")
        if not self.out_dir:
            raise ValueError("out_dir must not be empty")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.bound is not None and self.bound != "auto":
            try:
                self.bound = float(self.bound)
            except ValueError:
                raise ValueError(f"bound must be a number > 0 or auto, got {self.bound!r}") from None
            if not (0 < self.bound < float("inf")):
                raise ValueError(f"bound must be a number > 0 or auto, got {self.bound!r}")
        if not (0 < self.calibrate_quantile <= 1 and self.calibrate_margin > 0 and self.calibrate_samples > 0):
            raise ValueError("calibrate_quantile must be in (0, 1], calibrate_margin and calibrate_samples > 0")
        if self.replace == "progressive" and self.activation != "poly":
            raise ValueError("replace progressive swaps in polynomial activations: it needs --activation poly")
        if self.replace == "progressive" and self.replace_epochs > self.epochs:
            raise ValueError(f"replace_epochs ({self.replace_epochs:g}) must not exceed epochs ({self.epochs}): "
                             f"the run would end before every activation is polynomial")
        try:
            self.hidden_sizes()
        except ValueError:
            raise ValueError(f"hidden must be comma-separated positive integers, got {self.hidden!r}") from None

    def _check_types(self) -> None:
        """Settings given from Python (train(lr="0.1"), TrainConfig(degree=True)) are held to
        their annotations as the command line and config files are."""
        for name, hint in setting_types().items():
            kind, optional = _unwrap(hint)
            value = getattr(self, name)
            if value is None and optional:
                continue
            if name == "bound" and isinstance(value, (int, float)) and not isinstance(value, bool):
                continue  # str so that "auto" is a value; a number is checked (and made a float) below
            ok = (isinstance(value, bool) if kind is bool else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
                  isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
            if not ok:
                raise ValueError(f"{name} must be {_type_name(hint)}, got {value!r}")
            if kind is float:
                setattr(self, name, float(value))

    def recalibrate_after(self) -> int:
        """--recalibrate-epoch as it applies: the value given, else RECALIBRATE_EPOCH for a
        polynomial run whose B is the preset or auto (0 for a B given as a number, and for
        the exact baselines). Left unresolved in the settings, so that a run resumed for
        more epochs (or a one-epoch run) keeps the same settings; a run that ends before
        that epoch simply never recalibrates."""
        if self.recalibrate_epoch is not None:
            return self.recalibrate_epoch
        return RECALIBRATE_EPOCH if self.activation == "poly" and self.bound in (None, "auto") else 0

    def recalibrated_alpha(self) -> float:
        """Each layer's alpha after a recalibration: recalibrate_alpha, else --alpha, else
        RECALIBRATE_ALPHA."""
        return next(a for a in (self.recalibrate_alpha, self.alpha, RECALIBRATE_ALPHA) if a is not None)

    def hidden_sizes(self) -> list[int]:
        sizes = [int(s) for s in str(self.hidden).split(",") if s.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(self.hidden)
        return sizes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting_types(cls: type | None = None) -> dict[str, Any]:
    """Each setting's type, from the annotations as type objects (not their text).
    A setting of a type that :func:`coerce` cannot read is a TypeError here."""
    return dict(_setting_types(cls or TrainConfig))


@functools.cache
def _setting_types(cls: type) -> dict[str, Any]:
    # Cached: get_type_hints evaluates every annotation's text, ~4 ms a call, and every
    # TrainConfig checks its types (pnn-sweep builds one per cell before any run).
    hints = typing.get_type_hints(cls)
    for name, hint in hints.items():
        kind, _ = _unwrap(hint)
        if (_item_type(kind) or kind) not in (int, float, str, bool):
            raise TypeError(f"setting {name}: unsupported type {hint!r} (int, float, str, bool, X | None, "
                            f"list[X] or tuple[X, ...])")
    return hints


def _unwrap(hint) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported setting type {hint!r}")
        return args[0], True
    return hint, False


def _item_type(hint) -> Any | None:
    """X for list[X] and tuple[X, ...], else None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _type_name(hint) -> str:
    kind, optional = _unwrap(hint)
    item = _item_type(kind)
    name = f"a comma-separated list of {item.__name__}" if item is not None else kind.__name__
    return name + (" or null" if optional else "")


def build_parser() -> argparse.ArgumentParser:
    """Every field of TrainConfig is a flag (underscores become dashes); booleans
    get --x / --no-x. Defaults are SUPPRESSed so that only flags actually given
    override the config file."""
    p = ArgumentParser(
        prog="pnn-train",
        description="Train a polynomial neural network (fused polynomial activations, exponential boundary "
                    "loss, selective gradient clipping). Also: python -m pnn_ext.train; distributed: "
                    "torchrun --nproc_per_node N -m pnn_ext.train ...",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML or JSON file of settings (keys as below, dashes or underscores); "
                                    "flags given on the command line override it")
    hints = setting_types()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"] + f" (default: {f.metadata.get('shown', f.default)})"
        kind, _ = _unwrap(hints[f.name])
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        elif f.name in CHOICES and f.name != "model":
            p.add_argument(flag, choices=CHOICES[f.name], help=help_)
        else:
            p.add_argument(flag, type=_flag_parser(hints[f.name], f.name), help=help_)
    return p


def _flag_parser(hint, name: str):
    """argparse's type= for a setting: the value as the setting's type, or an error naming it."""
    def parse(text: str):
        try:
            return coerce(text, hint)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {_type_name(hint)}, got {text!r}") from None
    parse.__name__ = _type_name(hint)
    return parse


def load_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    try:
        with open(path) as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path!r} cannot be read: {e}") from None
    import yaml
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        where = " ".join(str(e).split())
        raise ValueError(f"config file {path!r} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                         f"{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of settings, got {type(data).__name__}")
    hints = setting_types()
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            raise ValueError(f"config file {path!r}: unknown setting {key!r}")
        try:
            out[name] = coerce(value, hints[name])
        except ValueError:
            raise ValueError(f"config file {path!r}: {key} must be {_type_name(hints[name])}, got {value!r}") from None
    return out


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce(value, hint):
    """A file or flag value as the type ``hint`` (a type object: int, float, str, bool,
    X | None, list[X], tuple[X, ...]). YAML 1.1 reads 1e-3 (no dot) as a string, JSON
    has no ints-vs-floats discipline and flags are text, so values are converted,
    and refused (ValueError) when they are not what the setting is, never kept as
    the wrong type. An annotation of any other kind is a TypeError."""
    kind, optional = _unwrap(hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(value)
    item = _item_type(kind)
    if item is not None:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(value)
        items = [coerce(v, item) for v in value]
        return items if typing.get_origin(kind) is list else tuple(items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE:
            return True
        if str(value).strip().lower() in _FALSE:
            return False
        raise ValueError(value)
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise ValueError(value)
    if kind is int:
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
            return int(value)
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    if kind is float:
        return float(value)
    if kind is str:
        return str(value)
    raise TypeError(f"unsupported setting type {hint!r}")


@functools.cache
def shared_parser() -> argparse.ArgumentParser:
    """One parser for every parse_config call (building it takes milliseconds; pnn-sweep
    parses every cell's command)."""
    return build_parser()


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the --config file, then the flags given."""
    args = vars(shared_parser().parse_args(argv))
    settings: dict[str, Any] = {}
    path = args.pop("config", None)
    if path:
        settings.update(load_file(path))
    settings.update(args)
    return TrainConfig(**settings)
