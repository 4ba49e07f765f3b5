"""``pnn-ablate`` / ``python -m pnn_ext.train.ablation``: the paper's ablation.

Runs {full method, no boundary loss, no clipping, standard clipping} x degrees x
seeds (and, asked for with --variants, the full method with the quadratic boundary
term) with the divergence guard off (so that a divergence stops the run and is
counted, not repaired), then writes OUT_DIR/ablation.md (a markdown table),
ablation.json and ablation.png. Arguments after ``--`` go to every pnn-train run.
Finished runs (summary.json present) are not run again, so an interrupted
ablation continues where it stopped.

    pnn-ablate --degrees 8,22 --seeds 0,1 --out-dir runs/ablation-mnist -- \\
        --dataset mnist --data-dir "$PNN_DATA" --epochs 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from . import artifacts

VARIANTS = {
    "full": ["--boundary-loss", "--clip", "selective"],
    "no-boundary": ["--no-boundary-loss", "--clip", "selective"],
    "no-clip": ["--boundary-loss", "--clip", "none"],
    "standard-clip": ["--boundary-loss", "--clip", "all"],
    "quadratic": ["--boundary-loss", "--clip", "selective", "--boundary-form", "quadratic"],
}
DEFAULT_VARIANTS = ("full", "no-boundary", "no-clip", "standard-clip")  # the paper's ablation
DESCRIPTION = {
    "full": "boundary loss + selective clipping",
    "no-boundary": "selective clipping, no boundary loss",
    "no-clip": "boundary loss, no clipping",
    "standard-clip": "boundary loss + clipping of all parameters (BatchNorm included)",
    "quadratic": "quadratic boundary loss max(|x| - alpha*B, 0)^2 + selective clipping",
}


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pnn-ablate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--degrees", type=_ints, default=[8, 22], help="polynomial degrees (default: 8,22)")
    p.add_argument("--seeds", type=_ints, default=[0, 1], help="seeds (default: 0,1)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {list(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--out-dir", default="runs/ablation", help="root of the runs and the table (default: runs/ablation)")
    p.add_argument("--guard", action="store_true",
                   help="keep the divergence guard on in every run (default: off, so divergence is counted)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then pnn-train flags for every run")
    return p


def run_dir(root: str, degree: int, variant: str, seed: int) -> str:
    return os.path.join(root, f"degree{degree}", variant, f"seed{seed}")


def run_all(args) -> list[dict]:
    from .config import parse_config
    from .loop import Trainer
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"pnn-ablate: error: unknown variants {bad}; choose from {list(VARIANTS)}")
    extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    results = []
    for degree in args.degrees:
        for variant in variants:
            for seed in args.seeds:
                out = run_dir(args.out_dir, degree, variant, seed)
                summary = artifacts.read_summary(out)
                if summary is not None and summary["status"] in ("completed", "diverged"):
                    print(f"[ablation] degree {degree} {variant} seed {seed}: done before ({summary['status']})")
                    results.append({"degree": degree, "variant": variant, "seed": seed, "summary": summary})
                    continue
                argv = extra + ["--activation", "poly", "--degree", str(degree), "--seed", str(seed),
                                "--out-dir", out, *VARIANTS[variant]] + ([] if args.guard else ["--no-guard"])
                if os.path.isfile(artifacts.path(out, artifacts.LAST)):  # interrupted before: continue it
                    argv += ["--resume", "last"]
                print(f"[ablation] degree {degree} {variant} seed {seed}: pnn-train {' '.join(argv)}", flush=True)
                summary = Trainer(parse_config(argv), command="pnn-train " + " ".join(argv)).run()
                acc = summary["final_test_acc"]
                print(f"[ablation] -> {summary['status']}, final test accuracy "
                      f"{'n/a' if acc is None else f'{100 * acc:.2f}%'}, non-finite steps {summary['nonfinite_steps']}",
                      flush=True)
                results.append({"degree": degree, "variant": variant, "seed": seed, "summary": summary})
    return results


def table(results: list[dict], command: str, guard: bool = False) -> str:
    lines = ["| degree | variant | runs | diverged | final test acc, runs that did not diverge (mean ± std) | "
             "min – max | diverged at (epoch, step) |", "|---:|---|---:|---:|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["degree"], r["variant"]), []).append(r["summary"])
    for (degree, variant), runs in groups.items():
        ok = [100 * s["final_test_acc"] for s in runs if not s["diverged"] and s["final_test_acc"] is not None]
        div = [s for s in runs if s["diverged"]]
        acc = (f"{statistics.mean(ok):.2f} ± {statistics.stdev(ok) if len(ok) > 1 else 0:.2f} %" if ok else "—")
        span = f"{min(ok):.2f} – {max(ok):.2f} %" if ok else "—"
        where = ", ".join(f"({s['diverged_at']['epoch']}, {s['diverged_at']['step']})" for s in div) or "—"
        lines.append(f"| {degree} | {variant} | {len(runs)} | {len(div)}/{len(runs)} | {acc} | {span} | {where} |")
    shown = {r["variant"] for r in results}
    legend = "\n".join(f"- **{k}**: {v}" for k, v in DESCRIPTION.items() if k in shown)
    how = ("Divergence guard on: non-finite steps are skipped and rolled back; a run counts as diverged when "
           "its rollbacks ran out." if guard else "Divergence guard off: a run stops at its first non-finite loss or "
           "gradient and counts as diverged.")
    return f"Command: `{command}`\n\n{how}\n\n" + "\n".join(lines) + "\n\n" + legend + "\n"


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    degrees = sorted({r["degree"] for r in results})
    variants = list(dict.fromkeys(r["variant"] for r in results))
    accs = [100 * r["summary"]["final_test_acc"] for r in results
            if not r["summary"]["diverged"] and r["summary"]["final_test_acc"] is not None]
    low = max(0.0, min(accs, default=0.0) - 5)  # zoomed so that small differences show
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(degrees), 1)
    for i, degree in enumerate(degrees):
        for j, variant in enumerate(variants):
            runs = [r["summary"] for r in results if r["degree"] == degree and r["variant"] == variant]
            ok = [100 * s["final_test_acc"] for s in runs if not s["diverged"] and s["final_test_acc"] is not None]
            x = j + (i - (len(degrees) - 1) / 2) * width
            if ok:
                ax.bar(x, statistics.mean(ok), width, yerr=statistics.stdev(ok) if len(ok) > 1 else 0,
                       color=f"C{i}", label=f"degree {degree}" if j == 0 else None, capsize=3)
            n_div = sum(s["diverged"] for s in runs)
            if n_div:
                ax.text(x, low + 1, f"{n_div}/{len(runs)}\ndiverged", ha="center", fontsize=7, color="C3")
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylabel("final test accuracy % (runs that did not diverge)")
    ax.set_ylim(low, 100)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = "pnn-ablate " + " ".join(sys.argv[1:] if argv is None else argv)
    results = run_all(args)
    os.makedirs(args.out_dir, exist_ok=True)
    md = table(results, command, args.guard)
    with open(os.path.join(args.out_dir, "ablation.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(args.out_dir, "ablation.json"), "w") as fh:
        json.dump([{k: v for k, v in r.items() if k != "summary"} | {
            "status": r["summary"]["status"], "final_test_acc": r["summary"]["final_test_acc"],
            "diverged_at": r["summary"]["diverged_at"], "nonfinite_steps": r["summary"]["nonfinite_steps"]}
            for r in results], fh, indent=2)
    plot(results, os.path.join(args.out_dir, "ablation.png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
