"""The table of boundary-loss forms of docs/stability.md: one row per (degree, B, lr) cell of a
pnn-sweep over the variants full (exponential form), quadratic and no-boundary, from its
sweep.json. Usage: python experiments/stability/boundary_forms_table.py runs/stability/digits-quadratic/sweep.json"""
import json
import sys

VARIANTS = ("full", "quadratic", "no-boundary")


def cell(c) -> str:
    if c is None:
        return ""
    acc = "—" if c["acc_mean"] is None else f"{c['acc_mean']:.1f} ± {c['acc_std']:.1f}"
    ratio = "" if c["max_abs_x_over_b"] is None else f" ({c['max_abs_x_over_b']:.1f})"
    return acc + ratio + (f" ✗{c['diverged']}/{c['finished']}" if c["diverged"] else "")


def main(path: str) -> None:
    report = json.load(open(path))
    cells = {}
    for c in report["cells"]:
        a = c["axes"]
        cells[(int(a["degree"]), a["bound"], float(a["lr"]), c["variant"])] = c
    print("| degree | B | lr | " + " | ".join(VARIANTS) + " |")
    print("|---:|---|---:|" + "---|" * len(VARIANTS))
    for degree, bound, lr in sorted({k[:3] for k in cells}, key=lambda k: (k[0], k[1] != "none", k[1], k[2])):
        row = [cell(cells.get((degree, bound, lr, v))) for v in VARIANTS]
        print(f"| {degree} | {'preset' if bound == 'none' else bound} | {lr:g} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
