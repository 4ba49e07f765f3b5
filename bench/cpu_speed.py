"""One fused forward+backward (with the boundary term) vs the eager reference and
torch.compile of the reference, in the same process. Prints medians and ratios.

    python bench/cpu_speed.py                   # 16M float32 elements, degree 22, CPU
    python bench/cpu_speed.py --numel 1000000 --degree 8 --device cuda

"Full" mode: y, stats = op(x); grad of (y, stats[0]) w.r.t. x with a fixed
grad_y, i.e. what one training step does for one activation layer. The fused
op's result is checked against the reference before timing.
"""
import argparse
import statistics
import time

import torch

import pnn_ext
from pnn_ext import reference


def full_step(fn, x, c, gy, g_l, bound, alpha, basis):
    y, stats = fn(x, c, bound, alpha, basis)
    return torch.autograd.grad((y, stats[0]), x, (gy, g_l))[0]


def timeit(fn, reps, device):
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=16 * 2 ** 20, help="elements (default 16M)")
    ap.add_argument("--degree", type=int, default=22, help="degree (default 22)")
    ap.add_argument("--basis", default="chebyshev", choices=["chebyshev", "monomial"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions of the fast variants")
    ap.add_argument("--ref-reps", type=int, default=3, help="timed repetitions of the eager reference")
    args = ap.parse_args()

    bound, alpha = pnn_ext.preset(args.degree)
    c = torch.tensor(pnn_ext.fit("relu", args.degree, bound, basis=args.basis).coeffs, dtype=torch.float32,
                     device=args.device)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.numel, generator=g) * bound / 3).to(args.device).requires_grad_()
    gy = torch.randn(args.numel, generator=g).to(args.device)
    g_l = torch.tensor(1000.0, device=args.device)
    run = lambda fn: full_step(fn, x, c, gy, g_l, bound, alpha, args.basis)  # noqa: E731

    compiled = torch.compile(reference.poly_act)
    fused_out = run(pnn_ext.poly_act)
    ref_out = run(reference.poly_act)
    comp_out = run(compiled)  # compiles (warm-up, not timed)
    scale = ref_out.abs().max()
    assert (fused_out - ref_out).abs().max() <= 1e-4 * scale, "fused disagrees with the reference"
    assert (comp_out - ref_out).abs().max() <= 1e-4 * scale, "compiled disagrees with the reference"

    results = {
        "fused": timeit(lambda: run(pnn_ext.poly_act), args.reps, args.device),
        "compiled": timeit(lambda: run(compiled), args.reps, args.device),
        "reference": timeit(lambda: run(reference.poly_act), args.ref_reps, args.device),
    }
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# full step (forward + backward with boundary term), {args.numel} float32 elements, degree "
          f"{args.degree}, {args.basis}, device {args.device}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu}, "
          f"pnn_ext CPU kernels: {pnn_ext.cpu_capability()}")
    moved = 5 * 4 * args.numel  # x read twice, grad_y once, y and grad_x written once
    fused = results["fused"][0]
    print(f"{'variant':<10} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'fused speed-up':>15} {'GB/s':>7}")
    for name, (med, lo, hi) in results.items():
        print(f"{name:<10} {med * 1e3:10.1f} {lo * 1e3:8.1f} {hi * 1e3:8.1f} {med / fused:14.1f}x "
              f"{moved / med / 1e9:7.1f}")


if __name__ == "__main__":
    main()
