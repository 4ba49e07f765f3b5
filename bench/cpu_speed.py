"""The headline row of docs/benchmarks.md in about a minute: one forward+backward with the
boundary term (the "full" mode of the suite), fused vs torch.compile of the lean formulation a
user writes (the baseline) vs torch.compile of the reference vs the eager reference, in one
process, after checking each against float64.

    python bench/cpu_speed.py                          # 16M float32 elements, degree 22, CPU
    python bench/cpu_speed.py --numel 1048576 --degree 8 --device cuda
"""
import argparse

# bench/ is on sys.path as the script's directory; pnn_ext is the installed package.
from cases import LABELS, Case
from report import machine_line, timed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=16 * 2 ** 20, help="elements (default 16M)")
    ap.add_argument("--degree", type=int, default=22, help="degree (default 22)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions but the reference's (default 10)")
    ap.add_argument("--ref-reps", type=int, default=3, help="timed repetitions of the eager reference (default 3)")
    args = ap.parse_args()

    print(f"# {machine_line(args.device)}", flush=True)
    case = Case(args.degree, args.numel, device=args.device)
    variants = ("fused", "lean", "compiled", "reference")
    for variant in variants:
        case.check_agreement(variant)  # also compiles (warm-up, not timed)
    results = {v: timed(lambda v=v: case.full(v), args.device, args.ref_reps if v == "reference" else args.reps)
               for v in variants}
    print(f"# full step (forward + backward with boundary term), {args.numel} float32 elements, "
          f"degree {args.degree}, chebyshev, {args.device}")
    fused = results["fused"][0]
    print(f"{'variant':<26} {'median ms':>10} {'p20 ms':>8} {'p80 ms':>8} {'time/fused':>10} {'GB/s':>7}")
    for name, (med, lo, hi) in results.items():
        print(f"{LABELS[name]:<26} {med * 1e3:10.1f} {lo * 1e3:8.1f} {hi * 1e3:8.1f} {med / fused:9.2f}x "
              f"{case.bytes_moved('full') / med / 1e9:7.1f}")


if __name__ == "__main__":
    main()
