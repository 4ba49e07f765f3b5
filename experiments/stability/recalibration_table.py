"""``python experiments/stability/recalibration_table.py LABEL=PREFIX ...``: docs/stability.md's
table of the default recalibration at the harsh learning rates, from the pnn-sweep outputs
PREFIX-recal1 (preset B for one epoch, then recalibrated: the default) and PREFIX-recal0
(the same runs with B fixed, the published method), each with the full method and without
the boundary loss: per data set, degree and learning rate, the final test accuracy (mean ±
std, ✗ diverged runs), what the boundary loss is worth in each (full − no-boundary), and the
largest max |x|/B of the full method. experiments/stability/stability_results.sh runs it."""
from __future__ import annotations

import json
import os
import sys


def cells(prefix: str) -> dict:
    with open(os.path.join(prefix, "sweep.json")) as fh:
        report = json.load(fh)
    return {(c["axes"]["degree"], c["axes"]["lr"], c["variant"]): c for c in report["cells"]}


def acc(c: dict | None) -> str:
    if c is None or not c["finished"]:
        return "not run"
    text = "—" if c["acc_mean"] is None else f"{c['acc_mean']:.2f} ± {c['acc_std']:.2f}"
    return text + (f" (✗{c['diverged']}/{c['finished']})" if c["diverged"] else "")


def worth(full: dict | None, none: dict | None) -> str:
    """full − no-boundary in points; a diverged no-boundary run counts as 10 % (chance on 10 classes)."""
    if not full or not none or full["acc_mean"] is None or not none["finished"]:
        return ""
    runs = [r for r in none["runs"] if r["status"] in ("completed", "diverged")]
    accs = [100 * (r["final_test_acc"] if r["status"] == "completed" else 0.1) for r in runs]
    return f"{full['acc_mean'] - sum(accs) / len(accs):+.1f}" if accs else ""


def ratio(c: dict | None) -> str:
    return "" if not c or c.get("max_abs_x_over_b") is None else f"{c['max_abs_x_over_b']:.2f}"


def table(pairs: list[tuple[str, str]]) -> str:
    lines = ["| data | degree | lr | full, B fixed | no boundary, B fixed | worth | full, recalibrated (default) "
             "| no boundary, recalibrated | worth | max \\|x\\|/B, recalibrated |",
             "|---|---:|---:|---|---|---:|---|---|---:|---:|"]
    for label, prefix in pairs:
        fixed, recal = cells(prefix + "-recal0"), cells(prefix + "-recal1")
        for degree in sorted({k[0] for k in recal}, key=int):
            for lr in sorted({k[1] for k in recal}, key=float):
                f0, n0 = fixed.get((degree, lr, "full")), fixed.get((degree, lr, "no-boundary"))
                f1, n1 = recal.get((degree, lr, "full")), recal.get((degree, lr, "no-boundary"))
                lines.append(f"| {label} | {degree} | {lr} | {acc(f0)} | {acc(n0)} | {worth(f0, n0)} | {acc(f1)} "
                             f"| {acc(n1)} | {worth(f1, n1)} | {ratio(f1)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    print(table([tuple(a.split("=", 1)) for a in argv]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
