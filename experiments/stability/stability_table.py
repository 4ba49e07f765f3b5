"""``python experiments/stability/stability_table.py LABEL=SWEEP_DIR ...``: docs/stability.md's
tables from pnn-sweep outputs (their sweep.json): for each sweep with bound, lr and
degree axes, the harshest setting where the full method stays within 1 point of its
lr-1e-3 accuracy while at least two ablated variants diverge or fall behind; for
each sweep with bound and degree axes, the B cliff of the full method; and --bound
auto against the preset (bound=none) wherever a sweep has both.
experiments/stability/stability_results.sh writes docs/stability.md's tables with it
(``--docs docs/stability.md`` as the first arguments: each table into its own section)."""
from __future__ import annotations

import json
import os
import sys

from pnn_ext.fitting import preset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/: docs_section
from docs_section import replace_section  # noqa: E402

ABLATED = ("no-boundary", "no-clip", "standard-clip")
BEHIND = 5.0   # points below the full method that count as "fall behind"
CLOSE = 1.0    # the full method within this many points of its lr-1e-3 accuracy


def load(path: str) -> dict:
    with open(os.path.join(path, "sweep.json")) as fh:
        return json.load(fh)


def index(report: dict) -> dict:
    return {(tuple(sorted(c["axes"].items())), c["variant"]): c for c in report["cells"]}


def key(axes: dict, **change) -> tuple:
    return tuple(sorted({**axes, **change}.items()))


def acc(c: dict | None) -> str:
    if c is None or not c["finished"]:
        return "not run"
    text = "—" if c["acc_mean"] is None else f"{c['acc_mean']:.2f} ± {c['acc_std']:.2f}"
    return text + (f" (✗{c['diverged']}/{c['finished']})" if c["diverged"] else "")


def bound_label(b: str, degree: str) -> str:
    if b == "none":
        return f"preset ({preset(int(degree))[0]:g})"
    return b


def failed(c: dict | None, full: dict) -> bool:
    """Diverged in at least half the seeds, or its accuracy far below the full method's."""
    if c is None or not c["finished"]:
        return False
    if c["diverged"] * 2 >= c["finished"] or c["acc_mean"] is None:
        return True
    return c["acc_mean"] < full["acc_mean"] - BEHIND


def separating(label: str, report: dict) -> list[str]:
    cells, rows = index(report), []
    degrees = dict(report["axes"]).get("degree", [])
    for degree in degrees:
        found, ahead = [], []
        for c in report["cells"]:
            a = c["axes"]
            if c["variant"] != "full" or a.get("degree") != degree or a.get("lr") in ("1e-3", "0.001"):
                continue
            # its best: the best lr-1e-3 accuracy of the full method over the B of the grid
            refs = [r for r in report["cells"] if r["variant"] == "full" and r["acc_mean"] is not None
                    and not r["diverged"] and r["axes"] == {**a, "lr": "1e-3", "bound": r["axes"].get("bound")}]
            ref = max(refs, key=lambda r: r["acc_mean"], default=None)
            if not ref or c["acc_mean"] is None or c["diverged"]:
                continue
            others = {v: cells.get((key(a), v)) for v in ABLATED}
            bad = [v for v, o in others.items() if failed(o, c)]
            if len(bad) >= 2:
                close = c["acc_mean"] >= ref["acc_mean"] - CLOSE
                (found if close else ahead).append((float(a["lr"]), c["acc_mean"], c, ref, others, bad))
        if not found and not ahead:
            rows.append(f"| {label} | {degree} | none in this grid | | | | | |")
            continue
        # none within 1 point: the best cell where the full method is at least ahead of two variants
        _, _, c, ref, others, bad = (max(found, key=lambda f: (f[0], f[1])) if found
                                     else max(ahead, key=lambda f: (len(f[5]), f[1])))
        a = c["axes"]
        where = "" if found else " — **not within 1 point**"
        rows.append(f"| {label} | {degree} | B = {bound_label(a['bound'], degree)}, lr {a['lr']}{where} | {acc(c)} "
                    f"(best at lr 1e-3: {acc(ref)}, B = {bound_label(ref['axes']['bound'], degree)}) | "
                    + " | ".join(acc(others[v]) for v in ABLATED)
                    + f" | {len(found)} |")
    return rows


def tally(label: str, report: dict) -> list[str]:
    """Per degree, over the cells of the map where all four variants ran: how often each ablated
    variant fails against the full method (see failed()) and how often it beats it by as much."""
    cells, rows = index(report), []
    for degree in dict(report["axes"]).get("degree", []):
        fulls = [c for c in report["cells"] if c["variant"] == "full" and c["axes"].get("degree") == degree
                 and c["finished"] and all((cells.get((key(c["axes"]), v)) or {}).get("finished") for v in ABLATED)]
        counts = []
        for v in ABLATED:
            worse = better = 0
            for f in fulls:
                o = cells[(key(f["axes"]), v)]
                full_failed = f["diverged"] * 2 >= f["finished"] or f["acc_mean"] is None
                if not full_failed and failed(o, f):
                    worse += 1
                elif not (o["diverged"] * 2 >= o["finished"] or o["acc_mean"] is None) and (
                        full_failed or o["acc_mean"] > f["acc_mean"] + BEHIND):
                    better += 1
            counts.append(f"{worse} / {better}")
        if fulls:
            rows.append(f"| {label} | {degree} | {len(fulls)} | " + " | ".join(counts) + " |")
    return rows


def cliff(label: str, report: dict, variant: str = "full") -> list[str]:
    axes = dict(report["axes"])
    cells, rows = index(report), []
    for degree in axes.get("degree", []):
        series = []
        for b in axes["bound"]:
            if b == "auto":
                continue
            c = cells.get((key({k: v[0] for k, v in report["axes"]}, bound=b, degree=degree), variant))
            if c and c["finished"]:  # a cell with a diverged run counts as failed
                m = 0.0 if c["diverged"] or c["acc_mean"] is None else c["acc_mean"]
                series.append((preset(int(degree))[0] if b == "none" else float(b), m, c))
        series.sort(key=lambda s: s[0])
        if not series:
            continue
        best = max(m for _, m, _ in series)
        ok = [b for b, m, _ in series if m >= best - CLOSE]
        below = [(b, m) for b, m, _ in series if b < min(ok)]
        edge = f"{below[-1][0]:g} ({below[-1][1]:.1f} %)" if below else "below the grid"
        slow = [(b, m) for b, m, _ in series if b > max(ok)]
        far = f"{slow[0][0]:g} ({slow[0][1]:.1f} %)" if slow else "none in the grid"
        rows.append(f"| {label} | {degree} | {best:.2f} | {min(ok):g} – {max(ok):g} | {edge} | {far} |")
    return rows


def auto_vs_preset(label: str, report: dict, seen: set) -> list[str]:
    """Rows for the auto-B cells of ``report`` not in ``seen`` (sweeps may share runs)."""
    cells, rows = index(report), []
    for c in report["cells"]:
        a = c["axes"]
        if (a.get("bound") != "auto" or c["variant"] != "full" or not c["finished"]
                or (label, key(a), c["variant"]) in seen):
            continue
        seen.add((label, key(a), c["variant"]))
        p = cells.get((key(a, bound="none"), c["variant"]))
        if p is None:
            continue
        diff = (c["acc_mean"] - p["acc_mean"]) if c["acc_mean"] is not None and p["acc_mean"] is not None else None
        bounds = sorted({b for r in c["runs"] for b in (r.get("bounds") or [])})
        brange = f"{bounds[0]:.1f} – {bounds[-1]:.1f}" if bounds else "—"
        others = ", ".join(f"{k} {v}" for k, v in a.items() if k != "bound")
        ratio = lambda x: "—" if x["max_abs_x_over_b"] is None else f"{x['max_abs_x_over_b']:.2f}"  # noqa: E731
        rows.append(f"| {label} | {others} | {c['variant']} | {acc(p)} | {acc(c)} | "
                    f"{'—' if diff is None else f'{diff:+.2f}'} | {ratio(p)} | {ratio(c)} | {brange} |")
    return rows


def main(argv: list[str]) -> int:
    docs = None
    if argv[:1] == ["--docs"]:  # write each table into its section of that page instead
        docs, argv = argv[1], argv[2:]
    sweeps = [(s.split("=", 1)[0], load(s.split("=", 1)[1])) for s in argv]
    sections = {}
    out = sections["matters"] = [
        "**Where the method matters** (a setting per dataset and degree: the full method within "
           f"{CLOSE:g} point of its best lr-1e-3 accuracy (over the B of the grid), while at least two ablated "
           f"variants diverge in half their seeds or more or end more than {BEHIND:g} points below it; the "
           "harshest learning rate such a setting has, then the best accuracy; where no cell qualifies, the cell "
           "where the full method is ahead of the most variants (then: best accuracy), marked; mean ± std over seeds "
           "of the runs that did not diverge, ✗ diverged runs; the last column counts the qualifying cells):", "",
           "| data | degree | setting | full | " + " | ".join(ABLATED) + " | such cells |",
           "|---|---:|---|---|---|---|---|---:|"]
    maps = [(label, r) for label, r in sweeps
            if {"bound", "lr", "degree"} <= set(dict(r["axes"])) and set(ABLATED) <= set(r["variants"])]
    for label, r in maps:
        out += separating(label, r)
    out = sections["cell-by-cell"] = [
        "**Cell by cell** (each (B, lr) cell of the map where all four variants ran: in how many the "
            f"ablated variant fails against the full method — diverges in half its seeds or ends more than {BEHIND:g} "
            "points below it — and in how many it is that much better):", "",
            "| data | degree | cells | " + " | ".join(f"{v}: worse / better" for v in ABLATED) + " |",
            "|---|---:|---:|---|---|---|"]
    for label, r in maps:
        out += tally(label, r)
    out = sections["cliff"] = ["**The B cliff** (full method, learning rate 1e-3: the B range within "
            f"{CLOSE:g} point of the best accuracy, the largest B of the grid below it, and the first B above it that "
            "is more than that below the best):", "",
            "| data | degree | best acc % | B within 1 pt | cliff: largest B below | slow loss: first B above |",
            "|---|---:|---:|---|---|---|"]
    for label, r in sweeps:
        axes = dict(r["axes"])
        if {"bound", "degree"} <= set(axes) and axes.get("lr", ["1e-3"]) == ["1e-3"]:
            out += cliff(label, r)
    out = sections["auto"] = [
        "**--bound auto against the preset** (the full method; same runs otherwise; max |x|/B: largest "
            "over layers, epochs, seeds; auto B: the range of the chosen per-layer B over layers and seeds):", "",
            "| data | setting | variant | preset acc % | auto acc % | auto − preset | preset max\\|x\\|/B | "
            "auto max\\|x\\|/B | auto B |", "|---|---|---|---|---|---:|---:|---:|---|"]
    seen: set = set()
    for label, r in sweeps:
        out += auto_vs_preset(label, r, seen)
    if docs is None:
        print("\n\n".join("\n".join(lines) for lines in sections.values()))
        return 0
    with open(docs) as f:
        page = f.read()
    for name, lines in sections.items():  # docs/stability.md keeps these tables apart, prose between
        page = replace_section(page, f"stability-{name}", "\n".join(lines))
    with open(docs, "w") as f:
        f.write(page)
    print(f"wrote the tables of {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
