"""pnn-sweep's engines: the runs of a plan (pnn_ext.train.sweep_plan) in this process
(``--jobs 1``), in worker processes (``--jobs N``) or as submitit jobs, and the lock
that keeps a second sweep out of an out-dir.

A signal stops a parallel sweep within seconds: the queued runs are dropped, the
running ones get SIGTERM (each writes its summary, status interrupted, as pnn-train
does) and a worker that has not ended within STOP_GRACE_S is killed."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
import traceback

from ..errors import Terminated, UsageError
from . import sweep_plan

LOCK = ".pnn-sweep.lock"
STOP_GRACE_S = 10.0


@contextlib.contextmanager
def locked(out_dir: str):
    """Hold OUT_DIR/.pnn-sweep.lock (an flock, released by the kernel when this process ends,
    however it ends); a UsageError when another sweep holds it."""
    file = os.path.join(out_dir, LOCK)
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # what the checks before cannot see (/proc, a full or read-only disk)
        raise UsageError(f"out-dir {out_dir!r} cannot be written: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"out-dir {out_dir!r} is in use by another pnn-sweep (it holds {file}); wait for it "
                             f"to end or use another --out-dir") from None
        yield
    finally:
        os.close(fd)


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


def run_one(cell: dict) -> str:
    """One pnn-train run of a scheduled cell in this process, its output in DIR/train.log;
    returns its status. An exception is the run's failure (status "failed"), not the sweep's;
    a signal (KeyboardInterrupt, Terminated) ends the run as pnn-train's does and goes on up."""
    from .config import parse_config
    from .loop import Trainer
    sweep_plan.write_record(cell)
    argv = cell["argv"]
    with open(os.path.join(cell["dir"], "train.log"), "a") as log, contextlib.redirect_stdout(log):
        print("pnn-train " + " ".join(argv), flush=True)
        try:
            cfg = parse_config(argv)
            return Trainer(cfg, data=_data(cfg), command="pnn-train " + " ".join(argv)).run()["status"]
        except Exception:
            traceback.print_exc(file=log)
            return "failed"


def run_many(cells: list[dict]) -> list[str]:
    """Several runs in one process (a submitit job)."""
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return [run_one(c) for c in cells]


# ------------------------------------------------------------------ worker processes

_WORKER = {"running": False, "stopping": False}


def _worker_signal(signum, frame):
    """In a worker: a signal ends the run in progress (as in pnn-train) and every later one
    is skipped. Between runs it only marks the worker as stopping: an exception raised
    inside the pool's own queue reads would print a traceback."""
    _WORKER["stopping"] = True
    if _WORKER["running"]:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _worker_init() -> None:
    import torch
    torch.set_num_threads(1)  # --jobs processes share the cores
    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGINT, _worker_signal)  # Ctrl-C reaches the workers too (one process group)


def _worker_run(cell: dict) -> str:
    if _WORKER["stopping"]:
        return "not run (sweep stopped)"
    _WORKER["running"] = True
    try:
        return run_one(cell)
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        _WORKER["running"] = False


def _stop(pool) -> None:
    """Drop the queued runs, SIGTERM the workers, kill those still alive after STOP_GRACE_S."""
    procs = list((pool._processes or {}).values())  # no public handle on the workers before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def run_local(todo: list[dict], jobs: int, say) -> None:
    if jobs <= 1:
        for i, cell in enumerate(todo):
            say(f"[sweep] {i + 1}/{len(todo)} {cell['dir']}: {run_one(cell)}")
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    # forkserver: workers do not inherit this process's threads or torch state
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver"), initializer=_worker_init)
    try:
        futures = {pool.submit(_worker_run, cell): cell["dir"] for cell in todo}
        for i, fut in enumerate(as_completed(futures)):
            try:
                status = fut.result()
            except BrokenProcessPool:  # a worker was killed (out of memory?): its run and the queued ones are lost
                status = "failed (its worker process died)"
            say(f"[sweep] {i + 1}/{len(todo)} {futures[fut]}: {status}")
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def run_submitit(todo: list[dict], args, say) -> None:
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
        for cell, status in zip(chunk, statuses):
            say(f"[sweep] {cell['dir']}: {status}")
