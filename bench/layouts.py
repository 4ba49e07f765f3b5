"""The fused step in every memory layout, beside torch.compile of the lean formulation a user
writes (bench/cases.py's "lean", the primary baseline) and torch.compile of the reference, and
where the dense step's time goes. Writes the LAYOUTS section of docs/benchmarks.md.

    python bench/layouts.py                 # 16M float32 elements, degree 22 (~5 min on 2 cores)
    python bench/layouts.py --size 1M       # quicker

One step = forward + backward with the boundary term (lambda 1000), x and grad_y in the
layouts of cases.LAYOUTS. Every variant is checked against float64 before it is timed.
Targets: each layout within 1.3x of the dense fused step; the dense and the broadcast grad_y
(y.sum()) steps at least 2x faster than torch.compile(lean) (issue 18).
"""
from __future__ import annotations

import argparse
import datetime
import gc

import torch

from cases import LAYOUTS, SIZES, Case
from report import copy_bandwidth, fmt_ms, machine_line, timed, write_section

DEGREE = 22


BASELINES = ("lean", "compiled")  # torch.compile of the lean formulation, of the reference
LEAN_TARGET = {"dense": 2.0, "grad_broadcast": 2.0}  # issue 18: fused >= 2x torch.compile(lean)


def step_times(layout, numel, reps_fused, reps_compiled, baselines=BASELINES):
    case = Case(DEGREE, numel, layout=layout)
    out = dict.fromkeys(BASELINES)
    for variant in ("fused", *baselines):
        case.check_agreement(variant)  # also the compile warm-up
        out[variant] = timed(case.runner(variant, "full")[1], "cpu", reps_fused if variant == "fused" else
                             reps_compiled)[0]
    strides = f"x {tuple(case.x.stride())}, grad_y {tuple(case.grad_y.stride())}"
    del case
    gc.collect()
    return out, strides


def where_time_goes(numel, reps):
    """Dense step at degree 22 and 2, forward and backward apart, and the first-touch cost of
    a freshly allocated output of numel float32 (fill of a new buffer minus fill of a used one)."""
    rows = {}
    for degree in (2, DEGREE):
        case = Case(degree, numel)
        for mode in ("forward", "backward", "full"):
            setup, target = case.runner("fused", mode)
            rows[(degree, mode)] = timed(target, "cpu", reps, setup)[0]
        del case
    used = torch.empty(numel)
    warm = timed(lambda: used.fill_(1.0), "cpu", reps)[0]
    fresh = timed(lambda: torch.empty(numel).fill_(1.0), "cpu", reps)[0]
    return rows, fresh - warm


def section(numel, results, breakdown, first_touch, copy_gbs, command, skipped_note):
    dense = results["dense"][0]["fused"]
    lines = ["## Memory layouts (CPU)", "",
             f"`{command}` on {datetime.date.today()}. {machine_line('cpu')}. Copy bandwidth {copy_gbs:.1f} GB/s.",
             "",
             f"Full step (forward + backward with the boundary term), degree {DEGREE}, {numel:,} float32 elements; "
             "median ms; a baseline's time over fused's in brackets. Targets: fused within 1.3× of its dense "
             "time in every layout; dense and broadcast grad_y (`y.sum()`) ≥ 2× faster than "
             "`torch.compile(lean)`, the lean formulation a user writes (issue 18).", "",
             "| layout | strides (elements) | fused ms | vs dense | torch.compile(lean) ms (×) "
             "| torch.compile(reference) ms (×) | met |",
             "|---|---|---:|---:|---:|---:|---|"]
    for layout in LAYOUTS:
        t, strides = results[layout]
        rel = t["fused"] / dense
        cells = [f"{fmt_ms(t[b])} ({t[b] / t['fused']:.2f}×)" if t[b] is not None else "not measured"
                 for b in BASELINES]
        want = LEAN_TARGET.get(layout)
        if want is not None and t["lean"] is None:
            met = "lean not measured"
        else:
            met = "yes" if rel <= 1.3 and (want is None or t["lean"] / t["fused"] >= want) else "**no**"
        lines.append(f"| {layout} | {strides} | {fmt_ms(t['fused'])} | {rel:.2f}× | {' | '.join(cells)} | {met} |")
    if skipped_note:
        lines += ["", skipped_note]
    full22, full2 = breakdown[(DEGREE, "full")], breakdown[(2, "full")]
    nbytes = numel * 4
    lines += ["", f"Where the dense step's time goes ({numel:,} elements, {nbytes / 2 ** 20:.0f} MB per tensor):", "",
              "| degree | forward ms | backward ms | full ms |", "|---:|---:|---:|---:|"]
    for degree in (2, DEGREE):
        lines.append(f"| {degree} | {fmt_ms(breakdown[(degree, 'forward')])} | "
                     f"{fmt_ms(breakdown[(degree, 'backward')])} | {fmt_ms(breakdown[(degree, 'full')])} |")
    lines += ["",
              f"- First touch of a freshly allocated {nbytes / 2 ** 20:.0f} MB output (page faults; a new buffer's "
              f"fill minus a used buffer's): {fmt_ms(first_touch)} ms. A step allocates two (y and grad_x): "
              f"{fmt_ms(2 * first_touch)} ms, {100 * 2 * first_touch / full22:.0f}% of the degree-{DEGREE} step.",
              f"- The arithmetic of degrees 3..{DEGREE} (the degree-{DEGREE} step minus the degree-2 step, same "
              f"traffic): {fmt_ms(full22 - full2)} ms, {100 * (full22 - full2) / full22:.0f}% of it.",
              f"- Traffic at copy bandwidth (x twice, y, grad_y, grad_x once: {5 * nbytes / 2 ** 20:.0f} MB): "
              f"{fmt_ms(5 * nbytes / (copy_gbs * 1e9))} ms."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="16M", choices=list(SIZES))
    ap.add_argument("--skip-compiled", default="", metavar="LAYOUTS",
                    help="comma-separated layouts whose torch.compile(reference) baseline is not run (for "
                         "transposed layouts inductor's g++ needed over 23 GB and was OOM-killed on a 24 GB machine)")
    ap.add_argument("--skip-lean", default="", metavar="LAYOUTS",
                    help="comma-separated layouts whose torch.compile(lean) baseline is not run")
    args = ap.parse_args()
    skip = {s for s in args.skip_compiled.split(",") if s}
    skip_lean = {s for s in args.skip_lean.split(",") if s}
    unknown = (skip | skip_lean) - set(LAYOUTS)
    if unknown:
        ap.error(f"--skip-compiled / --skip-lean: unknown layouts {sorted(unknown)} (from {', '.join(LAYOUTS)})")
    print(machine_line("cpu"), flush=True)
    numel = SIZES[args.size]
    big = numel >= 2 ** 24
    results = {}
    for layout in LAYOUTS:
        print(f"layout {layout}", flush=True)
        baselines = tuple(b for b, s in (("lean", skip_lean), ("compiled", skip)) if layout not in s)
        results[layout] = step_times(layout, numel, 10 if big else 30, 5 if big else 10, baselines)
        t = results[layout][0]
        print("  " + ", ".join(f"{v} {t[v] * 1e3:.1f} ms" for v in ("fused", *BASELINES) if t[v] is not None),
              flush=True)
    breakdown, first_touch = where_time_goes(numel, 10 if big else 30)
    command = ("python bench/layouts.py" + ("" if args.size == "16M" else f" --size {args.size}")
               + (f" --skip-compiled {args.skip_compiled}" if skip else "")
               + (f" --skip-lean {args.skip_lean}" if skip_lean else ""))
    notes = []
    if skip:
        notes.append(f"Not measured: `torch.compile` of the reference in the layouts {', '.join(sorted(skip))}. "
                     "For the transposed layout inductor's generated C++ made g++ grow to 23 GB and be OOM-killed "
                     "on a 24 GB machine after 15 minutes (seen in a run of this script), so the baseline does "
                     "not exist there.")
    if skip_lean:
        notes.append(f"Not measured: `torch.compile(lean)` in the layouts {', '.join(sorted(skip_lean))}.")
    note = " ".join(notes)
    text = section(numel, results, breakdown, first_touch, copy_bandwidth("cpu", numel), command, note)
    print(text)
    write_section("LAYOUTS", text)


if __name__ == "__main__":
    main()
