"""``python scripts/he_table.py REPORT.json...``: a markdown table of pnn-he reports
(``pnn-he ... --json``). scripts/he_results.sh writes the README's encrypted-inference
table with it."""
from __future__ import annotations

import json
import sys


def table(reports: list[dict]) -> str:
    lines = ["| model | degree | samples | agreement | max abs logit error | ms/sample | depth | CKKS parameters | "
             "plaintext test acc | encrypted acc (samples) |", "|---|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in reports:
        model = f"{r['model']} {r['hidden']}" if r["model"] == "mlp" else r["model"]
        lines.append(
            f"| {model} on {r['dataset']} | {r['degree']} | {r['samples']} | {100 * r['agreement']:.0f} % | "
            f"{r['max_abs_logit_error']:.1e} | {r['ms_per_sample']:.0f} | {r['depth']} "
            f"({'+'.join(map(str, r['layer_depths']))}) | {r['params']} | {100 * r['plaintext_test_acc']:.2f} % | "
            f"{100 * r['encrypted_acc']:.0f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/he_table.py REPORT.json...")
    reports = []
    for path in sys.argv[1:]:
        with open(path) as fh:
            reports.append(json.load(fh))
    print(table(reports), end="")
