"""``python experiments/accuracy/accuracy_table.py OUT [FAMILY=LABEL ...]``: the markdown
table of experiments/accuracy/accuracy_results.sh, from the runs' summary.json files
(OUT/FAMILY/seedS): per family, the seeds found, the final test accuracy (mean ± std),
the test accuracy at the best validation epoch, the difference from the ReLU family of
the same data and epochs (``relu_eN``, ``mnist_relu_eN``, when listed), seconds per
epoch, the largest max |x| / B any layer reached, and the command of the first seed.
Families are shown in the order given (default: every family found, sorted)."""
from __future__ import annotations

import glob
import os
import re
import shlex
import statistics
import sys

from pnn_ext.train.artifacts import read_summary


def runs(out: str, family: str) -> list[dict]:
    found = []
    for d in sorted(glob.glob(os.path.join(out, family, "seed*"))):
        s = read_summary(d) if os.path.isdir(d) else None
        if s is not None and s.get("status") == "completed":
            found.append(s)
    return found


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def command(summary: dict) -> str:
    """The run's command without what differs per seed (--seed, --out-dir) or is cosmetic."""
    words = shlex.split(summary.get("command") or "")
    keep, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--seed", "--out-dir"):
            skip = True
            continue
        if w in ("--overwrite", "--no-progress"):
            continue
        if keep and keep[-1] == "--data-dir" and w == os.environ.get("PNN_DATA"):
            w = "$PNN_DATA"  # MNIST's directory on the machine that ran it: the reader's own
        keep.append(w)
    return " ".join(keep)


DATASET_PREFIXES = ("mnist", "dig", "seq")  # MNIST, digits, sequential MNIST (cnn1d); none: Fashion-MNIST


def dataset_prefix(family: str) -> str:
    """"mnist_" for the MNIST families (mnist_relu_e5, ...), "dig_" and "seq_" for digits and
    sequential MNIST, "" for Fashion-MNIST's."""
    head = family.split("_", 1)[0]
    return head + "_" if head in DATASET_PREFIXES and "_" in family else ""


RELU = re.compile(r"(?:(" + "|".join(DATASET_PREFIXES) + r")_)?relu_e(\d+)")


def shown_command(summary: dict) -> str:
    """command(), plus --recalibrate-epoch 0 for a polynomial run at the preset B made before
    recalibration became the default (its settings have no recalibrate_epoch, or 0 with no
    flag): the flag that reproduces it with this version."""
    cmd, cfg = command(summary), summary.get("config") or {}
    preset = cfg.get("activation", "poly") == "poly" and cfg.get("bound") in (None, "auto")
    if preset and cfg.get("recalibrate_epoch") in (None, 0) and "--recalibrate-epoch" not in cmd \
            and "recalibrate_margin" not in cfg:
        cmd += " --recalibrate-epoch 0"
    return cmd


def table(out: str, families: list[tuple[str, str]]) -> str:
    relu = {}  # (dataset prefix, epochs) -> the ReLU family's mean test accuracy
    for fam, _ in families:
        m = RELU.fullmatch(fam)
        acc = [100 * s["final_test_acc"] for s in runs(out, fam)] if m else []
        if acc:
            relu[((m.group(1) + "_") if m.group(1) else "", m.group(2))] = statistics.mean(acc)
    lines = ["| run | seeds | test acc % | best-val test acc % | − ReLU | s/epoch | max \\|x\\|/B | command |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for fam, label in families:
        found = runs(out, fam)
        if not found:
            continue
        acc = [100 * s["final_test_acc"] for s in found]
        best = [100 * s["test_acc_at_best_val"] for s in found]
        m = re.search(r"_e(\d+)$", fam)
        ref = relu.get((dataset_prefix(fam), m.group(1))) if m else None
        is_relu = RELU.fullmatch(fam) is not None
        delta = f"{statistics.mean(acc) - ref:+.2f}" if ref is not None and not is_relu else ""
        secs = statistics.mean(s["epoch_time_s"] for s in found)
        ratios = [s["max_abs_x_over_b"] for s in found if s.get("max_abs_x_over_b") is not None]
        ratio = f"{max(ratios):.2f}" if ratios else ""
        secs_text = f"{secs:.1f}" if secs < 10 else f"{secs:.0f}"
        cmd = shown_command(found[0]).replace(os.path.abspath(out), "$OUT")
        lines.append(f"| {label} | {len(found)} | {mean_std(acc)} | {mean_std(best)} | {delta} | {secs_text} | "
                     f"{ratio} | `{cmd}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    out, pairs = argv[0], argv[1:]
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*")) if os.path.isdir(p))
    families = [tuple(p.split("=", 1)) for p in pairs] if pairs else [(f, f) for f in found]
    print(table(out, families), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
