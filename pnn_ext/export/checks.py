"""What every exporter checks: the model and inputs it is given, and the exported artefact's
outputs against PyTorch's at several batch sizes (the batch dimension is dynamic)."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..atomic_file import directory_problem

# Agreement required by default: max |exported - PyTorch| <= TOLERANCE * max |PyTorch| per output
# (LOW_PRECISION_TOLERANCE for float16/bfloat16 outputs, whose own rounding is ~1e-3).
TOLERANCE = 1e-4
LOW_PRECISION_TOLERANCE = 1e-2
CHECK_BATCH_SIZES = (1, 7)  # besides the example's own


class ExportError(ValueError):
    """A model, input or path an exporter cannot use, or an artefact that disagrees with PyTorch."""


def check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise ExportError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ExportError("model is in training mode (batch norm and dropout would be exported in their training "
                          "behaviour): call model.eval() first")


def check_path(path: str, suffix: str) -> None:
    if not str(path).endswith(suffix):
        raise ExportError(f"path must end in {suffix}, got {path!r}")
    if (why := directory_problem(path)) is not None:
        raise ExportError(f"path {path}: {why}")


def check_inputs(example_input) -> tuple[torch.Tensor, ...]:
    """``example_input`` (a tensor or tuple of tensors, batch first, on the CPU) as a tuple."""
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(torch.is_tensor(t) for t in inputs):
        raise ExportError("example_input must be a tensor or a tuple of tensors")
    for t in inputs:
        if t.dim() == 0 or t.shape[0] < 1:
            raise ExportError(f"example_input: every tensor needs a batch dimension (dim 0), got shape "
                              f"{tuple(t.shape)}")
        if t.device.type != "cpu":
            raise ExportError(f"example_input must be on the CPU (the export is checked there), got {t.device}")
    return inputs


def outputs(out) -> tuple[torch.Tensor, ...]:
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if not all(torch.is_tensor(t) for t in outs):
        raise ExportError("the model must return a tensor or a tuple of tensors")
    return outs


def batch_like(inputs: tuple[torch.Tensor, ...], size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Inputs of another batch size, drawn with each example tensor's mean and spread
    (integer tensors: the example's rows, repeated)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs:
        if not t.is_floating_point():
            out.append(t[torch.arange(size) % t.shape[0]])
            continue
        ref = t.double()
        noise = torch.randn((size, *t.shape[1:]), generator=g, dtype=torch.float64)
        spread = ref.std().nan_to_num(1.0) if ref.numel() > 1 else ref.new_ones(())
        out.append((noise * spread + ref.mean()).to(t.dtype))
    return tuple(out)


def trace_inputs(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a dimension of size 1 (no dynamic batch): trace with >= 2."""
    return inputs if inputs[0].shape[0] > 1 else batch_like(inputs, 2, seed=0)


def dynamic_batch(inputs: tuple[torch.Tensor, ...]) -> tuple[dict, ...]:
    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in inputs)


def export_program(model: nn.Module, traced: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export's program of ``model`` with a dynamic batch. PolyActivation keeps its last
    call's boundary terms and range statistics as plain attributes (training bookkeeping, not
    part of the graph), which torch.export reports as "assigned during export": not for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*boundary_terms.*were assigned during export")
        return torch.export.export(model, traced, dynamic_shapes=dynamic_batch(traced))


def relative_error(got, want: torch.Tensor) -> float:
    """max |got - want| / max |want| over want's finite entries (got: a tensor or an array);
    inf for another shape, or where got's NaN and +-inf are not exactly want's (the overflow
    rule: a polynomial past the float range is +-inf on both sides)."""
    got = (torch.as_tensor(np.asarray(got)) if not torch.is_tensor(got) else got).detach().double()
    want = want.detach().double()
    if tuple(got.shape) != tuple(want.shape):
        return float("inf")
    finite = want.isfinite()
    if not torch.equal(got.isnan(), want.isnan()) or not torch.equal(got[want.isinf()], want[want.isinf()]):
        return float("inf")
    if not finite.any():
        return 0.0
    return float((got[finite] - want[finite]).abs().max() / want[finite].abs().max().clamp(min=1e-30))


def verify(model: nn.Module, run: Callable, inputs: tuple[torch.Tensor, ...], tolerance: float | None,
           what: str, path: str) -> tuple[tuple[int, ...], float, float]:
    """Run ``run(*inputs)`` (the exported artefact) and ``model`` at the example's batch size and
    CHECK_BATCH_SIZES; (batch sizes, worst relative error, tolerance used), or ExportError
    (the file at ``path`` removed) if any output is further from PyTorch than the tolerance."""
    sizes = tuple(dict.fromkeys((inputs[0].shape[0], *CHECK_BATCH_SIZES)))
    worst, limit = 0.0, tolerance or TOLERANCE
    with torch.no_grad():
        for size in sizes:
            xs = inputs if size == inputs[0].shape[0] else batch_like(inputs, size, seed=size)
            for want, got in zip(outputs(model(*xs)), run(*xs)):
                low = want.dtype in (torch.float16, torch.bfloat16)
                limit = tolerance if tolerance is not None else (LOW_PRECISION_TOLERANCE if low else TOLERANCE)
                error = relative_error(got, want)
                if not error <= limit:
                    os.remove(path)
                    raise ExportError(f"{what} disagrees with PyTorch at batch size {size}: max error {error:.3g} "
                                      f"of max |y| > {limit:g} (the file was removed)")
                worst = max(worst, error)
    return sizes, worst, limit
