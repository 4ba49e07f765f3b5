"""pnn-train's ``--model`` names, one registry (the flag's choices come from it): the
models of :mod:`pnn_ext.models` and any torchvision classifier ("torchvision:NAME"),
built from a TrainConfig, initialised and converted (a torchvision model's report of
what stays not polynomial is printed)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import fitting
from ..conversion import convert, polynomial_report
from ..conversion.modules import replace_modules
from ..models import MLP, CNN1d, CryptoNets, ResNet18, SmallCNN, kaiming_uniform_init
from ..nn import poly_modules


class RepeatChannels(nn.Module):
    """Grey images for models that expect RGB."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1)  # fixed rank: torch.fx (convert) traces it


def _torchvision(name: str, in_shape, num_classes: int) -> nn.Module:
    import torchvision
    # Vision transformers are built for one image size (224 unless told).
    size = {"image_size": in_shape[-1]} if name.startswith("vit_") else {}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **size)
    except (ValueError, AssertionError) as e:
        raise ValueError(f"model torchvision:{name}: {e}") from None
    if in_shape[0] == 1:
        return nn.Sequential(RepeatChannels(3), model)
    if in_shape[0] != 3:
        raise ValueError(f"model torchvision:{name} expects 1- or 3-channel images, got {in_shape[0]} channels")
    return model


def _torchvision_report(name: str, model: nn.Module, in_shape) -> None:
    """Print what is left that is not polynomial; refuse a polynomial run without a polynomial."""
    try:
        report = polynomial_report(model, torch.zeros(2, *in_shape))
    except RuntimeError as e:  # the first forward: a model too deep for the image size fails here
        raise ValueError(f"model {name} cannot run on samples of shape {tuple(in_shape)}: "
                         f"{str(e).splitlines()[0]}") from None
    if not report.polynomial_layers:
        raise ValueError(f"model {name} has no activation convert() makes polynomial ({report.summary()}): "
                         f"a 'poly' run of it would train no polynomial; use --activation relu")
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{name}: {report}", flush=True)


def _features(in_shape) -> int:
    n = 1
    for s in in_shape:
        n *= s
    return n


@dataclass(frozen=True)
class ModelEntry:
    """A ``--model`` name: ``build(cfg, in_shape, num_classes)``, the input layout it needs
    (None: any), what that is in words and the hint given when the data has another."""
    build: Callable[..., nn.Module]
    layout: str | None = None
    needs: str = ""
    hint: str = ""


_IMAGES = {"layout": "image", "needs": "images (N, C, H, W)", "hint": "use --model mlp"}
MODELS: dict[str, ModelEntry] = {
    "small-cnn": ModelEntry(lambda cfg, s, k: SmallCNN(s[0], k, s[1:], cfg.norm, cfg.act_position, cfg.dropout),
                            **_IMAGES),
    "mlp": ModelEntry(lambda cfg, s, k: MLP(_features(s), k, cfg.hidden_sizes(), cfg.norm, cfg.act_position,
                                            cfg.dropout)),
    "resnet18": ModelEntry(lambda cfg, s, k: ResNet18(s[0], k, cfg.norm, cfg.act_position, cfg.dropout), **_IMAGES),
    "cnn1d": ModelEntry(lambda cfg, s, k: CNN1d(s[0], k, s[1], norm=cfg.norm, act_position=cfg.act_position,
                                                dropout=cfg.dropout),
                        layout="sequence", needs="sequences (N, C, T)", hint="use --layout sequence"),
    "cryptonets": ModelEntry(lambda cfg, s, k: CryptoNets(s[0], k, s[1:], cfg.norm, cfg.act_position, cfg.dropout),
                             **_IMAGES),
}
# --activation silu / gelu: exact baselines, the networks a smooth --target approximates
EXACT_BASELINES: dict[str, Callable[[], nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU}
TORCHVISION = "torchvision:"  # any torchvision classifier: "torchvision:resnet18"
_TORCHVISION_ENTRY = ModelEntry(lambda cfg, s, k: _torchvision(cfg.model[len(TORCHVISION):], s, k), **_IMAGES)


def model_entry(name: str) -> ModelEntry:
    """The registry's entry for a ``--model`` name (ValueError naming the choices)."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith(TORCHVISION) and len(name) > len(TORCHVISION):
        return _TORCHVISION_ENTRY
    raise ValueError(f"model must be one of {list(MODELS)} or {TORCHVISION}NAME, got {name!r}")


def build_model(cfg, in_shape: tuple[int, ...], layout: str, num_classes: int) -> nn.Module:
    """The model a TrainConfig asks for, for samples of ``in_shape``: kaiming-uniform
    initialised, and polynomial (converted) when cfg.activation == "poly"."""
    name = cfg.model
    entry = model_entry(name)
    if entry.layout is not None and layout != entry.layout:
        raise ValueError(f"model {name} needs {entry.needs}; {cfg.dataset} has layout {layout}: {entry.hint}")
    model = entry.build(cfg, in_shape, num_classes)
    kaiming_uniform_init(model)
    if cfg.activation in EXACT_BASELINES:  # every nn.ReLU (and a transformer's F.relu) becomes it
        replace_modules(model, lambda name, params: EXACT_BASELINES[cfg.activation if name == "relu" else name](),
                        (nn.ReLU,), max_pool=None)
    if cfg.activation == "poly":
        # --target's default (relu) is what pnn_ext's models use; a torchvision model's
        # activations are each fitted to their own function unless another target is asked.
        own = name.startswith(TORCHVISION) and cfg.target == fitting.TARGET
        # --bound auto starts from the preset; the trainer calibrates (pnn_ext.train.calibrate)
        bound = None if cfg.bound == "auto" else cfg.bound
        model = convert(model, degree=cfg.degree, bound=bound, alpha=cfg.alpha, basis=cfg.basis,
                        learnable=cfg.learnable, method=cfg.fit_method, target=None if own else cfg.target)
        if name.startswith(TORCHVISION):
            _torchvision_report(name, model, in_shape)
        for m in poly_modules(model):
            m.boundary_form = cfg.boundary_form
    return model
