"""The fused step in every memory layout, beside torch.compile of the reference, and where
the dense step's time goes. Writes the LAYOUTS section of docs/benchmarks.md.

    python bench/layouts.py                 # 16M float32 elements, degree 22 (~5 min on 2 cores)
    python bench/layouts.py --size 1M       # quicker

One step = forward + backward with the boundary term (lambda 1000), x and grad_y in the
layouts of cases.LAYOUTS. Every variant is checked against float64 before it is timed.
Targets: each layout within 1.3x of the dense fused step, and at least 3x faster than
torch.compile of the reference in the same layout.
"""
from __future__ import annotations

import argparse
import datetime
import gc

import torch

from cases import LAYOUTS, SIZES, Case
from report import copy_bandwidth, fmt_ms, machine_line, timed, write_section

DEGREE = 22


def step_times(layout, numel, reps_fused, reps_compiled, compiled=True):
    case = Case(DEGREE, numel, layout=layout)
    out = {"compiled": None}
    for variant, reps in (("fused", reps_fused), ("compiled", reps_compiled))[:2 if compiled else 1]:
        case.check_agreement(variant)  # also the compile warm-up
        out[variant] = timed(case.runner(variant, "full")[1], "cpu", reps)[0]
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
             "median ms. Targets: fused within 1.3× of its dense time, and ≥ 3× faster than `torch.compile` of "
             "the reference in the same layout.", "",
             "| layout | strides (elements) | fused ms | vs dense | compiled ms | fused is | met |",
             "|---|---|---:|---:|---:|---:|---|"]
    for layout in LAYOUTS:
        t, strides = results[layout]
        rel = t["fused"] / dense
        if t["compiled"] is None:
            met = "yes (1.3×); compiled not measured" if rel <= 1.3 else "**no**"
            lines.append(f"| {layout} | {strides} | {fmt_ms(t['fused'])} | {rel:.2f}× | — | — | {met} |")
            continue
        speedup = t["compiled"] / t["fused"]
        met = "yes" if rel <= 1.3 and speedup >= 3 else "**no**"
        lines.append(f"| {layout} | {strides} | {fmt_ms(t['fused'])} | {rel:.2f}× | {fmt_ms(t['compiled'])} | "
                     f"{speedup:.1f}× faster | {met} |")
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
                    help="comma-separated layouts whose torch.compile baseline is not run (for transposed "
                         "layouts inductor's g++ needed over 23 GB and was OOM-killed on a 24 GB machine)")
    args = ap.parse_args()
    skip = {s for s in args.skip_compiled.split(",") if s}
    unknown = skip - set(LAYOUTS)
    if unknown:
        ap.error(f"--skip-compiled: unknown layouts {sorted(unknown)} (from {', '.join(LAYOUTS)})")
    numel = SIZES[args.size]
    big = numel >= 2 ** 24
    results = {}
    for layout in LAYOUTS:
        print(f"layout {layout}", flush=True)
        results[layout] = step_times(layout, numel, 10 if big else 30, 5 if big else 10, layout not in skip)
        t = results[layout][0]
        print(f"  fused {t['fused'] * 1e3:.1f} ms, compiled {t['compiled'] and t['compiled'] * 1e3} ms", flush=True)
    breakdown, first_touch = where_time_goes(numel, 10 if big else 30)
    command = "python bench/layouts.py" + ("" if args.size == "16M" else f" --size {args.size}") + \
        (f" --skip-compiled {args.skip_compiled}" if skip else "")
    note = (f"Not measured: `torch.compile` of the reference in the layouts {', '.join(sorted(skip))}. For "
            "the transposed layout inductor's generated C++ made g++ grow to 23 GB and be OOM-killed on this "
            "24 GB machine after 15 minutes (seen in a run of this script), so the baseline does not "
            "exist here.") if skip else ""
    text = section(numel, results, breakdown, first_touch, copy_bandwidth("cpu", numel), command, note)
    print(text)
    write_section("LAYOUTS", text)


if __name__ == "__main__":
    main()
