"""Evaluation of a classifier on a dataset: mean cross-entropy and accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset | None, device: torch.device | str = "cpu", batch_size: int = 256,
             bf16: bool = False, channels_last: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode over ``dataset`` (pairs
    x, y); (nan, nan) for no dataset or an empty one. The loss is summed in float64."""
    if dataset is None or len(dataset) == 0:
        return float("nan"), float("nan")
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(dataset)
    return loss.item() / n, correct.item() / n
