"""Throughput of pnn-he serve with 1 and N worker processes: latency per request,
predictions per hour, peak memory per worker (docs/service.md's table).

    python bench/he_service.py                      # runs/he's digits MLP (degree 22), CryptoNets (2, 22)
    python bench/he_service.py runs/x/best.pt --workers 1,2 --requests 1 --samples 64   # a quick check

For each checkpoint (trained by experiments/he/he_results.sh into runs/he), the model is
folded, then for each worker count W a real server is started on 127.0.0.1 with W workers,
W clients each open a session and encrypt one batch (the test inputs, repeated to N/2
samples, or --samples) once, and then send it --requests times, all W at once: the server
is kept busy with exactly W batches, and the clients' encryption is not in the figures.
Latency is one request's wall time at the client (upload, queue, evaluation, download);
predictions per hour are all the requests' samples over the wall time of the timed part;
peak memory is each worker's VmHWM (Linux). Each answer's argmax is compared with the
plaintext folded model. One warm-up request per client (loading the session's context in
a worker) is not timed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from report import machine_line

DEFAULT_RUNS = ["runs/he/mlp-22/best.pt", "runs/he/cn-2/best.pt", "runs/he/cn-22/best.pt"]


def peak_rss_gib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def measure(model_path: str, x: np.ndarray, workers: int, requests: int, samples: int | None) -> dict:
    from pnn_ext.he import Client, HEModel
    from pnn_ext.he.server import local_server
    model = HEModel.load(model_path)
    flags = ("--workers", str(workers), "--max-request-mib", "8192", "--max-context-mib", "1024",
             "--max-pending", str(workers), "--allow-out-of-range")
    with local_server(model_path, *flags, env={"OMP_NUM_THREADS": "1"}, timeout=600) as (url, _), \
            tempfile.TemporaryDirectory(prefix="pnn-he-bench-") as tmp:
        clients = [Client(url) for _ in range(workers)]
        n = min(samples or clients[0].slots, clients[0].slots)
        batch = x[np.arange(n) % len(x)].reshape(n, -1)
        plain = model(batch).argmax(1)
        paths, latencies, pids, agree = [], [], set(), []
        for k, c in enumerate(clients):
            c.open()
            paths.append(os.path.join(tmp, f"batch{k}.ct"))
            c._encrypt_to(paths[-1], batch)
        lock = threading.Lock()

        def run(k: int, count: int, timed: bool) -> None:
            c = clients[k]
            for _ in range(count):
                t0 = time.perf_counter()
                r = c._call("POST", f"/v1/sessions/{c.session}/predict", content=open(paths[k], "rb"),
                            headers={"content-type": "application/octet-stream"})
                seconds = time.perf_counter() - t0
                with lock:
                    pids.add(int(r.headers["x-pnn-worker"]))
                    if timed:
                        latencies.append(seconds)
                    else:
                        agree.append(float((c._decrypt(r.content, n).argmax(1) == plain).mean()))

        def all_at_once(count: int, timed: bool) -> float:
            threads = [threading.Thread(target=run, args=(k, count, timed)) for k in range(workers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0
        all_at_once(1, timed=False)                  # warm-up: each worker loads a session's context
        wall = all_at_once(requests, timed=True)
        peaks = [peak_rss_gib(p) for p in sorted(pids)]
        for c in clients:
            c.close()
    return {"workers": workers, "samples": n, "requests": len(latencies), "wall_s": wall,
            "latency_mean_s": statistics.mean(latencies), "latency_median_s": statistics.median(latencies),
            "predictions_per_hour": n * len(latencies) / wall * 3600, "worker_pids": len(pids),
            "peak_rss_gib": max((p for p in peaks if p is not None), default=float("nan")),
            "agreement": min(agree)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=DEFAULT_RUNS, help="pnn-train checkpoints (default: %(default)s)")
    p.add_argument("--data-dir", default=os.environ.get("PNN_DATA"), help="dataset directory (MNIST for "
                                                                          "CryptoNets; default: $PNN_DATA)")
    p.add_argument("--workers", default=f"1,{len(os.sched_getaffinity(0))}",
                   help="worker counts, comma separated (default: %(default)s)")
    p.add_argument("--requests", type=int, default=2, help="timed requests per client (default: %(default)s)")
    p.add_argument("--samples", type=int, default=None, help="samples per batch (default: N/2, a full batch)")
    a = p.parse_args(argv)
    from pnn_ext.he.cli import main as pnn_he
    counts = [int(w) for w in a.workers.split(",")]
    print(machine_line("cpu"))
    print(f"load average before: {os.getloadavg()}")
    print("| model | degree | workers | samples/batch | requests | latency mean / median s | predictions/hour "
          "| vs 1 worker | peak RSS per worker GiB | agreement |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for run in a.runs:
        with tempfile.TemporaryDirectory(prefix="pnn-he-bench-") as tmp:
            model_path, x_path = os.path.join(tmp, "m.npz"), os.path.join(tmp, "x.npy")
            argv = ["fold", run, "--out", model_path, "--inputs-out", x_path]
            if a.data_dir:
                argv += ["--data-dir", a.data_dir]
            with contextlib.redirect_stdout(io.StringIO()):    # fold's JSON report
                if pnn_he(argv) != 0:
                    return 2
            from pnn_ext.he import HEModel
            he = HEModel.load(model_path)
            degree = max((layer.degree for layer in he.layers if hasattr(layer, "degree")), default=0)
            base = None
            for w in counts:
                r = measure(model_path, np.load(x_path), w, a.requests, a.samples)
                base = base or r["predictions_per_hour"]
                print(f"| {run} | {degree} | {w} | {r['samples']} | {r['requests']} | {r['latency_mean_s']:.2f} / "
                      f"{r['latency_median_s']:.2f} | {r['predictions_per_hour']:,.0f} | "
                      f"{r['predictions_per_hour'] / base:.2f}x | {r['peak_rss_gib']:.2f} | "
                      f"{100 * r['agreement']:.2f} % |", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
