"""One training step of a whole network, ReLU against degree-22 polynomial activations,
eager and under ``torch.compile``, interleaved in one process, median of the repetitions.

The step is pnn-train's objective: ``cross_entropy(model(x), y) + 1000 * boundary_loss(model)``
(pnn_ext.train.loop), backward, an SGD step. Models:

* ``small-cnn``: ``pnn_ext.models.SmallCNN(1, 10, (28, 28))``, batch 128 of 1x28x28;
* ``resnet18``: torchvision's ``resnet18(num_classes=10)``, batch 32 of 3x32x32.

Variants per model: ``relu`` (the model as built), ``poly`` (``pnn_ext.convert(model, degree=22)``
with ``impl="fused"``: the compiled op everywhere) and, compiled only, ``poly auto`` (``impl="auto"``,
which under torch.compile traces the lean decomposition inductor can fuse with its neighbours,
see :func:`pnn_ext.ops.poly_act`). Compiled means ``torch.compile`` of the forward and the loss
(the backward is compiled with it by AOTAutograd); the optimizer step stays eager.

    python bench/train_step.py [--models small-cnn,resnet18] [--reps 15] [--modes eager,compiled]
    python bench/train_step.py --profile [--models small-cnn]   # torch.profiler top entries

Prints the machine line, the median milliseconds and degree-22/ReLU ratios. Set the threads with
``--threads`` (default: torch's, i.e. all cores).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

import pnn_ext
from pnn_ext.models import SmallCNN
from report import machine_line  # bench/: the machine, as the report names it

LAMBDA = 1000.0  # pnn-train's default --lam
MODELS = {
    "small-cnn": (lambda: SmallCNN(1, 10, (28, 28)), (128, 1, 28, 28)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (32, 3, 32, 32)),
}


def build(model_name: str, impl: str | None) -> torch.nn.Module:
    """The model with its ReLUs (impl None) or converted at degree 22 with ``impl``; same seed."""
    torch.manual_seed(0)
    model = MODELS[model_name][0]()
    if impl is not None:
        model = pnn_ext.convert(model, degree=22, impl=impl)
    return model.train()


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
    return step


def variants(modes):
    """(label, impl, compiled) in the order they are timed."""
    out = []
    for mode in modes:
        compiled = mode == "compiled"
        out += [(f"relu {mode}", None, compiled), (f"poly fused {mode}", "fused", compiled)]
        if compiled:
            out.append((f"poly auto {mode}", "auto", compiled))
    return out


def time_model(model_name: str, modes, reps: int) -> dict[str, float]:
    shape = MODELS[model_name][1]
    torch.manual_seed(1)
    x, target = torch.randn(shape), torch.randint(0, 10, (shape[0],))
    steps = {}
    for label, impl, compiled in variants(modes):
        t0 = time.perf_counter()
        steps[label] = make_step(build(model_name, impl), compiled, x, target)
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


def profile_model(model_name: str, modes, rows: int) -> None:
    """torch.profiler of a few steps of each variant: the top entries by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    shape = MODELS[model_name][1]
    torch.manual_seed(1)
    x, target = torch.randn(shape), torch.randint(0, 10, (shape[0],))
    for label, impl, compiled in variants(modes):
        step = make_step(build(model_name, impl), compiled, x, target)
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
        print(f"\n== {model_name}, {label}: 5 steps, by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small-cnn,resnet18")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
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
    print(machine_line("cpu"))
    for name in models:
        if args.profile:
            profile_model(name, modes, args.rows)
            continue
        med = time_model(name, modes, args.reps)
        batch = MODELS[name][1]
        print(f"{name}, batch {batch[0]} of {'x'.join(map(str, batch[1:]))}, one step "
              f"(CE + {LAMBDA:g} * boundary loss, backward, SGD), median of {args.reps}:")
        for label, sec in med.items():
            print(f"  {label:22s} {1e3 * sec:8.1f} ms")
        for mode in modes:
            relu = med[f"relu {mode}"]
            ratios = ", ".join(f"{label.split(' ')[1]} {med[label] / relu:.2f}x" for label in med
                               if label.startswith("poly") and label.endswith(mode))
            print(f"  {mode}: degree 22 / ReLU = {ratios}")


if __name__ == "__main__":
    main()
