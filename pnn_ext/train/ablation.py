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
import os
import statistics
import sys

from .. import fitting
from ..errors import ArgumentParser, UsageError, run_main
from . import artifacts
from .checkpoint import CheckpointError
from .data import DataError

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
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must list at least one integer, got {text!r}")
    return values


def _degrees(text: str) -> list[int]:
    values = _ints(text)
    for d in values:
        try:
            fitting.check_degree(d)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return values


def _seeds(text: str) -> list[int]:
    values = _ints(text)
    bad = [s for s in values if not 0 <= s < 2 ** 32]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must be in 0..2**32-1, got {bad}")
    return values


# Flags pnn-ablate gives every run itself; passed after -- they would be overridden or
# would break the run layout.
OWN_FLAGS = ("--out-dir", "--degree", "--seed", "--resume", "--overwrite", "--activation", "--boundary-loss",
             "--no-boundary-loss", "--clip", "--guard", "--no-guard", "--allow-changes")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="pnn-ablate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--degrees", type=_degrees, default=[8, 22], help="polynomial degrees (default: 8,22)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1], help="seeds (default: 0,1)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {list(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--out-dir", default="runs/ablation", help="root of the runs and the table (default: runs/ablation)")
    p.add_argument("--guard", action="store_true",
                   help="keep the divergence guard on in every run (default: off, so divergence is counted)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then pnn-train flags for every run")
    return p


def run_dir(root: str, degree: int, variant: str, seed: int) -> str:
    return os.path.join(root, f"degree{degree}", variant, f"seed{seed}")


def _plan(args) -> list[tuple[int, str, int, str, list[str] | None]]:
    """(degree, variant, seed, run directory, pnn-train arguments or None when the run
    is done) of every run, each run's arguments parsed: a bad one is an error here,
    before any run starts."""
    from .config import parse_config
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise UsageError(f"unknown variants {bad or args.variants!r}; choose from {list(VARIANTS)}")
    extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    own = [a for a in extra if a.split("=")[0] in OWN_FLAGS]
    if own:
        raise UsageError(f"pnn-train flags after -- must not include {own}: pnn-ablate sets them for each run")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"out-dir {args.out_dir!r} exists and is not a directory")
    plan = []
    for degree in args.degrees:
        for variant in variants:
            for seed in args.seeds:
                out = run_dir(args.out_dir, degree, variant, seed)
                summary = artifacts.read_summary(out)
                if summary is not None and summary["status"] in ("completed", "diverged"):
                    plan.append((degree, variant, seed, out, None))
                    continue
                argv = extra + ["--activation", "poly", "--degree", str(degree), "--seed", str(seed),
                                "--out-dir", out, *VARIANTS[variant]] + ([] if args.guard else ["--no-guard"])
                if os.path.isfile(artifacts.path(out, artifacts.LAST)):  # interrupted before: continue it
                    argv += ["--resume", "last"]
                try:
                    parse_config(argv)
                except ValueError as e:
                    raise UsageError(f"pnn-train arguments after --: {e}") from None
                plan.append((degree, variant, seed, out, argv))
    return plan


def run_all(args) -> list[dict]:
    from .config import parse_config
    from .loop import Trainer
    results = []
    for degree, variant, seed, out, argv in _plan(args):
        if argv is None:
            summary = artifacts.read_summary(out)
            print(f"[ablation] degree {degree} {variant} seed {seed}: done before ({summary['status']})")
            results.append({"degree": degree, "variant": variant, "seed": seed, "summary": summary})
            continue
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


def _ablate(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    command = "pnn-ablate " + " ".join(sys.argv[1:] if argv is None else argv)
    results = run_all(args)
    os.makedirs(args.out_dir, exist_ok=True)
    md = table(results, command, args.guard)
    artifacts.write_text(os.path.join(args.out_dir, "ablation.md"), md)
    artifacts.write_json(os.path.join(args.out_dir, "ablation.json"), [
        {k: v for k, v in r.items() if k != "summary"} | {
            "status": r["summary"]["status"], "final_test_acc": r["summary"]["final_test_acc"],
            "diverged_at": r["summary"]["diverged_at"], "nonfinite_steps": r["summary"]["nonfinite_steps"]}
        for r in results])
    plot(results, os.path.join(args.out_dir, "ablation.png"))
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    """pnn-ablate; a bad argument (its own or one for pnn-train), a damaged run or
    missing data is one line and exit code 2 before any run starts (see pnn_ext.errors)."""
    return run_main("pnn-ablate", _ablate, argv, (ValueError, DataError, CheckpointError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
