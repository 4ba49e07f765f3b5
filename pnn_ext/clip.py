"""Selective gradient clipping: clip every parameter's gradient except BatchNorm's."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def split_batchnorm_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters owned by a BatchNorm module, all others), found by type, not name.

    A parameter shared between a BatchNorm and another module counts as BatchNorm's."""
    bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)}
    params = list(model.parameters())
    return [p for p in params if id(p) in bn], [p for p in params if id(p) not in bn]


def non_batchnorm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model`` not owned by a BatchNorm module."""
    return split_batchnorm_parameters(model)[1]


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


def _grad_norm(params: list[nn.Parameter], device) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, 2.0) if grads else torch.zeros((), device=device)


def clip_gradients(model: nn.Module, mode: str, max_norm: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip as ``mode`` says and return (norm of the non-BatchNorm gradients, norm of
    the BatchNorm gradients), both before clipping and without a host sync, so that a
    training loop can check them for finiteness. selective: only the non-BN set is
    scaled to max_norm (as clip_grad_norm_selective_); all: every gradient is scaled by
    one factor from the total norm (standard clipping); none: nothing is scaled."""
    bn, other = split_batchnorm_parameters(model)
    n_other, n_bn = _grad_norm(other, device), _grad_norm(bn, device)
    if mode == "selective":
        torch.nn.utils.clip_grads_with_norm_(other, max_norm, n_other)
    elif mode == "all":
        total = torch.linalg.vector_norm(torch.stack([n_other, n_bn]))
        torch.nn.utils.clip_grads_with_norm_(bn + other, max_norm, total)
    elif mode != "none":
        raise ValueError(f"mode must be 'selective', 'all' or 'none', got {mode!r}")
    return n_other, n_bn
