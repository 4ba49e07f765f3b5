"""The fused op against the baseline a user would write: ``torch.compile`` of the lean
formulation (a Clenshaw loop in t = x / B and ``expm1(clamp(|x| - alpha*B, min=0)).mean()``,
nothing else), one forward + backward with the boundary term, in the same process,
interleaved, median of the repetitions. Prints the CPU, the times and the ratios.

    python bench/lean_compile.py [--numel 16777216] [--degree 22] [--reps 7]

Both grads: a dense random grad_y, and ``y.sum()``'s broadcast grad (a stride-0 grad_y).

The op advises its large outputs to use transparent huge pages (csrc/cpu/huge_pages.h);
``THP_MEM_ALLOC_ENABLE=1 python bench/lean_compile.py`` gives every allocation, the
baseline's included, the same advice (PyTorch's CPU allocator reads it at start-up): the
header line says which of the two runs it is.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import pnn_ext as pnn
from cases import lean  # the lean formulation, shared with the suite
from report import machine_line  # bench/: the machine, as the report names it


def fused(x, c, bound, alpha):
    y, stats = pnn.poly_act(x, c, bound, alpha, impl="fused")
    return y, stats[0]


def step(fn, x, c, bound, alpha, grad_y):
    x.grad = None
    y, boundary = fn(x, c, bound, alpha)
    loss = (y.sum() if grad_y is None else (y * grad_y).sum()) + 1000.0 * boundary
    loss.backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=int, default=1 << 24)
    ap.add_argument("--degree", type=int, default=22)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    bound, alpha = pnn.preset(args.degree)
    c = torch.from_numpy(pnn.fit("relu", args.degree, bound).coeffs).float()
    x = (torch.randn(args.numel) * bound / 3).requires_grad_()
    compiled = torch.compile(lean)
    print(f"{machine_line('cpu')}; {args.numel} float32 elements, degree {args.degree}, "
          f"forward + backward with the boundary term, median of {args.reps}; "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    for grad_name, grad_y in (("dense grad_y", torch.randn(args.numel)), ("y.sum() (broadcast grad)", None)):
        times = {"fused": [], "compiled lean": []}
        for fn in (fused, compiled):  # warm-up: compilation, first touch
            step(fn, x, c, bound, alpha, grad_y)
        for _ in range(args.reps):
            for name, fn in (("fused", fused), ("compiled lean", compiled)):
                t0 = time.perf_counter()
                step(fn, x, c, bound, alpha, grad_y)
                times[name].append(time.perf_counter() - t0)
        f, comp = statistics.median(times["fused"]), statistics.median(times["compiled lean"])
        print(f"{grad_name}: fused {1e3 * f:.1f} ms, torch.compile(lean) {1e3 * comp:.1f} ms -> "
              f"fused is {comp / f:.2f}x")


if __name__ == "__main__":
    main()
