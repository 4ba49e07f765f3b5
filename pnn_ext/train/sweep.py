"""``pnn-sweep`` / ``python -m pnn_ext.train.sweep``: a stability map.

Trains every cell of a grid over pnn-train settings (``--grid NAME=V1,V2,...``,
any setting: bound, lr, degree, alpha, lam, clip_norm, ...) for each method
variant of pnn-ablate (full, no-boundary, no-clip, standard-clip) and each
seed, with the divergence guard off, so a divergence stops a run and is counted.
Per cell it reports the divergence rate, the final test accuracy (mean ± std of
the runs that did not diverge) and the largest max|x|/B any layer reached.
Outputs in OUT_DIR: sweep.md, sweep.json (strict JSON, null for NaN) and
sweep*.png heat maps (pnn_ext.train.sweep_report).

Every run has its own directory, OUT_DIR/NAME=V/.../VARIANT/seedS; a run whose
summary.json says completed or diverged is not run again, and an interrupted one
continues from its last.pt. Both engines write those directories, so a sweep
split between this machine and a cluster merges into one table, and
``--report-only`` rebuilds the table from whatever is there (cells never run
show as "not run"), into ``--report-dir`` if given.

Engines: ``local`` (default) runs ``--jobs`` worker processes on this machine;
``submitit`` submits the runs to Slurm (or to submitit's local executor with
``--submitit-cluster local``), ``--cells-per-job`` runs per job.

    pnn-sweep --grid bound=12,24,47 --grid lr=1e-3,1e-2,3e-2 --seeds 0,1,2 --jobs 2 \\
        --out-dir runs/sweep -- --dataset digits --model mlp --epochs 10
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
import traceback

from ..errors import ArgumentParser, UsageError, run_main
from . import artifacts
from .ablation import DEFAULT_VARIANTS, VARIANTS

FINISHED = ("completed", "diverged")


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _axis(text: str) -> tuple[str, list[str]]:
    """NAME=V1,V2,... -> (setting name, values as given); checked against TrainConfig."""
    from .config import TrainConfig, coerce, setting_types
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in TrainConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"--grid needs NAME=V1,V2,... with NAME a pnn-train setting, got {text!r}")
    if name in ("seed", "out_dir", "resume"):
        raise argparse.ArgumentTypeError(f"--grid {name}: the sweep sets it for each run")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    hint = setting_types()[name]
    for v in vals:
        try:
            coerce(v, hint)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--grid {name}: {v!r} is not a valid value") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"--grid {name}: no values")
    return name, vals


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="pnn-sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=_axis, action="append", default=[], metavar="NAME=V1,V2,...",
                   help="an axis of the grid: a pnn-train setting and its values (repeat for more axes; the "
                        "first two are the heat maps' rows and columns)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {list(VARIANTS)} (pnn-ablate's; default: "
                        f"{','.join(DEFAULT_VARIANTS)}; quadratic: the boundary loss's quadratic form)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="seeds (default: 0,1,2)")
    p.add_argument("--out-dir", default="runs/sweep", help="root of the runs and the reports (default: runs/sweep)")
    p.add_argument("--guard", action="store_true",
                   help="keep the divergence guard on (default: off, so that divergence is counted)")
    p.add_argument("--jobs", type=int, default=1, help="local engine: parallel worker processes (default: 1)")
    p.add_argument("--engine", choices=("local", "submitit"), default="local",
                   help="local processes, or submitit (Slurm, or its local executor) (default: local)")
    p.add_argument("--submitit-cluster", default=None,
                   help="submitit cluster: slurm, local or debug (default: submitit's choice, Slurm where sbatch "
                        "exists)")
    p.add_argument("--submitit-folder", default=None, help="submitit's logs and pickles (default: OUT_DIR/submitit)")
    p.add_argument("--cells-per-job", type=int, default=1, help="submitit: runs per submitted job (default: 1)")
    p.add_argument("--timeout-min", type=int, default=60, help="submitit: time limit per job, minutes (default: 60)")
    p.add_argument("--cpus-per-task", type=int, default=1, help="submitit: CPUs per job (default: 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="submitit: GPUs per job (default: 0)")
    p.add_argument("--mem-gb", type=float, default=4.0, help="submitit: memory per job in GB (default: 4)")
    p.add_argument("--slurm-partition", default=None, help="submitit on Slurm: partition")
    p.add_argument("--slurm-array-parallelism", type=int, default=None,
                   help="submitit on Slurm: most jobs of the array running at once")
    p.add_argument("--report-only", action="store_true", help="run nothing; rebuild the reports from OUT_DIR")
    p.add_argument("--report-dir", default=None,
                   help="where sweep.md, sweep.json and the heat maps go (default: OUT_DIR); sweeps of different "
                        "grids that share run directories keep their reports apart this way")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then pnn-train flags for every run")
    return p


def _value_text(v: str) -> str:
    return v.replace(os.sep, "_")


def cells(axes: list[tuple[str, list[str]]], variant_names: list[str], seeds: list[int]) -> list[dict]:
    """Every (axis values, variant, seed), in order."""
    names = [a for a, _ in axes]
    out = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        for variant in variant_names:
            for seed in seeds:
                out.append({"axes": dict(zip(names, combo)), "variant": variant, "seed": seed})
    return out


def run_dir(root: str, cell: dict) -> str:
    parts = [f"{k}={_value_text(v)}" for k, v in cell["axes"].items()]
    return os.path.join(root, *parts, cell["variant"], f"seed{cell['seed']}")


def run_argv(cell: dict, extra: list[str], out: str, guard: bool) -> list[str]:
    flags = []
    for name, value in cell["axes"].items():
        flags += ["--" + name.replace("_", "-"), value]
    return (["--activation", "poly", "--no-progress", "--no-plots"] + extra + flags + VARIANTS[cell["variant"]]
            + ["--seed", str(cell["seed"]), "--out-dir", out] + ([] if guard else ["--no-guard"]))


def finished(out: str) -> bool:
    s = artifacts.read_summary(out)
    return s is not None and s.get("status") in FINISHED


# ------------------------------------------------------------------ one run

_ARRAYS: dict[tuple[str, str], dict] = {}


def _data(cfg):
    """The run's data; the raw arrays are read once per worker process, not per run."""
    from .data import load, load_arrays
    key = (cfg.dataset, cfg.data_dir)
    if key not in _ARRAYS:
        _ARRAYS.clear()
        _ARRAYS[key] = load_arrays(cfg.dataset, cfg.data_dir)
    return load(cfg, _ARRAYS[key])


def run_one(argv: list[str], out: str) -> str:
    """One pnn-train run in this process, its output in OUT/train.log; returns its status.
    An exception is the run's failure (status "failed" in its summary), not the sweep's."""
    from .config import parse_config
    from .loop import Trainer
    if finished(out):
        return artifacts.read_summary(out)["status"]
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(artifacts.path(out, artifacts.LAST)):  # interrupted before: continue it
        argv = argv + ["--resume", "last"]
    with open(os.path.join(out, "train.log"), "a") as log, contextlib.redirect_stdout(log):
        print("pnn-train " + " ".join(argv), flush=True)
        try:
            cfg = parse_config(argv)
            return Trainer(cfg, data=_data(cfg), command="pnn-train " + " ".join(argv)).run()["status"]
        except Exception:
            traceback.print_exc(file=log)
            return "failed"


def run_many(jobs: list[tuple[list[str], str]]) -> list[str]:
    """Several runs in one process (a submitit job)."""
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return [run_one(argv, out) for argv, out in jobs]


def _worker_init() -> None:
    import torch
    torch.set_num_threads(1)  # --jobs processes share the cores


# ------------------------------------------------------------------ engines

def run_local(todo: list[tuple[list[str], str]], jobs: int, say) -> None:
    if jobs <= 1:
        for i, (argv, out) in enumerate(todo):
            say(f"[sweep] {i + 1}/{len(todo)} {out}: {run_one(argv, out)}")
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # forkserver: workers do not inherit this process's threads or torch state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(run_one, argv, out): out for argv, out in todo}
        for i, fut in enumerate(as_completed(futures)):
            say(f"[sweep] {i + 1}/{len(todo)} {futures[fut]}: {fut.result()}")


def run_submitit(todo: list[tuple[list[str], str]], args, say) -> None:
    try:
        import submitit
    except ImportError:
        raise UsageError("--engine submitit needs submitit (pip install submitit)") from None
    folder = args.submitit_folder or os.path.join(args.out_dir, "submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=args.submitit_cluster)
    params = {"timeout_min": args.timeout_min, "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb,
              "gpus_per_node": args.gpus_per_node, "name": "pnn-sweep"}
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_array_parallelism:
        params["slurm_array_parallelism"] = args.slurm_array_parallelism
    executor.update_parameters(**params)
    n = max(1, args.cells_per_job)
    chunks = [todo[i:i + n] for i in range(0, len(todo), n)]
    submitted = executor.map_array(run_many, chunks)
    say(f"[sweep] submitted {len(submitted)} submitit jobs ({len(todo)} runs), logs in {folder}")
    for job, chunk in zip(submitted, chunks):
        try:
            statuses = job.result()
        except Exception as e:  # a job that died (node failure, time limit): its runs are redone next time
            say(f"[sweep] job {job.job_id} failed: {type(e).__name__}: {e}")
            continue
        for (_, out), status in zip(chunk, statuses):
            say(f"[sweep] {out}: {status}")


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    """pnn-sweep; a user's mistake is one line and exit 2, as in pnn-train (pnn_ext.errors)."""
    return run_main("pnn-sweep", _sweep, argv, user_errors=(ValueError, FileExistsError, FileNotFoundError))


def _sweep(argv: list[str] | None) -> int:
    from . import sweep_report
    args = parser().parse_args(argv)
    command = "pnn-sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    known = VARIANTS
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in known]
    if bad:
        raise UsageError(f"unknown variants {bad}; choose from {list(known)}")
    if len({a for a, _ in args.grid}) != len(args.grid):
        raise UsageError("a setting appears in two --grid axes")
    extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    grid = cells(args.grid, names, args.seeds)
    todo = [(run_argv(c, extra, run_dir(args.out_dir, c), args.guard), run_dir(args.out_dir, c)) for c in grid]
    todo = [t for t in todo if not finished(t[1])]
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    if not args.report_only and todo:
        say(f"[sweep] {len(grid)} runs, {len(grid) - len(todo)} done before, {len(todo)} to run "
            f"({args.engine} engine)")
        start = time.time()
        if args.engine == "local":
            run_local(todo, args.jobs, say)
        else:
            run_submitit(todo, args, say)
        say(f"[sweep] ran {len(todo)} runs in {time.time() - start:.0f}s")
    report_dir = args.report_dir or args.out_dir
    os.makedirs(report_dir, exist_ok=True)
    report = sweep_report.collect(grid, [run_dir(args.out_dir, c) for c in grid], args.grid)
    md = sweep_report.write(report, report_dir, command, args.guard)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
