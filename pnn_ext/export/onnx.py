"""ONNX export of models with PolyActivation: ``pnn_ext::poly_act`` in standard ONNX operators.

:func:`poly_act_onnx` is the op's translation for the dynamo exporter
(``torch.onnx.export(..., dynamo=True, custom_translation_table=translation_table())``):
y = p(x / B) by the same Horner (monomial) or Clenshaw (Chebyshev) recurrence as
the fused kernels, in float32 (float16 inputs cast up, the result cast back; float64
in float64), unrolled into Mul/Add/Sub nodes, with the fused op's
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
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .checks import ExportError, check_inputs, check_model, check_path, export_program, trace_inputs, verify

OPSET = 18


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
    """Translation of ``pnn_ext::poly_act`` (same arguments); returns (y, NaN statistics).
    alpha and boundary_form shape only the boundary term, which is not exported."""
    from onnxscript import ir
    from onnxscript import opset18 as op
    in_type = x.dtype
    acc = ir.DataType.DOUBLE if in_type == ir.DataType.DOUBLE else ir.DataType.FLOAT
    np_dtype = np.float64 if acc == ir.DataType.DOUBLE else np.float32
    degree = coeffs.shape[0] - 1
    xa = op.Cast(x, to=acc) if in_type != acc else x
    t = op.Mul(xa, _constant(op, 1.0 / bound, np_dtype))  # as the kernels: x * (1/B)
    # c_k as scalars (constants once the optimizer folds the coefficients' initializer)
    c = [op.Gather(coeffs, _constant(op, k, np.int64)) for k in range(degree + 1)]
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


def _check_statistics_unused(graph: torch.fx.Graph) -> None:
    """The boundary term and range statistics are not exported: refuse a model whose output uses them."""
    pending = [user for node in graph.nodes if node.target is torch.ops.pnn_ext.poly_act.default
               for user in node.users if user.target is operator.getitem and user.args[1] == 1]
    seen = set()
    while pending:
        node = pending.pop()
        if node.op == "output":
            raise ExportError("the model's output uses PolyActivation's boundary term or range statistics, which "
                              "are training-only and not exported; export a model that returns predictions")
        if node not in seen:
            seen.add(node)
            pending.extend(node.users)


def export_onnx(model: nn.Module, example_input, path: str, *, tolerance: float | None = None,
                opset: int = OPSET) -> OnnxReport:
    """Export ``model`` (in eval mode) to the ONNX file ``path`` with a dynamic batch dimension,
    run the file in onnxruntime at the example's batch size, 1 and 7, and return the report
    only if every output agrees with PyTorch to ``tolerance`` of its max |y| (default 1e-4;
    1e-2 for float16 outputs). ``example_input``: a tensor or a tuple of tensors
    (the model's positional inputs, batch first). Raises ExportError otherwise (and removes
    the file)."""
    check_model(model)
    inputs = check_inputs(example_input)
    if any(t.dtype == torch.bfloat16 for t in inputs):
        raise ExportError("bfloat16 inputs cannot be checked in onnxruntime (numpy has no bfloat16): export the "
                          "model in float32 or float16")
    check_path(path, ".onnx")
    try:
        import onnxruntime
        import onnxscript.optimizer
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e}); pip install them") from None
    traced = trace_inputs(inputs)
    program = export_program(model, traced)
    _check_statistics_unused(program.graph)
    # optimize=False, then constant folding only: onnxscript's pattern rewriter (part of optimize=True)
    # costs time superlinear in the graph's size, minutes for the hundreds of nodes a few unrolled
    # high-degree polynomials make, and onnxruntime optimises the graph again when it loads it.
    onnx_program = torch.onnx.export(program, traced, dynamo=True, custom_translation_table=translation_table(),
                                     opset_version=opset, optimize=False, verbose=False)
    onnxscript.optimizer.fold_constants(onnx_program.model)
    onnxscript.optimizer.remove_unused_nodes(onnx_program.model)
    onnx_program.save(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*xs):
        return session.run(None, {name: x.numpy() for name, x in zip(names, xs)})
    sizes, worst, limit = verify(model, run, inputs, tolerance, "onnxruntime", path)
    return OnnxReport(path, sizes, worst, limit)
