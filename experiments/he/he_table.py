"""``python experiments/he/he_table.py REPORT.json...``: markdown tables of pnn-he reports
(``pnn-he ... --json``), latency (sample packing) and throughput (batch packing) rows
side by side. experiments/he/he_results.sh writes docs/encrypted.md's tables
with it."""
from __future__ import annotations

import json
import sys


def _model(r: dict) -> str:
    return f"{r['model']} {r['hidden']} on {r['dataset']}" if r["model"] == "mlp" else f"{r['model']} on {r['dataset']}"


def _mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:.1f}"


def table(reports: list[dict]) -> str:
    lines = ["| model | degree | packing | predictions (test samples) | predictions/hour (wall) | "
             "predictions/CPU-hour | s/sample (wall) | max abs logit error | agreement | plaintext test acc | "
             "depth | CKKS parameters | load (1 min, before/after) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in reports:
        lines.append(
            f"| {_model(r)} | {r['degree']} | {r['packing']} | {r['predictions']} ({r['samples']}) | "
            f"{r['predictions_per_hour']:,.0f} | {r['predictions_per_hour_cpu']:,.0f} | "
            f"{r['seconds_per_sample']:.3g} | {r['max_abs_logit_error']:.1e} | {100 * r['agreement']:.2f} % | "
            f"{100 * r['plaintext_test_acc']:.2f} % | {r['depth']} ({'+'.join(map(str, r['layer_depths']))}) | "
            f"{r['params']} | {r['load_before'][0]:.0f} / {r['load_after'][0]:.0f} |")
    batch = [r for r in reports if r["packing"] == "batch"]
    if batch:
        lines += ["", "| model | degree | batch | s/batch (wall) | CPU s/batch | encrypt / evaluate / decrypt s | "
                      "key generation s | peak RSS GB | public context MiB | secret context MiB | ciphertext MiB "
                      "(seeded upload) | upload / download MiB per batch | model MiB | disagreements |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|---|"]
        for r in batch:
            dis = r["disagreements"]
            explained = "none" if not dis else (
                f"{len(dis)}, all with plaintext top-2 margin < 2 x error" if r["disagreements_explained"]
                else f"{len(dis)}, NOT all explained by the margin")
            lines.append(
                f"| {_model(r)} | {r['degree']} | {r['batch_size']} | {r['seconds_per_batch']:.0f} | "
                f"{r['cpu_seconds_per_batch']:.0f} | {r['encrypt_s']:.0f} / {r['evaluate_s']:.0f} / "
                f"{r['decrypt_s']:.1f} | {r['keygen_s']:.1f} | {r['peak_rss_gb']:.2f} | "
                f"{_mib(r['public_context_bytes'])} | {_mib(r['secret_context_bytes'])} | "
                f"{_mib(r['ciphertext_bytes'])} ({_mib(r['seeded_ciphertext_bytes'])}) | "
                f"{_mib(r['upload_bytes_per_batch'])} / {_mib(r['download_bytes_per_batch'])} | "
                f"{_mib(r['model_bytes'])} | {explained} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python experiments/he/he_table.py REPORT.json...")
    reports = []
    for path in sys.argv[1:]:
        with open(path) as fh:
            reports.append(json.load(fh))
    print(table(reports), end="")
