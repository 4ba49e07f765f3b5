"""The CUDA kernels, run on the CPU: csrc/cuda/polyact_kernels.cuh compiled unchanged by the
host compiler under the CUDA emulation of tests/cuda_emulation, with AddressSanitizer and
UndefinedBehaviorSanitizer, and launched through the same plan/launch code as on a GPU.

Every case below runs in one process (tests/cuda_emulation/run_kernels.cpp): a sanitizer
report, an over-limit launch or a deadlock fails the whole module; then each case's
outputs are checked against the float64 reference within the rounding bounds of
bench/error_bounds.py, and its launch plan against what the case was built to exercise
(grid of 1, 2 or 3 blocks, n below one block, n not a multiple of the vector width,
misaligned pointers on the scalar path, every coefficient-gradient slice width,
broadcast grad_y, all four dtypes, both boundary forms).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import error_bounds
from cuda_emulation import build as emulation_build
from pnn_ext import reference
from testing import random_coeffs

HERE = os.path.dirname(__file__)
DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}
THREADS = 256  # kThreads of the kernels
# The kernels' compile-time choices (polyact_launch.h / polyact_kernels.cuh), restated so
# that the plan each case gets is checked, not just trusted.
ALIGNED_VEC = {"f32": 4, "f64": 2, "f16": 4, "bf16": 4}
UNALIGNED_VEC, SLICE_SMALL, SLICE_LARGE = 4, 9, 25


@dataclass(frozen=True)
class Case:
    name: str
    op: str          # fwd | bwd
    dtype: str
    n: int
    degree: int
    basis: str = "chebyshev"
    bound: float = 20.0
    alpha: float = 0.75
    x_offset: int = 0
    out_offset: int = 0
    grad_y: str = "dense"  # dense | broadcast
    coeffs_grad: int = 0
    resident: int = 3
    special: bool = False  # NaN, inf and huge finite inputs mixed in
    form: str = "exp"      # boundary form: exp | quadratic

    @property
    def spread(self):
        """Inputs span [-spread*B, spread*B]: past B (and alpha*B) up to degree 24; within B
        above, where |t|^d past 1 would overflow float32 (T_128(1.3) ~ 1e41)."""
        return 1.3 if self.degree <= 24 else 1.0

    def line(self):
        return (f"{self.name} {self.op} {self.dtype} {self.n} {self.degree} {self.basis} {self.bound!r} "
                f"{self.alpha!r} {self.x_offset} {self.out_offset} {self.grad_y} {self.coeffs_grad} {self.resident} "
                f"{self.form}")


def make_cases() -> list[Case]:
    cases = []

    def add(**kw):
        cases.append(Case(name=f"c{len(cases)}", **kw))

    for dtype in DTYPES:
        vec = ALIGNED_VEC[dtype]
        for op in ("fwd", "bwd"):
            # Grids of 1, 2 and 3 blocks; n below one block; n not a multiple of the vector width.
            for n, resident in ((1, 3), (100, 3), (THREADS * vec + 3, 2), (3 * THREADS * vec + 5, 3),
                                (5 * THREADS * vec + 1, 1), (9 * THREADS * vec - 1, 3)):
                for basis in ("chebyshev", "monomial"):
                    add(op=op, dtype=dtype, n=n, degree=8 if basis == "chebyshev" else 5, basis=basis,
                        resident=resident)
            # Misaligned x, output or both: the 4-scalar path.
            for x_off, out_off in ((1, 0), (0, 1), (1, 1)):
                add(op=op, dtype=dtype, n=2 * THREADS * 4 + 7, degree=22, x_offset=x_off, out_offset=out_off)
        add(op="bwd", dtype=dtype, n=3 * THREADS * vec + 2, degree=22, grad_y="broadcast")
        add(op="bwd", dtype=dtype, n=777, degree=3, grad_y="broadcast", x_offset=1)
        # Every coefficient-gradient bucket: one row of 9 (d <= 8), rows of 25 (1, 2, 3 and 6 rows).
        for degree in (1, 2, 8, 9, 22, 24, 25, 49, 64, 128):
            add(op="bwd", dtype=dtype, n=2 * THREADS + 13, degree=degree, coeffs_grad=1,
                basis="chebyshev" if degree % 2 == 0 else "monomial")
        add(op="bwd", dtype=dtype, n=5, degree=22, coeffs_grad=1, grad_y="broadcast", resident=1)
    for op in ("fwd", "bwd"):
        for dtype in ("f32", "f64"):
            add(op=op, dtype=dtype, n=3 * THREADS * 4 + 9, degree=22, special=True)
    # The quadratic boundary form (appended, so the cases above keep their names and inputs):
    # a multi-block grid, the scalar path, and the special inputs.
    for dtype in DTYPES:
        for op in ("fwd", "bwd"):
            add(op=op, dtype=dtype, n=3 * THREADS * ALIGNED_VEC[dtype] + 5, degree=8, form="quadratic")
            add(op=op, dtype=dtype, n=2 * THREADS * 4 + 7, degree=22, x_offset=1, form="quadratic")
    for op in ("fwd", "bwd"):
        for dtype in ("f32", "f64"):
            add(op=op, dtype=dtype, n=3 * THREADS * 4 + 9, degree=22, special=True, form="quadratic")
    return cases


CASES = make_cases()


def case_inputs(case: Case):
    dtype = DTYPES[case.dtype]
    seed = int(case.name[1:])
    c = random_coeffs(case.degree, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = ((torch.rand(case.n, generator=g, dtype=torch.float64) * 2 - 1) * case.spread * case.bound).to(dtype)
    if case.special:
        x[:8] = torch.tensor([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, 1e-30, -3.0], dtype=torch.float64)
    gy = torch.randn(1 if case.grad_y == "broadcast" else case.n, generator=g, dtype=torch.float64).to(dtype)
    if case.special:
        gy[:8] = 0.5
    gs = torch.tensor([7.0, 0.0, 0.0], dtype=reference.compute_dtype(dtype))
    return x, c, gy, gs


def raw(t: torch.Tensor) -> bytes:
    # float16 / bfloat16 as their 16-bit patterns (numpy has no bfloat16).
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.contiguous().view(torch.int16).numpy().tobytes()
    return t.contiguous().numpy().tobytes()


def from_raw(path: str, dtype: torch.dtype) -> torch.Tensor:
    data = open(path, "rb").read()
    if dtype in (torch.float16, torch.bfloat16):
        return torch.from_numpy(np.frombuffer(data, dtype=np.int16).copy()).view(dtype)
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).copy())


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory):
    binary = emulation_build.build([os.path.join(HERE, "cuda_emulation", "run_kernels.cpp")], "run_kernels",
                                   include_dirs=[os.path.join(os.path.dirname(torch.__file__), "include")])
    work = tmp_path_factory.mktemp("emulated")
    with open(work / "cases.txt", "w") as f:
        for case in CASES:
            x, c, gy, gs = case_inputs(case)
            for suffix, t in (("x", x), ("c", c), ("gy", gy), ("gs", gs)):
                (work / f"{case.name}.{suffix}").write_bytes(raw(t))
            f.write(case.line() + "\n")
    proc = emulation_build.run(binary, [str(work)], timeout=600)
    assert proc.returncode == 0, (f"emulated kernels failed (rc {proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    assert f"ran {len(CASES)} cases" in proc.stdout
    return work


def plan_of(work, case):
    vec, aligned, slice_, blocks, slices, shared, scratch = map(int, open(work / f"{case.name}.plan").read().split())
    return dict(vec=vec, aligned=bool(aligned), slice=slice_, blocks=blocks, slices=slices)


@pytest.mark.parametrize("case", CASES, ids=[c.name + "-" + c.op + "-" + c.dtype for c in CASES])
def test_emulated_kernel_matches_reference(emulated_run, case):
    work = emulated_run
    dtype = DTYPES[case.dtype]
    x, c, gy, gs = case_inputs(case)
    plan = plan_of(work, case)

    # The plan exercises what the case was built for.
    misaligned = case.x_offset or case.out_offset
    if case.op == "bwd" and case.coeffs_grad:
        assert plan["vec"] == 1 and plan["slice"] == (SLICE_SMALL if case.degree + 1 <= SLICE_SMALL else SLICE_LARGE)
        assert plan["slices"] == math.ceil((case.degree + 1) / plan["slice"])
    else:
        assert plan["slice"] == 0 and plan["slices"] == 1
        assert plan["aligned"] == (not misaligned)
        assert plan["vec"] == (UNALIGNED_VEC if misaligned else ALIGNED_VEC[case.dtype])
    needed = max(1, math.ceil((case.n // plan["vec"]) / THREADS))
    assert plan["blocks"] == min(needed, case.resident)

    xr = x.double().requires_grad_()
    cr = c.double().requires_grad_()
    yr, sr = reference.poly_act(xr, cr, case.bound, case.alpha, case.basis, case.form)
    if case.op == "fwd":
        y = from_raw(str(work / f"{case.name}.y"), dtype).double()
        stats = from_raw(str(work / f"{case.name}.stats"), reference.compute_dtype(dtype)).double()
        check_values(case, y, yr.detach(), x,
                     error_bounds.value_bound(x, c, case.bound, case.basis, dtype))
        error_bounds.check_stats(f"{case.name} stats", stats, x, case.bound, case.alpha, case.form)
        return

    grad_y = gy.double().expand(case.n) if case.grad_y == "broadcast" else gy.double()
    inputs = (xr, cr) if case.coeffs_grad else (xr,)
    grads = torch.autograd.grad((yr, sr[0]), inputs, (grad_y, gs[0].double()))
    gx = from_raw(str(work / f"{case.name}.gx"), dtype).double()
    check_values(case, gx, grads[0], x, error_bounds.grad_x_bound(x, grad_y, float(gs[0]), c, case.bound, case.alpha,
                                                                  case.basis, case.form, dtype))
    if case.coeffs_grad:
        gc = from_raw(str(work / f"{case.name}.gc"), reference.compute_dtype(dtype)).double()
        # Judged per k against its rounding bound (the sums cancel heavily: bound ~ their mass).
        tol = error_bounds.coeff_grad_bound(x, grad_y, c, case.bound, case.basis, dtype)
        error_bounds.check(f"{case.name} grad_c", gc, grads[1], tol)


def check_values(case, out, ref, x, tol):
    """out (the kernel's, in its dtype) against the float64 reference: NaN exactly where x is
    NaN; where the reference rounded to the output dtype is finite, within the tolerance;
    elsewhere (overflow of the dtype, or of p for huge |x|, where the reference's own
    autograd may give NaN) +-inf, never NaN."""
    assert torch.equal(out.isnan(), x.double().isnan())
    fin = torch.isfinite(ref.to(DTYPES[case.dtype]).double()) & ~x.double().isnan()
    tol = torch.from_numpy(np.broadcast_to(tol, ref.shape).copy())
    assert ((out[fin] - ref[fin]).abs() <= tol[fin]).all(), float(((out[fin] - ref[fin]).abs() / tol[fin]).max())
    over = ~fin & ~x.double().isnan()
    assert out[over].isinf().all()
    ref_inf = over & ref.isinf()
    assert torch.equal(out[ref_inf], ref[ref_inf])  # the sign of the overflow too
