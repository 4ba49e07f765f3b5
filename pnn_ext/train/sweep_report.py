"""pnn-sweep's reports, read from the run directories alone (so that runs made by
any engine, at any time, merge): sweep.json (strict JSON, null for NaN),
sweep.md (a table of every cell, then one accuracy map per variant) and heat
maps (sweep.png, or sweep-NAME=V...png per value of the axes beyond the first
two: one panel per variant, divergence marked)."""
from __future__ import annotations

import json
import math
import os
import statistics

from ..strict_json import dumps
from . import artifacts


def label(name: str, value: str) -> str:
    """An axis value as shown: "none" (the setting's default) reads "preset" for B."""
    if value.lower() in ("none", "null"):
        return "preset" if name == "bound" else "default"
    return value


def max_ratio(summary: dict, out: str) -> float | None:
    """The largest max|x|/B of any polynomial layer over the run's completed epochs."""
    if summary.get("max_abs_x_over_b") is not None:
        return summary["max_abs_x_over_b"]
    from ..fitting import preset
    cfg = summary.get("config", {})
    bounds = summary.get("bounds")
    if not bounds:
        b = cfg.get("bound")
        if b in (None, "auto"):
            b = preset(int(cfg.get("degree", 22)))[0]
        bounds = None if b is None else [float(b)]
    file = artifacts.path(out, artifacts.METRICS_JSONL)
    if not bounds or not os.path.isfile(file):
        return None
    best = None
    with open(file) as fh:
        for line in fh:
            xs = json.loads(line).get("layer_max_abs_x") or []
            for i, x in enumerate(xs):
                r = x / bounds[min(i, len(bounds) - 1)]
                best = r if best is None or not r <= best else best
    return best


def collect(planned: list[dict], axes: list[tuple[str, list[str]]]) -> dict:
    """Group the runs of a plan (pnn_ext.train.sweep_plan: cells with their "dir" and
    "identity") by (axis values, variant). A run made with other settings than its cell's
    counts as not run (status "other settings")."""
    from .sweep_plan import FINISHED, stale, summary
    groups: dict[tuple, dict] = {}
    for cell in planned:
        out = cell["dir"]
        key = (tuple(cell["axes"].values()), cell["variant"])
        g = groups.setdefault(key, {"axes": dict(cell["axes"]), "variant": cell["variant"], "runs": []})
        s = summary(out)
        if s is not None and "identity" in cell and stale(cell):
            g["runs"].append({"seed": cell["seed"], "status": "other settings", "dir": out})
            continue
        if s is None or s.get("status") not in FINISHED:
            g["runs"].append({"seed": cell["seed"], "status": None if s is None else s.get("status"), "dir": out})
            continue
        g["runs"].append({"seed": cell["seed"], "status": s["status"], "dir": out,
                          "final_test_acc": s.get("final_test_acc"), "test_acc_at_stop": s.get("test_acc_at_stop"),
                          "diverged_at": s.get("diverged_at"), "max_abs_x_over_b": max_ratio(s, out),
                          "bounds": s.get("bounds"), "total_time_s": s.get("total_time_s")})
    cells = []
    for g in groups.values():
        done = [r for r in g["runs"] if r["status"] in ("completed", "diverged")]
        div = [r for r in done if r["status"] == "diverged"]
        acc = [100 * r["final_test_acc"] for r in done if r["status"] == "completed"
               and r["final_test_acc"] is not None and math.isfinite(r["final_test_acc"])]
        ratios = [r["max_abs_x_over_b"] for r in done if r["max_abs_x_over_b"] is not None]
        cells.append({**g, "finished": len(done), "diverged": len(div),
                      "divergence_rate": len(div) / len(done) if done else None,
                      "acc_mean": statistics.mean(acc) if acc else None,
                      "acc_std": statistics.stdev(acc) if len(acc) > 1 else (0.0 if acc else None),
                      "acc_min": min(acc) if acc else None, "acc_max": max(acc) if acc else None,
                      "max_abs_x_over_b": max(ratios) if ratios else None})
    return {"axes": [[a, v] for a, v in axes], "variants": list(dict.fromkeys(c["variant"] for c in planned)),
            "cells": cells}


def cell_text(c: dict) -> str:
    """'97.1 ± 0.3' or with the diverged count: '✗ 2/3' (all) or '95.0 ± 0.1 ✗1/3'."""
    if not c["finished"]:
        return "not run"
    acc = "" if c["acc_mean"] is None else f"{c['acc_mean']:.1f} ± {c['acc_std']:.1f}"
    div = f"✗{c['diverged']}/{c['finished']}" if c["diverged"] else ""
    return " ".join(t for t in (acc, div) if t)


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(report: dict, command: str, guard: bool, stopped: str | None = None) -> str:
    axes = [a for a, _ in report["axes"]]
    head = "| " + " | ".join(axes + ["variant", "runs", "diverged", "final test acc % (mean ± std)", "min – max",
                                     "max \\|x\\|/B"]) + " |"
    lines = [head, "|" + "---:|" * len(axes) + "---|---:|---:|---|---|---:|"]
    for c in report["cells"]:
        span = "—" if c["acc_min"] is None else f"{c['acc_min']:.2f} – {c['acc_max']:.2f}"
        acc = "—" if c["acc_mean"] is None else f"{c['acc_mean']:.2f} ± {c['acc_std']:.2f}"
        lines.append("| " + " | ".join([*(label(k, v) for k, v in c["axes"].items()), c["variant"], str(c["finished"]),
                                        f"{c['diverged']}/{c['finished']}", acc, span,
                                        _fmt(c["max_abs_x_over_b"], ".2f")]) + " |")
    how = ("Divergence guard on: a run counts as diverged when its rollbacks ran out." if guard else
           "Divergence guard off: a run stops at its first non-finite loss or gradient and counts as diverged.")
    halt = f"Stopped by {stopped}: the table holds the runs that had finished.\n\n" if stopped else ""
    return (f"Command: `{command}`\n\n{halt}{how} Accuracy: final test accuracy of the runs that did not diverge. "
            f"max |x|/B: the largest over layers, completed epochs and seeds.\n\n" + "\n".join(lines) + "\n"
            + "".join("\n" + m for m in maps(report)))


def _pages(report: dict):
    """(title suffix, file suffix, cells) per combination of the axes beyond the first two."""
    axes = report["axes"]
    rest = axes[2:]
    combos = [{}]
    for name, vals in rest:
        combos = [{**c, name: v} for c in combos for v in vals]
    for combo in combos:
        cells = [c for c in report["cells"] if all(c["axes"][k] == v for k, v in combo.items())]
        title = ", ".join(f"{k} = {label(k, v)}" for k, v in combo.items())
        suffix = "".join(f"-{k}={v}" for k, v in combo.items())
        yield title, suffix, cells


def maps(report: dict) -> list[str]:
    """Markdown accuracy maps: rows the first axis, columns the second, one per variant."""
    axes = report["axes"]
    if not axes:
        return []
    rows_name, rows = axes[0]
    cols_name, cols = axes[1] if len(axes) > 1 else ("", [""])
    out = []
    for title, _, cells in _pages(report):
        for variant in report["variants"]:
            by = {(c["axes"][rows_name], c["axes"].get(cols_name, "")): c for c in cells if c["variant"] == variant}
            head = (f"**{variant}**" + (f" ({title})" if title else "") + f": final test accuracy %, rows {rows_name}"
                    + (f", columns {cols_name}" if cols_name else ""))
            lines = [head, "", "| " + rows_name + " | "
                     + " | ".join(f"{cols_name} {label(cols_name, v)}".strip() for v in cols) + " |",
                     "|---:|" + "---:|" * len(cols)]
            for r in rows:
                texts = [cell_text(by[(r, v)]) if (r, v) in by else "" for v in cols]
                lines.append(f"| {label(rows_name, r)} | " + " | ".join(texts) + " |")
            out.append("\n".join(lines) + "\n")
    return out


def heatmaps(report: dict, out_dir: str) -> list[str]:
    """One PNG per page: a panel per variant, colour = mean accuracy, diverged runs marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    axes = report["axes"]
    if not axes:
        return []
    rows_name, rows = axes[0]
    cols_name, cols = axes[1] if len(axes) > 1 else ("", [""])
    variants = report["variants"]
    written = []
    for title, suffix, cells in _pages(report):
        fig, panels = plt.subplots(1, len(variants), figsize=(1.2 + 0.75 * len(cols) * len(variants) + 1.0,
                                                               1.2 + 0.45 * len(rows)), squeeze=False)
        fig.subplots_adjust(top=0.8, bottom=0.2)  # room for a page title above the panels' own
        image = None
        for ax, variant in zip(panels[0], variants):
            by = {(c["axes"][rows_name], c["axes"].get(cols_name, "")): c for c in cells if c["variant"] == variant}
            grid = np.full((len(rows), len(cols)), np.nan)
            for i, r in enumerate(rows):
                for j, v in enumerate(cols):
                    c = by.get((r, v))
                    if c and c["acc_mean"] is not None:
                        grid[i, j] = c["acc_mean"]
            image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto", origin="lower")
            for i, r in enumerate(rows):
                for j, v in enumerate(cols):
                    c = by.get((r, v))
                    if not c or not c["finished"]:
                        continue
                    text = "" if c["acc_mean"] is None else f"{c['acc_mean']:.0f}"
                    if c["diverged"]:
                        text += f"\n✗{c['diverged']}/{c['finished']}"
                        ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                                                  edgecolor="red", lw=2, hatch="//"))
                    dark = c["acc_mean"] is None or c["acc_mean"] < 60
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(cols)), [label(cols_name, v) for v in cols], fontsize=7)
            ax.set_yticks(range(len(rows)), [label(rows_name, v) for v in rows], fontsize=7)
            ax.set_xlabel(cols_name)
            ax.set_title(variant, fontsize=9)
        panels[0][0].set_ylabel(rows_name)
        fig.colorbar(image, ax=panels[0].tolist(), label="final test acc %", shrink=0.8)
        if title:
            fig.suptitle(title, fontsize=9)
        name = f"sweep{suffix}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=80)
        plt.close(fig)
        written.append(name)
    return written


def write(report: dict, out_dir: str, command: str, guard: bool, stopped: str | None = None) -> str:
    """sweep.json, sweep.md and the heat maps in out_dir; returns the markdown. ``stopped``:
    the signal that stopped the sweep, said in both reports."""
    md = table(report, command, guard, stopped)
    artifacts.write_text(os.path.join(out_dir, "sweep.md"), md)
    artifacts.write_text(os.path.join(out_dir, "sweep.json"),
                         dumps({"command": command, "guard": guard, "stopped_by": stopped, **report}, indent=1) + "\n")
    heatmaps(report, out_dir)
    return md
