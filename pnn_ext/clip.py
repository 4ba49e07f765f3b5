"""Selective gradient clipping: clip every parameter's gradient except BatchNorm's."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def non_batchnorm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model`` not owned by a BatchNorm module (found by type, not name).

    A parameter shared between a BatchNorm and another module counts as BatchNorm's."""
    bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)}
    return [p for p in model.parameters() if id(p) not in bn]


def clip_grad_norm_selective_(model: nn.Module, max_norm: float, norm_type: float = 2.0,
                              error_if_nonfinite: bool = False) -> torch.Tensor:
    """Clip the total gradient norm of all non-BatchNorm parameters to ``max_norm``.

    BatchNorm weights and biases keep their unclipped gradients (the paper's
    selective clipping). Returns the total norm of the clipped set, before
    clipping, as ``torch.nn.utils.clip_grad_norm_`` does.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    return torch.nn.utils.clip_grad_norm_(non_batchnorm_parameters(model), max_norm, norm_type=norm_type,
                                          error_if_nonfinite=error_if_nonfinite)
