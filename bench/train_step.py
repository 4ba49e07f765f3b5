"""One training step of a whole network, ReLU against degree-22 polynomial activations,
eager and under ``torch.compile``, interleaved in one process, median of the repetitions.

The step is pnn-train's objective: ``cross_entropy(model(x), y) + 1000 * boundary_loss(model)``
(pnn_ext.train.loop), backward, an SGD step. Models:

* ``small-cnn``: ``pnn_ext.models.SmallCNN(1, 10, (28, 28))``, batch 128 of 1x28x28;
* ``resnet18``: torchvision's ``resnet18(num_classes=10)``, batch 32 of 3x32x32.

Variants per model: ``relu`` (the model as built), ``poly fused`` (``pnn_ext.convert(model,
degree=22)`` with ``impl="fused"``: the compiled op, opaque to inductor) and, compiled only, ``poly
decomposed`` (``impl="decomposed"``: :func:`pnn_ext.ops.decomposed`, plain operations inductor can
fuse with the activation's neighbours). Compiled means ``torch.compile`` of the forward and the loss
(AOTAutograd compiles the backward with it); the optimizer step stays eager.

    python bench/train_step.py [--models small-cnn,resnet18] [--reps 15] [--modes eager,compiled]
    python bench/train_step.py --profile [--models small-cnn]   # torch.profiler top entries

Prints the machine line, the median milliseconds and degree-22/ReLU ratios. Set the threads with
``--threads`` (default: torch's, i.e. all cores).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch
import torch.nn.functional as F

import pnn_ext
from pnn_ext.models import SmallCNN
from report import machine_line  # bench/: the machine, as the report names it

LAMBDA = 1000.0  # pnn-train's default --lam
MODELS = {
    "small-cnn": (lambda: SmallCNN(1, 10, (28, 28)), (128, 1, 28, 28)),
    "resnet18": (lambda: importlib.import_module("torchvision").models.resnet18(num_classes=10), (32, 3, 32, 32)),
}


def build(model_name: str, impl: str | None, device: str) -> torch.nn.Module:
    """The model with its ReLUs (impl None) or converted at degree 22 with ``impl``; same seed."""
    torch.manual_seed(0)
    model = MODELS[model_name][0]()
    if impl is not None:
        model = pnn_ext.convert(model, degree=22, impl=impl)
    return model.to(device).train()


def inputs(model_name: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape = MODELS[model_name][1]
    torch.manual_seed(1)
    return torch.randn(shape, device=device), torch.randint(0, 10, (shape[0],), device=device)


def make_step(model: torch.nn.Module, compiled: bool, x: torch.Tensor, target: torch.Tensor):
    """A closure running one step: forward + loss (compiled or not), backward, SGD step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def loss_fn(x, target):
        return F.cross_entropy(model(x), target) + LAMBDA * pnn_ext.boundary_loss(model)

    forward = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        opt.zero_grad(set_to_none=True)
        forward(x, target).backward()
        opt.step()
        if x.is_cuda:  # the time of the work, not of its launch
            torch.cuda.synchronize()
    return step


def variants(modes, decomposed: bool = True):
    """(label, impl, compiled) in the order they are timed."""
    out = []
    for mode in modes:
        compiled = mode == "compiled"
        out += [(f"relu {mode}", None, compiled), (f"poly fused {mode}", "fused", compiled)]
        if compiled and decomposed:
            out.append((f"poly decomposed {mode}", "decomposed", compiled))
    return out


def time_model(model_name: str, todo, reps: int, device: str) -> dict[str, float]:
    """Median seconds of one step of each of ``todo`` (see variants())."""
    x, target = inputs(model_name, device)
    steps = {}
    for label, impl, compiled in todo:
        t0 = time.perf_counter()
        steps[label] = make_step(build(model_name, impl, device), compiled, x, target)
        for _ in range(3):  # warm-up: compilation, allocator, first touch
            steps[label]()
        print(f"  {model_name} {label}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
    times = {label: [] for label in steps}
    for _ in range(reps):  # interleaved: a change in the machine's load falls on every variant
        for label, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(ts) for label, ts in times.items()}


def profile_model(model_name: str, todo, rows: int, device: str) -> None:
    """torch.profiler of a few steps of each variant: the top entries by self time on the device."""
    from torch.profiler import ProfilerActivity, profile

    x, target = inputs(model_name, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    for label, impl, compiled in todo:
        step = make_step(build(model_name, impl, device), compiled, x, target)
        for _ in range(3):
            step()
        with profile(activities=activities) as prof:
            for _ in range(5):
                step()
        print(f"\n== {model_name}, {label}: 5 steps, by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small-cnn,resnet18")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--skip-decomposed", action="store_true",
                    help="leave out the compiled decomposition (its inductor build takes minutes on CPU)")
    ap.add_argument("--profile", action="store_true", help="profile the variants instead of timing them")
    ap.add_argument("--rows", type=int, default=25, help="--profile: entries per table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models, modes = args.models.split(","), args.modes.split(",")
    for name in models:
        if name not in MODELS:
            raise SystemExit(f"--models: unknown model {name!r}; known: {', '.join(MODELS)}")
    for mode in modes:
        if mode not in ("eager", "compiled"):
            raise SystemExit(f"--modes: unknown mode {mode!r}; known: eager, compiled")
    todo = variants(modes, decomposed=not args.skip_decomposed)
    print(machine_line(args.device))
    for name in models:
        if name == "resnet18" and importlib.util.find_spec("torchvision") is None:
            print("resnet18: skipped, torchvision is not installed")
            continue
        if args.profile:
            profile_model(name, todo, args.rows, args.device)
            continue
        med = time_model(name, todo, args.reps, args.device)
        batch = MODELS[name][1]
        print(f"{name}, batch {batch[0]} of {'x'.join(map(str, batch[1:]))}, one step "
              f"(CE + {LAMBDA:g} * boundary loss, backward, SGD), median of {args.reps}:")
        for label, sec in med.items():
            print(f"  {label:27s} {1e3 * sec:8.1f} ms")
        for mode in modes:
            relu = med[f"relu {mode}"]
            ratios = ", ".join(f"{label.split(' ')[1]} {med[label] / relu:.2f}x" for label in med
                               if label.startswith("poly") and label.endswith(mode))
            print(f"  {mode}: degree 22 / ReLU = {ratios}")


if __name__ == "__main__":
    main()
