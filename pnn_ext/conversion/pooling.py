"""The one table of max-pooling and the average pooling that replaces it
(convert(max_pool="avg")), by dimension, in each spelling the passes meet: module,
functional call and ATen op.

Max pooling never picks a padded position; the average uses ``count_include_pad=False``
so it ignores the padding too (it divides by the number of real inputs of each window, a
constant per position, so the map stays linear). ``ceil_mode`` is kept, so the output
shape is the same. Dilation and returned indices have no average-pooling counterpart:
such pooling is kept."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten


@dataclass(frozen=True)
class Pooling:
    """Max pooling of one dimension and kind (windowed or adaptive), and its average."""
    adaptive: bool
    max_module: type[nn.Module]
    avg_module: type[nn.Module]
    max_calls: tuple[Callable, ...]
    avg_call: Callable
    max_aten: str
    avg_aten: torch._ops.OpOverload


POOLINGS: tuple[Pooling, ...] = (
    Pooling(False, nn.MaxPool1d, nn.AvgPool1d, (F.max_pool1d, torch.max_pool1d), F.avg_pool1d, "max_pool1d",
            aten.avg_pool1d.default),
    Pooling(False, nn.MaxPool2d, nn.AvgPool2d, (F.max_pool2d, torch.max_pool2d), F.avg_pool2d, "max_pool2d",
            aten.avg_pool2d.default),
    Pooling(False, nn.MaxPool3d, nn.AvgPool3d, (F.max_pool3d, torch.max_pool3d), F.avg_pool3d, "max_pool3d",
            aten.avg_pool3d.default),
    Pooling(True, nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d, (F.adaptive_max_pool1d,), F.adaptive_avg_pool1d,
            "adaptive_max_pool1d", aten.adaptive_avg_pool1d.default),
    Pooling(True, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, (F.adaptive_max_pool2d,), F.adaptive_avg_pool2d,
            "adaptive_max_pool2d", aten.adaptive_avg_pool2d.default),
    Pooling(True, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d, (F.adaptive_max_pool3d,), F.adaptive_avg_pool3d,
            "adaptive_max_pool3d", aten.adaptive_avg_pool3d.default),
)
BY_MODULE: dict[type[nn.Module], Pooling] = {p.max_module: p for p in POOLINGS}
BY_CALL: dict[Callable, Pooling] = {fn: p for p in POOLINGS for fn in p.max_calls}
BY_ATEN: dict[str, Pooling] = {p.max_aten: p for p in POOLINGS}


def as_tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def avg_pool_module(m: nn.Module) -> nn.Module | None:
    """Average pooling of max-pooling module ``m``'s geometry, or None where there is none."""
    pool = BY_MODULE.get(type(m))
    if pool is None or m.return_indices:
        return None
    if pool.adaptive:
        return pool.avg_module(m.output_size)
    if set(as_tuple(m.dilation)) != {1}:
        return None
    return pool.avg_module(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode, count_include_pad=False)
