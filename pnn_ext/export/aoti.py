"""AOTInductor packages of models with PolyActivation: torch.export with a dynamic batch
dimension, compiled by :func:`torch._inductor.aoti_compile_and_package` into one ``.pt2``
file, then loaded back and checked against PyTorch.

The package calls the fused op through PyTorch's dispatcher, so the process that loads it
needs the op's library: ``import pnn_ext`` (nothing else of pnn_ext), then
``torch._inductor.aoti_load_package(path)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .checks import check_inputs, check_model, check_path, export_program, outputs, trace_inputs, verify


class AotiReport(NamedTuple):
    """What export_aoti wrote and how closely the loaded package reproduced PyTorch."""
    path: str
    batch_sizes: tuple[int, ...]  # the batch sizes run through the loaded package
    max_error: float              # max over outputs and batches of max|package - torch| / max|torch|
    tolerance: float


def export_aoti(model: nn.Module, example_input, path: str, *, tolerance: float | None = None) -> AotiReport:
    """Compile ``model`` (in eval mode, on the CPU) into the AOTInductor package ``path``
    (``.pt2``) with a dynamic batch dimension, load it, run it at the example's batch size,
    1 and 7, and return the report only if every output agrees with PyTorch to
    ``tolerance`` of its max |y| (default 1e-4). Raises ExportError otherwise (and removes
    the file)."""
    check_model(model)
    inputs = check_inputs(example_input)
    check_path(path, ".pt2")
    traced = trace_inputs(inputs)
    with torch.no_grad():
        program = export_program(model, traced)
        torch._inductor.aoti_compile_and_package(program, package_path=path)
    compiled = torch._inductor.aoti_load_package(path)
    sizes, worst, limit = verify(model, lambda *xs: outputs(compiled(*xs)), inputs, tolerance,
                                 "the AOTInductor package", path)
    return AotiReport(path, sizes, worst, limit)
