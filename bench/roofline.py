"""The fused CPU op against this machine's limits, both measured in the same run. Writes the
ROOFLINE section of docs/benchmarks.md (bench/report.py includes it in a CPU run).

    python bench/roofline.py                                # 64K, 2M, 16M; degrees 2, 8, 22, 64 (~2 min, 2 cores)
    python bench/roofline.py --sizes 64K --degrees 2,22     # quicker

Limits, for 1 thread and for all of torch's threads:
  arithmetic  _C.arith_peak (csrc/cpu/roofline_impl.h): vector FMA, add, and Clenshaw-step
              (1 FMA + 1 sub) throughput of the kernels' own instruction-set build, from many
              independent chains in registers;
  memory      copy bandwidth y.copy_(x) at each size, 2 x 4 bytes per element, into a
              preallocated y (warm), into a newly allocated one (fresh: its page faults), and
              into a newly allocated one advised to use huge pages from 4 MB as the op's own
              outputs are (csrc/cpu/huge_pages.h; what the op's first touch costs at best).
The op: torch.ops.pnn_ext.poly_act / poly_act_backward called directly (no autograd), float32,
Chebyshev, inputs of bench/cases.py. Every time is a best, limits and op alike (best against
best): the op's of --reps loops of calls lasting at least 5 ms each, the copies' likewise, the
arithmetic peaks' of 50 runs of 2 ms, measured at the start and again at the end of the run (the
higher kept), so that a busy spell of a shared machine does not lower the limits the op is
divided by.

Per case: ns/element; GFLOP/s from bench/cases.py's op_counts (the polynomial arithmetic of
the kernels, bookkeeping not counted) and its fraction of the FMA peak; the fraction of the
arithmetic floor (op_counts at the measured FMA, add and mixed rates, see arith_floor_s); GB/s
(x, y | x, grad_y, grad_x once each), its fraction of the warm copy bandwidth, and the fraction
of the memory floor (mem_floor_s: that traffic at the warm copy bandwidth plus the first touch
of the op's freshly allocated output, priced by the fresh copy).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import math
import mmap
import os
import time

import torch

import pnn_ext._C as _C  # the extension's plain module: arith_peak
from cases import Case, flops_per_element, op_counts
from report import machine_line, write_section

SIZES = {"64K": 64 * 2 ** 10, "2M": 2 * 2 ** 20, "16M": 16 * 2 ** 20}
DEGREES = (2, 8, 22, 64)
MODES = ("forward", "backward")
BYTES_PER_ELEMENT = {"forward": 2 * 4, "backward": 3 * 4}  # float32 x, y | x, grad_y, grad_x
KINDS = ("fma", "add", "clenshaw")
# The op's outputs from this size on are advised to use 2 MiB pages (kHugePageMinBytes in
# csrc/cpu/huge_pages.h): the fresh copy that prices their first touch does the same.
HUGE_PAGE_MIN_BYTES = 4 << 20
HUGE_PAGE = 2 << 20
_LIBC = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def best_time(fn, reps: int, min_time: float = 0.005) -> float:
    """Seconds per call of fn(): the best of `reps` loops of calls, each at least min_time long."""
    fn()  # warm-up (first touch, allocator)
    t0 = time.perf_counter()
    fn()
    calls = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9)))
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def empty_huge_like(x: torch.Tensor) -> torch.Tensor:
    """empty_like(x) with the 2 MiB-aligned interior of a block of 4 MB or more advised to use huge
    pages (madvise MADV_HUGEPAGE), as csrc/cpu/huge_pages.h does for the op's outputs."""
    out = torch.empty_like(x)
    nbytes = out.numel() * out.element_size()
    if nbytes >= HUGE_PAGE_MIN_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        first = (out.data_ptr() + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        last = (out.data_ptr() + nbytes) & ~(HUGE_PAGE - 1)
        if last > first:  # advice only: a kernel without THP leaves ordinary pages
            _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_HUGEPAGE)
    return out


def copy_bandwidth(numel: int, reps: int) -> tuple[float, float, float]:
    """(warm, fresh, fresh with huge pages) GB/s of y.copy_(x), 2 x 4 bytes per element, at torch's
    current thread count."""
    x = torch.randn(numel)
    y = torch.empty_like(x)
    nbytes = 2 * x.numel() * x.element_size()
    times = (best_time(lambda: y.copy_(x), reps), best_time(lambda: torch.empty_like(x).copy_(x), reps),
             best_time(lambda: empty_huge_like(x).copy_(x), reps))
    return tuple(nbytes / t / 1e9 for t in times)


def arith_floor_s(degree: int, mode: str, peaks: dict[str, float]) -> float:
    """Seconds per element of the op's arithmetic at the measured rates: FMA and multiply on the
    FMA ports, adds on the add ports, and the two together no faster than the Clenshaw mix
    (which tells whether this processor has separate add ports or shares them)."""
    n = op_counts(degree, mode)
    fma_rate = peaks["fma"] / 2  # lane-FMAs per second
    add_rate = peaks["add"]  # lane-adds per second
    mix_rate = peaks["clenshaw"] * 2 / 3  # lane operations per second, half FMA, half sub
    return max((n["fma"] + n["mul"]) / fma_rate, n["add"] / add_rate, (n["fma"] + n["mul"] + n["add"]) / mix_rate)


def mem_floor_s(mode: str, warm: float, fresh: float) -> float:
    """Seconds per element of the op's traffic at the warm copy bandwidth (GB/s), plus the first
    touch of its one freshly allocated float32 output (y or grad_x) at what a copy into a fresh
    buffer (allocated as the op allocates it) costs beyond one into a warm buffer: 2 x 4 bytes
    per element (1/fresh - 1/warm)."""
    first_touch = max(0.0, 2 * 4 * (1 / fresh - 1 / warm))
    return (BYTES_PER_ELEMENT[mode] / warm + first_touch) / 1e9


def op_call(case: Case, mode: str):
    """The raw op of one mode on the case's inputs (no autograd around it)."""
    x = case.x.detach()
    args = (case.coeffs, case.bound, case.alpha, "chebyshev")
    if mode == "forward":
        return lambda: torch.ops.pnn_ext.poly_act(x, *args, "exp")
    grad_stats = torch.tensor([float(case.grad_boundary), 0.0, 0.0])
    return lambda: torch.ops.pnn_ext.poly_act_backward(case.grad_y, grad_stats, x, *args, False, "exp")


def limits(thread_counts, sizes: dict[str, int], reps: int) -> tuple[dict, dict]:
    """({threads: {kind: FLOP/s}} from _C.arith_peak, {(size, threads): (warm, fresh) copy GB/s})."""
    peaks, copies = {}, {}
    for th in thread_counts:
        with torch_threads(th):
            peaks[th] = {k: _C.arith_peak(th, k) for k in KINDS}
            for name, numel in sizes.items():
                copies[(name, th)] = copy_bandwidth(numel, reps)
    return peaks, copies


def measure(sizes: dict[str, int] = SIZES, degrees=DEGREES, reps: int = 10) -> dict:
    """Limits per thread count (measured before and after the op, the higher kept: a busy spell
    lowers a limit, never raises it), and one row per (size, degree, mode, threads)."""
    load_before = os.getloadavg()[0]
    thread_counts = sorted({1, torch.get_num_threads()})
    peaks, copies = limits(thread_counts, sizes, reps)
    rows = []
    for name, numel in sizes.items():
        for degree in degrees:
            case = Case(degree, numel)
            for mode in MODES:
                fn = op_call(case, mode)
                for th in thread_counts:
                    with torch_threads(th):
                        t = best_time(fn, reps) / numel
                    rows.append(dict(size=name, numel=numel, degree=degree, mode=mode, threads=th, ns=1e9 * t,
                                     gflops=flops_per_element(degree, mode) / t / 1e9,
                                     gbs=BYTES_PER_ELEMENT[mode] / t / 1e9))
                    print(f"{name} d={degree} {mode} {th}t: {rows[-1]['ns']:.2f} ns/element", flush=True)
            del case
    peaks_after, copies_after = limits(thread_counts, sizes, reps)
    for th in thread_counts:
        peaks[th] = {k: max(peaks[th][k], peaks_after[th][k]) for k in KINDS}
        print(f"{th} thread(s): " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks[th].items()), flush=True)
    copies = {key: tuple(map(max, bw, copies_after[key])) for key, bw in copies.items()}
    for r in rows:
        warm, _, fresh = copies[(r["size"], r["threads"])]
        t = r["ns"] * 1e-9
        r.update(fma_frac=r["gflops"] * 1e9 / peaks[r["threads"]]["fma"],
                 floor_frac=arith_floor_s(r["degree"], r["mode"], peaks[r["threads"]]) / t,
                 warm_frac=r["gbs"] / warm, mem_frac=mem_floor_s(r["mode"], warm, fresh) / t)
    return dict(machine=machine_line("cpu"), thread_counts=thread_counts, peaks=peaks, copies=copies, rows=rows,
                sizes=sizes, reps=reps, load=(load_before, os.getloadavg()[0]))


def section(m: dict, command: str) -> str:
    """docs/benchmarks.md's ROOFLINE section from measure()'s result."""
    sizes = m["sizes"]
    lines = ["## Roofline (CPU): the fused op against this machine's limits", "",
             f"`{command}` on {datetime.date.today()}. {m['machine']}; load average (1 min) {m['load'][0]:.1f} "
             f"before, {m['load'][1]:.1f} after. Best times, limits and op alike (the op: of {m['reps']} loops "
             "of ≥ 5 ms); bench/roofline.py's docstring says how each figure is "
             "measured, [Speed](speed.md#how-the-roofline-is-measured) why.", "",
             "Limits (arithmetic: `_C.arith_peak`, the kernels' instruction-set build; copy: `y.copy_(x)` of "
             "float32 into a preallocated y / a newly allocated y / a newly allocated y advised to use huge "
             "pages from 4 MB, as the op's outputs are):", "",
             "| threads | FMA GFLOP/s | add GFLOP/s | Clenshaw step (FMA + sub) GFLOP/s | "
             + " | ".join(f"copy {n} GB/s" for n in sizes) + " |",
             "|---:|---:|---:|---:|" + "---:|" * len(sizes)]
    for th in m["thread_counts"]:
        p = m["peaks"][th]
        copies = " | ".join("{:.1f} / {:.1f} / {:.1f}".format(*m["copies"][(n, th)]) for n in sizes)
        lines.append(f"| {th} | {p['fma'] / 1e9:.1f} | {p['add'] / 1e9:.1f} | {p['clenshaw'] / 1e9:.1f} | {copies} |")
    lines += ["", "The op (float32, Chebyshev; forward: y and the statistics; backward: grad_x, no coefficient "
              "gradients). GFLOP/s counts the polynomial arithmetic of `op_counts` (bench/cases.py); "
              "\"of floor\" is the time that arithmetic needs at the measured rates over the op's time; "
              "\"of copy\" is the op's GB/s over the warm copy bandwidth at the same size and thread count; "
              "\"of memory floor\" adds to that traffic's time the first touch of the op's freshly allocated "
              "output, priced by the fresh copy with huge pages, over the op's time.", "",
              "| elements | degree | mode | threads | ns/element | GFLOP/s | of FMA peak | of floor | GB/s "
              "| of copy | of memory floor |",
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in m["rows"]:
        lines.append(f"| {r['size']} | {r['degree']} | {r['mode']} | {r['threads']} | {r['ns']:.3g} | "
                     f"{r['gflops']:.1f} | {100 * r['fma_frac']:.0f}% | {100 * r['floor_frac']:.0f}% | "
                     f"{r['gbs']:.1f} | {100 * r['warm_frac']:.0f}% | {100 * r['mem_frac']:.0f}% |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated from {', '.join(SIZES)}")
    ap.add_argument("--degrees", default=",".join(map(str, DEGREES)), help="comma-separated degrees (1..128)")
    ap.add_argument("--reps", type=int, default=10, help="repetitions per figure, the best kept (default 10)")
    args = ap.parse_args()
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        ap.error(f"--sizes: unknown {unknown} (from {', '.join(SIZES)})")
    print(machine_line("cpu"), flush=True)
    sizes = {s: SIZES[s] for s in args.sizes.split(",")}
    degrees = tuple(int(d) for d in args.degrees.split(","))
    command = ("python bench/roofline.py" + ("" if args.sizes == ",".join(SIZES) else f" --sizes {args.sizes}")
               + ("" if degrees == DEGREES else f" --degrees {args.degrees}")
               + ("" if args.reps == 10 else f" --reps {args.reps}"))
    text = section(measure(sizes, degrees, args.reps), command)
    print(text)
    write_section("ROOFLINE", text)


if __name__ == "__main__":
    main()
