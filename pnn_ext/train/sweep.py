"""``pnn-sweep`` / ``python -m pnn_ext.train.sweep``: a stability map.

Trains every cell of a grid over pnn-train settings (``--grid NAME=V1,V2,...``,
any setting: bound, lr, degree, alpha, lam, clip_norm, learnable, ...) for each method
variant of pnn-ablate (full, no-boundary, no-clip, standard-clip) and each
seed, with the divergence guard off, so a divergence stops a run and is counted.
Per cell it reports the divergence rate, the final test accuracy (mean ± std of
the runs that did not diverge) and the largest max|x|/B any layer reached.
Outputs in OUT_DIR: sweep.md, sweep.json (strict JSON, null for NaN) and
sweep*.png heat maps (pnn_ext.train.sweep_report). docs/sweep.md has the details.

Every cell's command is checked before any run starts (pnn_ext.train.sweep_plan):
a bad setting, a flag the sweep or a variant sets itself, or two cells that would be
one run end the sweep with one line and exit code 2, before anything is written.
Every run has its own directory, OUT_DIR/NAME=V/.../VARIANT/seedS, which records the
settings it was made with (cell.json); a finished run of the same settings is not run
again, an interrupted one continues from its last.pt, and one of other settings is
refused (``--overwrite`` runs it again). Both engines write those directories, so a
sweep split between this machine and a cluster merges into one table, and
``--report-only`` rebuilds the table from whatever is there (cells never run
show as "not run"), into ``--report-dir`` if given. A lock (OUT_DIR/.pnn-sweep.lock)
keeps a second sweep out of the out-dir while one runs; SIGINT or SIGTERM stops the
sweep within seconds and still writes the report of the runs that finished.

Engines: ``local`` (default) runs ``--jobs`` worker processes on this machine;
``submitit`` submits the runs to Slurm (or to submitit's local executor with
``--submitit-cluster local``), ``--cells-per-job`` runs per job.

    pnn-sweep --grid bound=12,24,47 --grid lr=1e-3,1e-2,3e-2 --seeds 0,1,2 --jobs 2 \\
        --out-dir runs/sweep -- --dataset digits --model mlp --epochs 10
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from ..errors import ArgumentParser, Terminated, run_main
from . import sweep_plan, sweep_run
from .ablation import DEFAULT_VARIANTS, VARIANTS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="pnn-sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=sweep_plan.parse_axis, action="append", default=[], metavar="NAME=V1,V2,...",
                   help="an axis of the grid: a pnn-train setting and its values (repeat for more axes; the "
                        "first two are the heat maps' rows and columns; booleans: true,false)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {list(VARIANTS)} (pnn-ablate's; default: "
                        f"{','.join(DEFAULT_VARIANTS)}; quadratic: the boundary loss's quadratic form)")
    p.add_argument("--seeds", type=sweep_plan.parse_seeds, default=[0, 1, 2], help="seeds (default: 0,1,2)")
    p.add_argument("--out-dir", default="runs/sweep", help="root of the runs and the reports (default: runs/sweep)")
    p.add_argument("--overwrite", action="store_true",
                   help="run again the cells whose directory holds a run made with other settings (default: such a "
                        "sweep is refused)")
    p.add_argument("--guard", action="store_true",
                   help="keep the divergence guard on (default: off, so that divergence is counted)")
    p.add_argument("--jobs", type=_positive, default=1, help="local engine: parallel worker processes (default: 1)")
    p.add_argument("--engine", choices=("local", "submitit"), default="local",
                   help="local processes, or submitit (Slurm, or its local executor) (default: local)")
    p.add_argument("--submitit-cluster", default=None,
                   help="submitit cluster: slurm, local or debug (default: submitit's choice, Slurm where sbatch "
                        "exists)")
    p.add_argument("--submitit-folder", default=None, help="submitit's logs and pickles (default: OUT_DIR/submitit)")
    p.add_argument("--cells-per-job", type=_positive, default=1, help="submitit: runs per submitted job (default: 1)")
    p.add_argument("--timeout-min", type=_positive, default=60,
                   help="submitit: time limit per job, minutes (default: 60)")
    p.add_argument("--cpus-per-task", type=_positive, default=1, help="submitit: CPUs per job (default: 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="submitit: GPUs per job (default: 0)")
    p.add_argument("--mem-gb", type=float, default=4.0, help="submitit: memory per job in GB (default: 4)")
    p.add_argument("--slurm-partition", default=None, help="submitit on Slurm: partition")
    p.add_argument("--slurm-array-parallelism", type=_positive, default=None,
                   help="submitit on Slurm: most jobs of the array running at once")
    p.add_argument("--report-only", action="store_true", help="run nothing; rebuild the reports from OUT_DIR")
    p.add_argument("--report-dir", default=None,
                   help="where sweep.md, sweep.json and the heat maps go (default: OUT_DIR); sweeps of different "
                        "grids that share run directories keep their reports apart this way")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then pnn-train flags for every run")
    return p


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    """pnn-sweep; a user's mistake is one line and exit 2, as in pnn-train (pnn_ext.errors)."""
    return run_main("pnn-sweep", _sweep, argv, user_errors=(ValueError, FileExistsError, FileNotFoundError))


def _report(args, planned: list[dict], command: str, stopped: str | None = None) -> str:
    from . import sweep_report
    report_dir = args.report_dir or args.out_dir
    os.makedirs(report_dir, exist_ok=True)
    report = sweep_report.collect(planned, args.grid)
    return sweep_report.write(report, report_dir, command, args.guard, stopped=stopped)


def _sweep(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    command = "pnn-sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    planned = sweep_plan.plan(args)  # every check that needs no lock: nothing is written before it passes
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    if args.report_only and args.report_dir and os.path.abspath(args.report_dir) != os.path.abspath(args.out_dir):
        lock = None  # reads the runs only: it may watch a sweep that is running
    else:
        lock = sweep_run.locked(args.out_dir)
    with lock if lock is not None else contextlib.nullcontext():
        if args.report_only:
            old = sum(bool(sweep_plan.stale(c)) for c in planned)
            if old:
                say(f"[sweep] {old} run directories hold runs made with other settings: shown as not run")
            print(_report(args, planned, command))
            return 0
        todo = sweep_plan.schedule(planned, args.overwrite)
        if todo:
            say(f"[sweep] {len(planned)} runs, {len(planned) - len(todo)} done before, {len(todo)} to run "
                f"({args.engine} engine)")
            start = time.time()
            try:
                if args.engine == "local":
                    sweep_run.run_local(todo, args.jobs, say)
                else:
                    sweep_run.run_submitit(todo, args, say)
            except KeyboardInterrupt as e:
                how = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
                _report(args, planned, command, stopped=how)
                say(f"[sweep] stopped by {how} after {time.time() - start:.0f}s; the report holds the runs that "
                    f"finished")
                raise
            say(f"[sweep] ran {len(todo)} runs in {time.time() - start:.0f}s")
        print(_report(args, planned, command))
        failed = [c["dir"] for c in todo if not sweep_plan.finished(c)]
    if failed:  # the report is written; the exit code says that it is incomplete
        print(f"pnn-sweep: {len(failed)} of {len(todo)} runs did not finish; see {failed[0]}/train.log",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
