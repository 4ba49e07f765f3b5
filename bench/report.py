"""Run the benchmark suite and write docs/benchmarks.md (the site's Benchmarks page).

    python bench/report.py                 # CPU: the whole suite (~25 min on 2 cores), then memory, end-to-end
                                           # and the roofline (bench/roofline.py, ~3 min)
    python bench/report.py --device cuda   # GPU section (same suite, synchronized timing; CUDA events at 64M)
    python bench/report.py --sizes 1M --degrees 8,22   # a quicker slice
    python bench/report.py --suite-json bench/results-cpu.json  # reuse a saved suite run

The suite's raw pytest-benchmark JSON is kept in bench/
(bench/results-cpu.json / results-gpu.json).

Each run rewrites only its own section of docs/benchmarks.md (CPU or GPU; a CPU run also
the ROOFLINE section), so the two can come from different machines. Every number in it
comes from this script; every ratio's baseline is cases.BASELINE (torch.compile of the lean
formulation a user writes), torch.compile of the reference a second column.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

# bench/ is on sys.path as the script's directory (pytest: pyproject's pythonpath); pnn_ext is installed.
import pnn_ext
from cases import BASELINE, LABELS, VARIANTS, Case, saved_bytes
from pnn_ext.models import SmallCNN

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(ROOT, "docs", "benchmarks.md")  # the documentation site's Benchmarks page


# ---------------------------------------------------------------- measurements

def timed(fn, device, reps, setup=lambda: ()):
    """Median, 20th and 80th percentile seconds of fn(*setup()). CUDA: CUDA events."""
    times = []
    for _ in range(reps):
        args = setup()
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=5) if len(times) >= 2 else [times[0]] * 4
    return statistics.median(times), q[0], q[3]


def copy_bandwidth(device, numel=16 * 2 ** 20):
    x = torch.randn(numel, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    med, _, _ = timed(lambda: y.copy_(x), device, 20)
    return 2 * x.numel() * x.element_size() / med / 1e9


def run_suite(device, sizes, degrees, json_path):
    env = dict(os.environ, PNN_BENCH_DEVICE=device, PNN_BENCH_SIZES=sizes, PNN_BENCH_DEGREES=degrees)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(HERE, "test_bench_polyact.py"),
           f"--benchmark-json={json_path}", "--benchmark-columns=median,iqr,rounds"]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, env=env, cwd=ROOT).returncode
    if rc != 0:
        raise SystemExit(f"benchmark suite failed (exit {rc})")
    with open(json_path) as f:
        return json.load(f)["benchmarks"]


# Run in a fresh process with bench/ on PYTHONPATH: python -c STACK_SCRIPT VARIANT LAYERS NUMEL
STACK_SCRIPT = r"""
import resource, sys
from cases import Case, power_poly_act
import pnn_ext
variant, layers, numel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
case = Case(22, numel)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def step():
    y, terms = case.x, []
    for _ in range(layers):
        if variant == "power":
            y, b = power_poly_act(y, case.coeffs_x, case.bound, case.alpha); terms.append(b)
        else:  # fused or reference
            y, s = pnn_ext.poly_act(y, case.coeffs, case.bound, case.alpha, "chebyshev", impl=variant)
            terms.append(s[0])
        y = y * 0.5  # keep the next layer's input in range
    (y.sum() + 1000 * sum(terms)).backward()
base = rss()
step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak - base)
"""


def stack_peak_memory(variant, device, layers=4, numel=4 * 2 ** 20):
    """Peak memory above the inputs during one training step of `layers` activation layers."""
    if device == "cuda":
        case = Case(22, numel, device=device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        y, terms = case.x, []
        for _ in range(layers):
            if variant == "power":
                from cases import power_poly_act
                y, b = power_poly_act(y, case.coeffs_x, case.bound, case.alpha)
            else:
                y, s = pnn_ext.poly_act(y, case.coeffs, case.bound, case.alpha, "chebyshev", impl=variant)
                b = s[0]
            terms.append(b)
            y = y * 0.5
        (y.sum() + 1000 * sum(terms)).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: peak RSS of a fresh process (glibc returns large blocks to the OS on free).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", STACK_SCRIPT, variant, str(layers), str(numel)], capture_output=True,
                         text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def training_step(model, x, target):
    """One step of pnn-train's objective: CE + 1000 * boundary loss, backward, selective clip, AdamW."""
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss = F.cross_entropy(model(x), target) + 1000 * pnn_ext.boundary_loss(model).to(x.device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pnn_ext.clip_grad_norm_selective_(model, 1.0)
        opt.step()
    return step


def end_to_end(device, batch=128):
    """Median, 20th and 80th percentile seconds of one training step of pnn-train's
    small CNN (MNIST-sized batch) with ReLU, and with degree-22 activations run by
    each implementation (impl="fused" | "reference", as Liger's kernel_provider)."""
    rows = {}
    x = torch.randn(batch, 1, 28, 28, device=device)
    target = torch.randint(0, 10, (batch,), device=device)
    for name, impl, reps in (("relu", None, 10), ("degree 22, fused", "fused", 10),
                             ("degree 22, reference", "reference", 3)):
        torch.manual_seed(0)
        model = SmallCNN(1, 10, (28, 28))  # pnn-train's small CNN, as it trains MNIST
        if impl is not None:
            pnn_ext.convert(model, degree=22, impl=impl)
        step = training_step(model.to(device), x, target)
        step()  # warm-up
        rows[name] = timed(step, device, reps)
    return rows


# ---------------------------------------------------------------- report

def fmt_ms(s):
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def machine_line(device):
    if device == "cuda":
        return f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    return (f"CPU: {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
            f"pnn_ext kernels: {pnn_ext.cpu_capability()}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def index_suite(benches):
    """pytest-benchmark entries by (variant, mode, degree, numel, dtype) -> (stats, extra_info)."""
    by = {}
    for b in benches:
        e = b["extra_info"]
        by[(e["variant"], e["mode"], e["degree"], e["numel"], e["dtype"])] = (b["stats"], e)
    return by


def report_command(device, args):
    return (f"python bench/report.py --device {device}"
            + (f" --sizes {args.sizes}" if args.sizes != "64K,1M,16M" else "")
            + (f" --degrees {args.degrees}" if args.degrees != "2,4,8,16,22" else "")
            + (f" --suite-json {os.path.relpath(args.suite_json, ROOT)}" if args.suite_json else ""))


def section_header(device, args, copy_gbs):
    cmd = report_command(device, args)
    title = "GPU" if device == "cuda" else "CPU"
    reused = " Suite timings from that JSON (written by a full run of the suite); the rest measured now."
    return [f"<!-- {title} section: written by `{cmd}` -->", f"## {title}", "",
            f"`{cmd}` on {datetime.date.today()}." + (reused if args.suite_json else ""), "",
            machine_line(device), "",
            f"Measured copy bandwidth (`y.copy_(x)`, 16M float32): **{copy_gbs:.1f} GB/s**.", ""]


def headline_key(by):
    """(mode, degree, numel, dtype) of the headline: full step, degree 22, largest size, float32."""
    return ("full", 22, max(k[3] for k in by), "torch.float32")


def section_headline(by):
    head = headline_key(by)
    present = [v for v in VARIANTS if (v,) + head in by]
    if "fused" not in present or BASELINE not in present:
        return []
    fused = by[("fused",) + head][0]["median"]
    out = [f"### Headline: full step, degree 22, {head[2]:,} float32 elements", "",
           f"Against {LABELS[BASELINE]}, the lean formulation a user writes (bench/cases.py); the other "
           "variants follow.", "",
           "| variant | median ms | its time over fused's |", "|---|---:|---:|"]
    for v in present:
        m = by[(v,) + head][0]["median"]
        out.append(f"| {LABELS[v]} | {fmt_ms(m)} | {'—' if v == 'fused' else f'{m / fused:.2f}×'} |")
    return out + [""]


def section_targets(by, memory, e2e):
    """The speed and memory goals the fused op is held to (CPU), each met or not."""
    head = headline_key(by)
    if not all((v,) + head in by for v in VARIANTS):
        return []
    ratio = {v: by[(v,) + head][0]["median"] / by[("fused",) + head][0]["median"] for v in VARIANTS}
    e2e_ratio = e2e["degree 22, fused"][0] / e2e["relu"][0]
    saved_x = memory["fused"][0][0] / (2 ** 20 * 4), memory["fused"][1][0] / (2 ** 20 * 4)
    checks = [(f"fused ≥ 2× torch.compile(lean) (full, d=22, {head[2]:,}; issue 18)", ratio["lean"] >= 2,
               f"{ratio['lean']:.2f}×"),
              ("fused ≥ 3× torch.compile(reference)", ratio["compiled"] >= 3, f"{ratio['compiled']:.1f}×"),
              ("fused ≥ 50× eager reference", ratio["reference"] >= 50, f"{ratio['reference']:.1f}×"),
              ("fused ≥ 50× power basis", ratio["power"] >= 50, f"{ratio['power']:.1f}×"),
              ("saved for backward: one x-sized tensor per layer at any degree",
               memory["fused"][0][1] == 1 and memory["fused"][1][1] == 1,
               f"{saved_x[0]:.2f}× x at d=22, {saved_x[1]:.2f}× x at d=2"),
              ("small-CNN step at degree 22 fused ≤ 1.3× the ReLU step", e2e_ratio <= 1.3, f"{e2e_ratio:.2f}×")]
    return (["### Targets", "", "| target | met | measured |", "|---|---|---|"]
            + [f"| {name} | {'yes' if ok else '**no**'} | {val} |" for name, ok, val in checks] + [""])


def section_all_cases(by):
    keys = sorted({k[1:] for k in by})
    out = ["### All cases", "",
           "fused: median ms ± half the interquartile range; other variants: median ms and, in brackets, "
           "their time over fused's. GB/s and GFLOP/s of fused come from the traffic and arithmetic "
           "models in bench/cases.py (minimal bytes: x, y, grad_y, grad_x once each; the kernels' "
           "polynomial arithmetic, `op_counts`). Each case's distance from the machine's limits: the "
           "roofline section below.", ""]
    for mode in ("forward", "backward", "full"):
        for dt in sorted({k[3] for k in keys}):
            out += [f"#### {mode}, {dt.replace('torch.', '')}", "",
                    "| degree | elements | fused ms | " + " | ".join(f"{LABELS[v]} ms (×)" for v in VARIANTS[1:])
                    + " | fused GB/s | fused GFLOP/s |",
                    "|---:|---:|---:|" + "---:|" * (len(VARIANTS) - 1) + "---:|---:|"]
            for (m, d, n, t) in keys:
                if m != mode or t != dt or ("fused", m, d, n, t) not in by:
                    continue
                fs, fe = by[("fused", m, d, n, t)]
                cells = []
                for v in VARIANTS[1:]:
                    if (v, m, d, n, t) in by:
                        st = by[(v, m, d, n, t)][0]
                        cells.append(f"{fmt_ms(st['median'])} ({st['median'] / fs['median']:.1f}×)")
                    else:
                        cells.append("—")
                out.append(f"| {d} | {n:,} | {fmt_ms(fs['median'])} ± {fmt_ms(fs['iqr'] / 2)} | " + " | ".join(cells)
                           + f" | {fe['bytes'] / fs['median'] / 1e9:.1f} | {fe['flops'] / fs['median'] / 1e9:.1f} |")
            out.append("")
    return out


def section_cuda_events(event_rows):
    if not event_rows:
        return []
    return ["### CUDA-event timing at degree 22 (median of 50, after warm-up)", "",
            "| elements | dtype | mode | fused ms | GB/s | % of copy bandwidth | torch.compile(lean) ms | its time "
            "over fused's | torch.compile(reference) ms | its time over fused's |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|", *event_rows, ""]


def section_memory(device, memory):
    peak_how = "`torch.cuda.max_memory_allocated`" if device == "cuda" else "peak RSS of a fresh process"
    out = ["### Memory", "",
           "Saved for backward by one layer with 1M float32 elements (4 MB): MB, the same in multiples of "
           "x's size, and the number of saved tensors at least as large as x (each counted once); and peak "
           f"memory above the inputs during one training step of a stack of 4 degree-22 layers on 4M "
           f"elements ({peak_how}).", "",
           "| variant | saved, degree 22: MB = × x (tensors) | saved, degree 2: MB = × x (tensors) "
           "| peak, 4-layer step: MB |",
           "|---|---:|---:|---:|"]
    x_bytes = 2 ** 20 * 4
    for v, (s22, s2, peak) in memory.items():
        peak_cell = "not measured (compilation memory would dominate)" if peak != peak else f"{peak / 2 ** 20:.0f}"
        out.append(f"| {v} | {s22[0] / 2 ** 20:.1f} = {s22[0] / x_bytes:.2f} ({s22[1]}) | "
                   f"{s2[0] / 2 ** 20:.1f} = {s2[0] / x_bytes:.2f} ({s2[1]}) | {peak_cell} |")
    return out


def section_end_to_end(e2e):
    out = ["", "### End to end: one training step of the small CNN", "",
           "Batch 128 of 1×28×28, 2 conv + 1 hidden linear layer with BatchNorm and 3 activations, CE + 1000 × "
           "boundary loss, backward, selective clipping, AdamW (`pnn_ext.models.SmallCNN`, 28×28×1 inputs; "
           "the activations' `impl` chooses fused or reference).", "",
           "| activation | median ms | 20th–80th pct ms | vs relu |", "|---|---:|---:|---:|"]
    relu = e2e["relu"][0]
    for name, (med, lo, hi) in e2e.items():
        out.append(f"| {name} | {fmt_ms(med)} | {fmt_ms(lo)}–{fmt_ms(hi)} | {med / relu:.2f}× |")
    return out + [""]


def build_section(device, args, benches, copy_gbs, memory, e2e, event_rows):
    """docs/benchmarks.md's section for one device, section by section."""
    by = index_suite(benches)
    out = section_header(device, args, copy_gbs) + section_headline(by)
    if device == "cpu":
        out += section_targets(by, memory, e2e)
    out += section_all_cases(by) + section_cuda_events(event_rows)
    out += section_memory(device, memory) + section_end_to_end(e2e)
    return "\n".join(out)


def write_section(marker, text):
    """Replace docs/benchmarks.md's section between <!-- BEGIN marker --> and <!-- END marker -->
    (appended when missing), leaving the others: each script writes only its own
    (report.py: CPU, GPU; layouts.py: LAYOUTS; ptxas_usage.py: PTXAS)."""
    begin, end = f"<!-- BEGIN {marker} -->", f"<!-- END {marker} -->"
    doc = open(RESULTS).read() if os.path.exists(RESULTS) else (
        "# Benchmark results\n\nWritten by the scripts of bench/; their docstrings and bench/cases.py "
        "say what each figure means.\n")
    if begin not in doc:
        doc = doc.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    pre, rest = doc.split(begin, 1)
    _, post = rest.split(end, 1)
    with open(RESULTS, "w") as f:
        f.write(pre + begin + "\n" + text.rstrip("\n") + "\n" + end + post)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", default="64K,1M,16M", help="comma-separated from 64K,1M,16M (default: all)")
    ap.add_argument("--degrees", default="2,4,8,16,22", help="comma-separated degrees (default: 2,4,8,16,22)")
    ap.add_argument("--suite-json", help="use this pytest-benchmark JSON instead of running the suite")
    args = ap.parse_args()
    device = args.device
    print(machine_line(device), flush=True)
    if args.suite_json:
        with open(args.suite_json) as f:
            benches = json.load(f)["benchmarks"]
    else:
        saved = os.path.join(HERE, f"results-{device}.json")
        benches = run_suite(device, args.sizes, args.degrees, saved)
    print("measuring copy bandwidth, memory and the end-to-end step", flush=True)
    copy_gbs = copy_bandwidth(device)
    memory = {}
    for v in VARIANTS:
        s22 = saved_bytes(Case(22, 2 ** 20, device=device), v)
        s2 = saved_bytes(Case(2, 2 ** 20, device=device), v)
        peak = stack_peak_memory(v, device) if v in ("fused", "reference", "power") else float("nan")
        memory[v] = (s22, s2, peak)
    e2e = end_to_end(device)
    event_rows = []
    if device == "cuda":
        for numel in (64 * 2 ** 20,):
            for dtype in (torch.float32, torch.bfloat16):
                case = Case(22, numel, dtype, device)
                for mode in ("forward", "backward"):
                    fs = timed(case.runner("fused", mode)[1], device, 50, case.runner("fused", mode)[0])[0]
                    ls = timed(case.runner("lean", mode)[1], device, 20, case.runner("lean", mode)[0])[0]
                    cs = timed(case.runner("compiled", mode)[1], device, 20, case.runner("compiled", mode)[0])[0]
                    gbs = case.bytes_moved(mode) / fs / 1e9
                    event_rows.append(f"| {numel:,} | {str(dtype)[6:]} | {mode} | {fs * 1e3:.3f} | {gbs:.0f} | "
                                      f"{100 * gbs / copy_gbs:.0f}% | {ls * 1e3:.3f} | {ls / fs:.2f}× | "
                                      f"{cs * 1e3:.3f} | {cs / fs:.2f}× |")
                del case
    text = build_section(device, args, benches, copy_gbs, memory, e2e, event_rows)
    write_section("GPU" if device == "cuda" else "CPU", text)
    if device == "cpu":
        import roofline  # bench/roofline.py (it imports this module's helpers: imported here, not at the top)
        print("measuring the roofline", flush=True)
        write_section("ROOFLINE", roofline.section(roofline.measure(), "python bench/report.py --device cpu"))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
