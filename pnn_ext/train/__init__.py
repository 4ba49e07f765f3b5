"""The training framework: ``pnn-train`` (see ``pnn-train --help``) and its parts.

config (TrainConfig, flags, YAML/JSON), data (datasets), models (MLP, SmallCNN,
ResNet18, torchvision), loop (Trainer: objective, clipping, divergence guard,
metrics), checkpoint (atomic, exact resume), plots, distributed, ablation."""
from .config import TrainConfig, parse_config
from .models import MLP, ResNet18, SmallCNN, build_model

__all__ = ["MLP", "ResNet18", "SmallCNN", "TrainConfig", "build_model", "parse_config", "train"]


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Run one training job in this process; returns the summary (also in OUT_DIR/summary.json)."""
    from .loop import Trainer
    cfg = TrainConfig(**{**(cfg.to_dict() if cfg else {}), **overrides})
    return Trainer(cfg).run()
