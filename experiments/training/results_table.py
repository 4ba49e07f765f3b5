"""``python experiments/training/results_table.py RUN_DIR...``: a markdown table of finished
pnn-train runs (from their summary.json), each row with the command that reproduces
it. experiments/training/results.sh writes docs/training-results.md's table with it."""
from __future__ import annotations

import sys

from pnn_ext.train.artifacts import read_summary


def row(summary: dict) -> str:
    c = summary["config"]
    act = "relu" if c["activation"] == "relu" else f"poly {c['degree']} (B={c['bound'] or 'preset'})"
    pct = lambda v: f"{100 * v:.2f}" if v is not None else "—"  # noqa: E731
    diverged = "no" if not summary["diverged"] else (
        f"yes, epoch {summary['diverged_at']['epoch']} step {summary['diverged_at']['step']}")
    epoch_s = f"{summary['epoch_time_s']:.1f}" if summary["epoch_time_s"] is not None else "—"
    return (f"| {c['dataset']} | {c['model']} | {act} | {summary['epochs_completed']} | "
            f"{pct(summary['final_test_acc'])} | {pct(summary['test_acc_at_best_val'])} | {epoch_s} | "
            f"{summary['nonfinite_steps']} | {diverged} | `{summary.get('command') or ''}` |")


def table(run_dirs: list[str]) -> str:
    lines = ["| dataset | model | activation | epochs | final test acc % | test acc % at best val epoch | "
             "s/epoch | non-finite steps | diverged | command |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for d in run_dirs:
        summary = read_summary(d)
        if summary is None:
            print(f"results: {d} has no summary, skipped", file=sys.stderr)
            continue
        lines.append(row(summary))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python experiments/training/results_table.py RUN_DIR...")
    print(table(sys.argv[1:]), end="")
