"""polynomial_report(model, example_input): every operation of a forward that is not a
polynomial, an affine map or linear pooling, by module path.

The model runs once, in eval mode (where BatchNorm and dropout are affine) and
without gradients, under a TorchDispatchMode that sees each ATen operation after
PyTorch's own decompositions (so ``F.relu``, ``x.relu()`` and ``nn.ReLU`` all show
as ``relu``). Only operations on values that depend on the input count: a division
of the input by a parameter is affine, a division by another activation is not.
Values are followed from the input through every operation (a tensor is "live" if
any operand was). PolyActivation calls are the polynomials: what runs inside them
is not looked at.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..nn import PolyActivation

# ATen operations (overload packet names, in-place "_" dropped) that are polynomial, affine, linear pooling,
# or move values without computing (views, copies, concatenation, constants).
POLYNOMIAL_OPS = frozenset("""
add sub rsub mul neg square mm bmm addmm addmv addbmm baddbmm matmul dot einsum linear
convolution _convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d mkldnn_convolution
cudnn_convolution cudnn_convolution_transpose _nnpack_spatial_convolution
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
_adaptive_avg_pool2d _adaptive_avg_pool3d mean sum cumsum
view _unsafe_view reshape _reshape_alias permute transpose t expand expand_as clone contiguous cat stack
flatten unflatten unsqueeze squeeze slice select split split_with_sizes chunk unbind narrow index_select
detach alias _to_copy to copy lift_fresh as_strided resize repeat roll flip pixel_shuffle pixel_unshuffle
channel_shuffle constant_pad_nd pad im2col col2im unfold zero fill zeros_like ones_like empty_like full_like
new_empty new_zeros new_ones new_full empty_strided
_native_batch_norm_legit_no_training dropout native_dropout feature_dropout alpha_dropout
""".split())

# Readable names for the operations a user meets most.
LABELS = {
    "native_layer_norm": "layer_norm", "_softmax": "softmax", "_log_softmax": "log_softmax",
    "native_group_norm": "group_norm", "max_pool2d_with_indices": "max_pool2d",
    "max_pool3d_with_indices": "max_pool3d", "adaptive_max_pool2d": "adaptive_max_pool2d",
    "div": "division by a tensor", "reciprocal": "division by a tensor",
    "_local_scalar_dense": "value read by Python (item, if on a tensor)",
    **{c: f"comparison ({c})" for c in ("gt", "lt", "ge", "le", "eq", "ne")},
}


def _base(name: str) -> str:
    """``relu_`` -> ``relu``: an in-place operation computes what its out-of-place twin does."""
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _label(name: str) -> str:
    if "attention" in name:
        return f"attention ({name.lstrip('_')})"
    return LABELS.get(name, name)


@dataclass(frozen=True)
class Entry:
    module: str       # path of the innermost module whose forward ran the operation ("" = the model)
    module_type: str  # its class name
    op: str           # the operation ("relu", "softmax", "layer_norm", "attention (...)", "division by a tensor")
    count: int        # calls in one forward


@dataclass(frozen=True)
class PolynomialReport:
    """What a forward of the model runs that is not polynomial; ``entries`` empty = ready."""

    entries: tuple[Entry, ...]
    polynomial_calls: int    # PolyActivation calls in the forward
    polynomial_layers: int   # PolyActivation modules in the model

    @property
    def ok(self) -> bool:
        return not self.entries

    def ops(self) -> Counter:
        """Calls per operation, over all modules."""
        c: Counter = Counter()
        for e in self.entries:
            c[e.op] += e.count
        return c

    def table(self) -> str:
        rows = [(e.module or "<model>", e.module_type, e.op, str(e.count)) for e in self.entries]
        if not rows:
            return "(none)"
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(f"  {m:<{widths[0]}}  {t:<{widths[1]}}  {o:<{widths[2]}}  {n}" for m, t, o, n in rows)

    def summary(self) -> str:
        """One line: the operations left and their calls, or that none is."""
        if self.ok:
            return f"polynomial: {self.polynomial_calls} polynomial calls, nothing else that is not affine"
        left = ", ".join(f"{op} x{n}" for op, n in self.ops().most_common())
        return f"not polynomial: {left} ({self.polynomial_calls} polynomial calls)"

    def __str__(self) -> str:
        head = (f"{self.polynomial_layers} PolyActivation modules, {self.polynomial_calls} calls; "
                f"{'nothing else is not polynomial' if self.ok else 'not polynomial (module, type, op, calls):'}")
        return head if self.ok else f"{head}\n{self.table()}"


class _Recorder(TorchDispatchMode):
    def __init__(self, inputs, where: list):
        super().__init__()
        self.live = WeakIdKeyDictionary()
        for t in inputs:
            self.live[t] = True
        self.where = where  # stack of (path, type) of the modules running; "poly" inside a PolyActivation
        self.calls: Counter = Counter()

    def _is_live(self, v) -> bool:
        return isinstance(v, torch.Tensor) and v in self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        operands = tree_leaves((args, kwargs))
        if not any(self._is_live(v) for v in operands):
            return out
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.live[t] = True
        if self.where and self.where[-1] == "poly":
            return out
        name = _base(func.overloadpacket.__name__)
        if name in POLYNOMIAL_OPS or self._affine(name, func, args, kwargs):
            return out
        path, kind = self.where[-1] if self.where else ("", "")
        self.calls[(path, kind, _label(name))] += 1
        return out

    def _affine(self, name, func, args, kwargs) -> bool:
        if name == "div" and len(args) > 1:  # x / c is affine; x / y is not
            return not self._is_live(args[1]) and kwargs.get("rounding_mode") is None
        if name == "pow" and len(args) > 1 and not self._is_live(args[0]):
            return False
        if name == "pow" and len(args) > 1:  # x ** k, k a non-negative integer
            k = args[1]
            return not isinstance(k, torch.Tensor) and float(k).is_integer() and k >= 0
        if name in ("native_batch_norm", "batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm",
                    "miopen_batch_norm"):
            return not kwargs.get("training", args[5] if len(args) > 5 else True)
        return False


def _set_mode(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:  # torch.export's modules are fixed to the mode they were exported in
        pass


def polynomial_report(model: nn.Module, example_input) -> PolynomialReport:
    """Every operation one forward of ``model`` on ``example_input`` (a tensor, or a tuple
    of positional arguments) runs that is not a polynomial, an affine map or linear
    pooling: softmax, layer_norm, division by a tensor, max-pooling, attention, and
    activations left as they are. Entries are (module path, module type, op, calls),
    in the order first met. The model runs in eval mode without gradients (a
    torch.export module, fixed to its mode, in that mode); its mode is restored."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    where: list = []
    handles = []
    names = {m: n for n, m in model.named_modules()}

    def enter(m, args):
        where.append("poly" if isinstance(m, PolyActivation) or (where and where[-1] == "poly")
                     else (names.get(m, "?"), type(m).__name__))

    def leave(m, args, out):
        where.pop()

    for m in names:
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    was_training = model.training
    polys = [m for m in model.modules() if isinstance(m, PolyActivation)]
    kept = [(m.boundary_terms, m.range_stats) for m in polys]
    recorder = _Recorder([t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)], where)
    poly_calls = 0

    def count(m, args, out):
        nonlocal poly_calls
        poly_calls += 1

    handles += [m.register_forward_hook(count) for m in polys]
    try:
        _set_mode(model, False)
        with torch.no_grad(), recorder:
            model(*inputs)
    finally:
        _set_mode(model, was_training)
        for h in handles:
            h.remove()
        for m, (terms, stats) in zip(polys, kept):  # the report's forward is not a training step
            m.boundary_terms, m.range_stats = terms, stats
    entries = tuple(Entry(p, t, op, n) for (p, t, op), n in recorder.calls.items())
    return PolynomialReport(entries, poly_calls, len(polys))
