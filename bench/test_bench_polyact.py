"""pytest-benchmark suite: fused vs torch.compile of the lean formulation a user writes
(the primary baseline), torch.compile of the reference, the eager reference, the power basis.

    pytest bench/test_bench_polyact.py                              # CPU, every case (long: ~20 min)
    PNN_BENCH_SIZES=1M pytest bench/test_bench_polyact.py -k "22"   # a slice
    PNN_BENCH_SIZES=tiny PNN_BENCH_DEGREES=2,22 pytest bench --benchmark-disable   # CI smoke
    PNN_BENCH_DEVICE=cuda pytest bench/test_bench_polyact.py        # GPU (float32 and bfloat16)

Every variant's output is checked against the float64 reference before it is timed.
On CUDA each timed call ends with torch.cuda.synchronize().
"""
import os

import pytest
import torch

from cases import LAYOUTS, MODES, VARIANTS, Case, degrees_from_env, sizes_from_env

DEVICE = os.environ.get("PNN_BENCH_DEVICE", "cpu")
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])
SIZES = sizes_from_env()
SLOW = {"reference", "power"}

if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("PNN_BENCH_DEVICE=cuda without a CUDA device", allow_module_level=True)

_cases: dict = {}
_checked: set = set()


def get_case(degree, size, dtype, layout="dense"):
    key = (degree, size, dtype, layout)
    if key not in _cases:
        _cases.clear()  # keep one case (up to 16M elements and its grads) alive at a time
        _cases[key] = Case(degree, SIZES[size], dtype, DEVICE, layout=layout)
    return _cases[key]


def rounds_for(variant, numel):
    if numel >= 2 ** 24:
        return 3 if variant in SLOW else 10
    if numel >= 2 ** 20:
        return 5 if variant in SLOW else 20
    return 20 if variant in SLOW else 100


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("degree", degrees_from_env())
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_poly_act(benchmark, variant, mode, degree, size, dtype):
    if variant == "power" and dtype != torch.float32:
        pytest.skip("the power basis overflows in bfloat16's precision budget at high degree")
    case = get_case(degree, size, dtype)
    if (variant, degree, size, dtype) not in _checked:
        case.check_agreement(variant)  # also the compile warm-up of "lean" and "compiled"
        _checked.add((variant, degree, size, dtype))
    setup, target = case.runner(variant, mode)
    if DEVICE == "cuda":
        inner = target

        def target(*args):
            out = inner(*args)
            torch.cuda.synchronize()
            return out

    benchmark.group = f"{mode} d={degree} {size} {str(dtype).replace('torch.', '')}"
    benchmark.extra_info.update(variant=variant, mode=mode, degree=degree, numel=case.numel,
                                dtype=str(dtype), device=DEVICE, bytes=case.bytes_moved(mode),
                                flops=case.flops(mode))
    benchmark.pedantic(target, setup=lambda: (setup(), {}), rounds=rounds_for(variant, case.numel),
                       warmup_rounds=1)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", ["fused", "lean", "compiled"])
def test_layout(benchmark, variant, layout, size):
    """The full step (forward + backward with the boundary term), degree 22, float32, for
    x and grad_y in each memory layout (cases.LAYOUTS); bench/layouts.py reports it."""
    if variant != "fused" and layout != "dense" and benchmark.disabled:
        # Inductor compiles a new kernel per layout, up to minutes each on 2 cores (the
        # transposed ones): timed runs only, not CI's smoke run.
        pytest.skip("torch.compile per layout: timed runs only")
    degree = max(degrees_from_env())
    case = get_case(degree, size, torch.float32, layout)
    if (variant, degree, size, layout) not in _checked:
        case.check_agreement(variant)
        _checked.add((variant, degree, size, layout))
    setup, target = case.runner(variant, "full")
    benchmark.group = f"layout {layout} d={degree} {size}"
    benchmark.extra_info.update(variant=variant, mode="full", layout=layout, degree=degree, numel=case.numel,
                                device=DEVICE)
    benchmark.pedantic(target, setup=lambda: (setup(), {}), rounds=rounds_for(variant, case.numel),
                       warmup_rounds=1)
