"""ONNX export of models with PolyActivation: ``pnn_ext::poly_act`` in standard ONNX operators.

:func:`poly_act_onnx` is the op's translation for the dynamo exporter
(``torch.onnx.export(..., dynamo=True, custom_translation_table=TRANSLATION_TABLE)``):
y = p(x / B) by the same Horner (monomial) or Clenshaw (Chebyshev) recurrence as
the fused kernels, in float32 (float16 and bfloat16 inputs cast up, the result cast
back; float64 in float64), unrolled into Mul/Add/Sub nodes, with the fused op's
overflow rule: where p(t) overflows into NaN for a non-NaN x, the result is +-inf
with the sign of the leading term (x outside [-B, B] is evaluated, never clamped).
The boundary term and the range statistics are training-only: the translation
gives NaN for them, and :func:`export_onnx` refuses a model whose output uses them.

:func:`export_onnx` exports with a dynamic batch dimension, runs the file in
onnxruntime and compares it with PyTorch before reporting success.
"""
from __future__ import annotations

import math
import operator
import os
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

# The agreement export_onnx requires: max |onnxruntime - PyTorch| <= TOLERANCE * max |PyTorch|.
TOLERANCE = 1e-4
OPSET = 18
LOW_PRECISION = (torch.float16, torch.bfloat16)


class ExportError(ValueError):
    """A model or input export_onnx cannot export, or a file that disagrees with PyTorch."""


def _constant(op, value, dtype):
    from onnxscript import ir
    return op.Constant(value=ir.tensor(np.asarray(value, dtype=dtype)))


def _overflow_to_inf(op, p, x, t, coeffs, np_dtype):
    """The fused op's rule: NaN from overflow (inf - inf in the recurrence) for a non-NaN x
    becomes +-inf with the sign of lead * t^m, m the index of the highest non-zero
    coefficient; a NaN coefficient's NaN stays."""
    from onnxscript import ir
    degree = coeffs.shape[0] - 1
    index = _constant(op, np.arange(degree + 1), np.int64)
    zero_i = _constant(op, 0, np.int64)
    m = op.ReduceMax(op.Where(op.Not(op.Equal(coeffs, _constant(op, 0, np_dtype))), index, zero_i), keepdims=0)
    lead = op.Gather(coeffs, m)
    coeffs_nan = op.Cast(op.ReduceMax(op.Cast(op.IsNaN(coeffs), to=ir.DataType.INT32), keepdims=0),
                         to=ir.DataType.BOOL)
    bad = op.And(op.And(op.IsNaN(p), op.Not(op.IsNaN(x))), op.Not(coeffs_nan))
    odd = op.Equal(op.Mod(m, _constant(op, 2, np.int64)), _constant(op, 1, np.int64))
    flip = op.And(op.Less(t, _constant(op, 0, np_dtype)), odd)
    sign = op.Mul(op.Where(flip, _constant(op, -1, np_dtype), _constant(op, 1, np_dtype)), op.Sign(lead))
    return op.Where(bad, op.Mul(sign, _constant(op, math.inf, np_dtype)), p)


def poly_act_onnx(x, coeffs, bound: float, alpha: float, basis: str, boundary_form: str = "exp"):
    """Translation of ``pnn_ext::poly_act`` (same arguments); returns (y, NaN statistics)."""
    from onnxscript import ir
    from onnxscript import opset18 as op
    in_type = x.dtype
    acc = ir.DataType.DOUBLE if in_type == ir.DataType.DOUBLE else ir.DataType.FLOAT
    np_dtype = np.float64 if acc == ir.DataType.DOUBLE else np.float32
    degree = coeffs.shape[0] - 1
    xa = op.Cast(x, to=acc) if in_type != acc else x
    t = op.Mul(xa, _constant(op, 1.0 / bound, np_dtype))  # as the kernels: x * (1/B)
    c = op.Split(coeffs, num_outputs=degree + 1)  # c_k as shape-(1,) tensors, broadcast against t
    if basis == "monomial":
        p = c[degree]
        for k in range(degree - 1, -1, -1):  # Horner
            p = op.Add(op.Mul(p, t), c[k])
    else:  # Clenshaw: b_k = 2t b_{k+1} - b_{k+2} + c_k, p = t b_1 - b_2 + c_0
        two_t = op.Mul(t, _constant(op, 2.0, np_dtype))
        b1, b2 = c[degree], None
        for k in range(degree - 1, 0, -1):
            step = op.Mul(two_t, b1)
            b1, b2 = op.Add(step if b2 is None else op.Sub(step, b2), c[k]), b1
        tb1 = op.Mul(t, b1)
        p = op.Add(tb1 if b2 is None else op.Sub(tb1, b2), c[0])
    y = _overflow_to_inf(op, p, xa, t, coeffs, np_dtype)
    y = op.Cast(y, to=in_type) if in_type != acc else y
    stats = _constant(op, [math.nan] * 3, np_dtype)  # training-only: not exported
    return y, stats


def translation_table() -> dict:
    """``custom_translation_table`` for torch.onnx.export(..., dynamo=True)."""
    from .. import ops  # noqa: F401  (loads the library: the op must exist)
    return {torch.ops.pnn_ext.poly_act.default: poly_act_onnx}


class OnnxReport(NamedTuple):
    """What export_onnx wrote and how closely onnxruntime reproduced PyTorch."""
    path: str
    batch_sizes: tuple[int, ...]  # the batch sizes run in onnxruntime
    max_error: float              # max over outputs and batches of max|onnx - torch| / max|torch|
    tolerance: float


def _inputs(example_input) -> tuple[torch.Tensor, ...]:
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(torch.is_tensor(t) for t in inputs):
        raise ExportError("example_input must be a tensor or a tuple of tensors")
    for t in inputs:
        if t.dim() == 0 or t.shape[0] < 1:
            raise ExportError(f"example_input: every tensor needs a batch dimension (dim 0), got shape "
                              f"{tuple(t.shape)}")
        if t.device.type != "cpu":
            raise ExportError(f"example_input must be on the CPU (onnxruntime checks it there), got {t.device}")
    return tuple(inputs)


def _outputs(out) -> tuple[torch.Tensor, ...]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if not all(torch.is_tensor(t) for t in outs):
        raise ExportError("the model must return a tensor or a tuple of tensors")
    return tuple(outs)


def _check_statistics_unused(graph: torch.fx.Graph) -> None:
    """The boundary term and range statistics are not exported: refuse a model whose output uses them."""
    stats = [user for node in graph.nodes if node.target is torch.ops.pnn_ext.poly_act.default
             for user in node.users if user.target is operator.getitem and user.args[1] == 1]
    seen = set()
    while stats:
        node = stats.pop()
        if node.op == "output":
            raise ExportError("the model's output uses PolyActivation's boundary term or range statistics, which "
                              "are training-only and not exported; export a model that returns predictions")
        if node not in seen:
            seen.add(node)
            stats.extend(node.users)


def _batch(inputs: tuple[torch.Tensor, ...], size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Inputs of another batch size, drawn with each example tensor's mean and spread."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs:
        if not t.is_floating_point():  # indices, masks: the example's rows, repeated
            out.append(t[torch.arange(size) % t.shape[0]])
            continue
        ref = t.double()
        noise = torch.randn((size, *t.shape[1:]), generator=g, dtype=torch.float64)
        out.append((noise * ref.std().nan_to_num(1.0) + ref.mean()).to(t.dtype))
    return tuple(out)


def _relative_error(got: np.ndarray, want: torch.Tensor) -> float:
    want64 = want.detach().double()
    err = (torch.from_numpy(np.asarray(got)).double() - want64).abs().max()
    return float(err / want64.abs().max().clamp(min=1e-30)) if want.numel() else 0.0


def export_onnx(model: nn.Module, example_input, path: str, *, tolerance: float | None = None,
                opset: int = OPSET) -> OnnxReport:
    """Export ``model`` (in eval mode) to ONNX at ``path`` with a dynamic batch dimension, run
    the file in onnxruntime at the example's batch size, 1 and 7, and return the report only
    if every output agrees with PyTorch to ``tolerance`` of its max |y| (default 1e-4 for
    float32/float64 outputs, 1e-2 for float16/bfloat16). Raises ExportError otherwise
    (and removes the file)."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ExportError("model is in training mode (batch norm and dropout would export their training "
                          "behaviour): call model.eval() first")
    inputs = _inputs(example_input)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ExportError(f"path {path}: directory {directory} does not exist")
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e}); pip install them") from None
    # torch.export specialises a dimension of size 1: trace with a batch of at least 2.
    trace_inputs = inputs if inputs[0].shape[0] > 1 else _batch(inputs, 2, seed=0)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, trace_inputs, dynamic_shapes=tuple({0: batch} for _ in trace_inputs))
    _check_statistics_unused(program.graph)
    onnx_program = torch.onnx.export(program, trace_inputs, dynamo=True, custom_translation_table=translation_table(),
                                     opset_version=opset, verbose=False)
    onnx_program.save(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    sizes = tuple(dict.fromkeys((inputs[0].shape[0], 1, 7)))
    worst, limit = 0.0, 0.0
    with torch.no_grad():
        for size in sizes:
            xs = inputs if size == inputs[0].shape[0] else _batch(inputs, size, seed=size)
            want = _outputs(model(*xs))
            got = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})
            for w, g in zip(want, got):
                if tuple(g.shape) != tuple(w.shape):
                    os.remove(path)
                    raise ExportError(f"onnxruntime gave shape {tuple(g.shape)} for batch {size}, PyTorch "
                                      f"{tuple(w.shape)}")
                limit = tolerance if tolerance is not None else (1e-2 if w.dtype in LOW_PRECISION else TOLERANCE)
                error = _relative_error(g, w)
                if not error <= limit:
                    os.remove(path)
                    raise ExportError(f"onnxruntime disagrees with PyTorch at batch {size}: max error {error:.3g} of "
                                      f"max |y| > {limit:g}; the file was removed")
                worst = max(worst, error)
    return OnnxReport(path, sizes, worst, limit)
