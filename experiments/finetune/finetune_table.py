"""``python experiments/finetune/finetune_table.py OUT``: the markdown table of
experiments/finetune/finetune_results.sh (fine-tuned vs from-scratch degree 22), from the runs'
summary.json files, means ± std over the seeds found."""
from __future__ import annotations

import glob
import os
import statistics
import sys

from pnn_ext.train.artifacts import read_summary

# (run family, what it is, the pretraining family whose time it adds)
ROWS = [
    ("relu2", "ReLU, 2 epochs (the pretrained network)", None),
    ("relu1", "ReLU, 1 epoch (the pretrained network)", None),
    ("ft1", "ReLU 2 epochs → degree 22, 1 epoch, all at once", "relu2"),
    ("ft1-progressive", "ReLU 2 epochs → degree 22, 1 epoch, `--replace progressive`", "relu2"),
    ("ft2", "ReLU 1 epoch → degree 22, 2 epochs, all at once", "relu1"),
    ("scratch3", "degree 22 from scratch, 3 epochs", None),
]


def _runs(out: str, family: str) -> dict[str, dict]:
    found = {}
    for d in sorted(glob.glob(os.path.join(out, family, "seed*"))):
        s = read_summary(d)
        if s is not None:
            found[os.path.basename(d)] = s
    return found


def _mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(std, fmt)}"


def table(out: str) -> str:
    lines = ["| run | seeds | final test acc % | best-val test acc % | non-finite steps | rollbacks | diverged | "
             "time s (pretraining included) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    commands = []
    for family, what, pre in ROWS:
        runs = _runs(out, family)
        if not runs:
            continue
        pre_runs = _runs(out, pre) if pre else {}
        acc = [100 * s["final_test_acc"] for s in runs.values() if s["final_test_acc"] is not None]
        best = [100 * s["test_acc_at_best_val"] for s in runs.values() if s["test_acc_at_best_val"] is not None]
        times = [s["total_time_s"] + (pre_runs[k]["total_time_s"] if k in pre_runs else 0.0)
                 for k, s in runs.items()]
        lines.append(f"| {what} | {len(runs)} | {_mean_std(acc, '.2f')} | {_mean_std(best, '.2f')} | "
                     f"{sum(s['nonfinite_steps'] for s in runs.values())} | "
                     f"{sum(s['rollbacks'] for s in runs.values())} | "
                     f"{sum(s['diverged'] for s in runs.values())}/{len(runs)} | {_mean_std(times, '.0f')} |")
        commands.append(f"- {what}: `{next(iter(runs.values())).get('command')}`")
    return "\n".join(lines) + "\n\nCommands (first seed):\n\n" + "\n".join(commands) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/finetune/finetune_table.py OUT")
    print(table(sys.argv[1]), end="")
