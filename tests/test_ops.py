"""Fused op against float64 numpy and closed forms, within rounding bounds: values, stats, gradients, layouts."""
import math

import numpy as np
import pytest
import torch

import error_bounds
import pnn_ext
from pnn_ext import reference
from testing import BASES, DEGREES, DEVICES, FORMS, SIZES, random_coeffs, random_input, reference64

B, ALPHA = 20.0, 0.75
# The compiled op: without the build these tests fail (loudly, by design; the test command
# sets PNN_EXT_REQUIRE_EXTENSION=1, so a missing build stops at import instead).
op = torch.ops.pnn_ext.poly_act


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", DEGREES)
def test_forward_within_rounding_bound_of_numpy(device, basis, degree, form):
    c = random_coeffs(degree, device=device, seed=degree)
    x = random_input((3, 1000, 7), B, device=device, seed=degree)
    y, stats = op(x, c, B, ALPHA, basis, form)
    assert y.dtype == x.dtype and y.shape == x.shape
    error_bounds.check_forward(f"y at degree {degree}", y, x, c, B, basis)
    error_bounds.check_stats("stats", stats, x, B, ALPHA, form)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES)
def test_awkward_sizes(device, size):
    c = random_coeffs(8, dtype=torch.float64, device=device)
    x = random_input((size,), B, dtype=torch.float64, device=device, seed=size)
    for dtype in (torch.float64, torch.float32):   # both forms over chunk and vector boundaries, in both widths
        xd = x.to(dtype)
        cd = c.to(reference.compute_dtype(dtype))
        for form in FORMS:
            y, stats = op(xd, cd, B, ALPHA, "chebyshev", form)
            error_bounds.check_forward(f"y, {size} elements", y, xd, cd, B, "chebyshev")
            error_bounds.check_stats(f"stats, {size} elements", stats, xd, B, ALPHA, form)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_dim_and_empty(device):
    c = random_coeffs(4, device=device)
    x = torch.tensor(25.0, device=device)
    y, stats = op(x, c, B, ALPHA, "chebyshev")
    assert y.shape == ()
    error_bounds.check_forward("0-d y", y, x, c, B, "chebyshev")
    error_bounds.check_stats("0-d stats", stats, x, B, ALPHA, "exp")
    y, stats = op(torch.empty(0, 5, device=device), c, B, ALPHA, "chebyshev")
    assert y.shape == (0, 5) and stats.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last", "sliced_channels_last", "expanded_grad",
                                    "grad_transposed", "grad_sliced", "unaligned"])
def test_non_contiguous(device, layout, form):
    c = random_coeffs(22, device=device)
    base = random_input((4, 6, 10, 12), B, device=device, seed=1)
    x = {"transposed": base.transpose(1, 3), "sliced": base[:, ::2, 1::3, ::5],
         "channels_last": base.contiguous(memory_format=torch.channels_last),
         "sliced_channels_last": base.contiguous(memory_format=torch.channels_last)[:, :, ::2],
         "unaligned": base.flatten()[1:]}.get(layout, base)
    x = x.requires_grad_()
    y, stats = pnn_ext.poly_act(x, c, B, ALPHA, "chebyshev", boundary_form=form)
    # y keeps x's memory format, dense or not, as empty_like(x) (and the fake kernel) does.
    assert y.stride() == torch.empty_like(x).stride()
    if "channels_last" in layout:
        assert y.is_contiguous(memory_format=torch.channels_last)
    grad = {"expanded_grad": lambda: torch.ones((), device=device).expand_as(x),
            "grad_transposed": lambda: torch.randn(12, 10, 6, 4, device=device).permute(3, 2, 1, 0),
            "grad_sliced": lambda: torch.randn(4, 6, 10, 24, device=device)[..., ::2]}.get(
                layout, lambda: torch.randn_like(x))()
    assert grad.shape == x.shape
    gx, = torch.autograd.grad((y, stats[0]), x, (grad, torch.tensor(3.0, device=device)))
    assert gx.stride() == torch.empty_like(x).stride()
    error_bounds.check_forward(f"y of {layout}", y, x, c, B, "chebyshev")
    error_bounds.check_grad_x(f"grad_x of {layout}", gx, x, grad, 3.0, c, B, ALPHA, "chebyshev", form)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", [1, 2, 8, 22, 64])
def test_gradients_within_rounding_bound(device, basis, degree, form):
    """grad_x's polynomial part (grad_y p'/B) and boundary part (g_L sign(x) f'(e)/N), each
    alone and together, against their float64 closed forms; the coefficient gradients
    against central differences of numpy's float64 evaluation (exact: L is linear in c)."""
    c = random_coeffs(degree, device=device, seed=3).requires_grad_()
    x = random_input((5000,), B, device=device, seed=4).requires_grad_()
    gy = torch.randn(5000, generator=torch.Generator().manual_seed(5)).to(device)
    zero = torch.zeros((), device=device)
    y, stats = pnn_ext.poly_act(x, c, B, ALPHA, basis, boundary_form=form)
    for name, g, g_l in (("polynomial part", gy, 0.0), ("boundary part", torch.zeros_like(gy), 7.0),
                         ("both parts", gy, 7.0)):
        gx, gc = torch.autograd.grad((y, stats[0]), (x, c), (g, zero + g_l), retain_graph=True)
        error_bounds.check_grad_x(f"grad_x {name}, degree {degree}", gx, x.detach(), g, g_l, c.detach(), B, ALPHA,
                                  basis, form)
    x64, gy64 = x.detach().double().cpu().numpy(), gy.double().cpu().numpy()
    c64 = c.detach().double().cpu().numpy()

    def loss64(coeffs):
        return float((gy64 * error_bounds.poly_value64(x64, coeffs, B, basis)).sum())

    unit = np.eye(degree + 1)
    fd = np.array([(loss64(c64 + unit[k]) - loss64(c64 - unit[k])) / 2 for k in range(degree + 1)])
    tol = error_bounds.coeff_grad_bound(x64, gy64, c64, B, basis, torch.float32)
    # Plus the differences' own float64 rounding (sums of 5000 terms of size |g_j p(t_j)|).
    p64 = error_bounds.poly_value64(x64, c64, B, basis)
    tol = tol + 4 * np.finfo(np.float64).eps * x64.size * float(np.abs(gy64 * p64).sum())
    error_bounds.check(f"grad_c at degree {degree}", gc, fd, tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", BASES)
def test_gradcheck_float64(device, basis, form):
    c = random_coeffs(6, dtype=torch.float64, device=device).requires_grad_()

    def f(x, c):
        y, stats = pnn_ext.poly_act(x, c, B, ALPHA, basis, boundary_form=form)
        return y, stats[0]

    # Points inside and past alpha*B = 15 (boundary gradient exp(e) up to e^9, or 2e).
    x = torch.tensor([-16.0, -3.0, 0.5, 9.0, 15.5, 19.0, 24.0], dtype=torch.float64,
                     device=device).requires_grad_()
    assert torch.autograd.gradcheck(f, (x, c), eps=1e-6, atol=1e-6, rtol=1e-5)
    if form == "quadratic":
        return
    # Past the exponent cap (e > 30): the linear continuation, slope e^30.
    x = torch.tensor([-50.0, 47.0], dtype=torch.float64, device=device).requires_grad_()
    assert torch.autograd.gradcheck(f, (x, c), eps=1e-3, atol=1e-3, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_within_2x_of_torch(device, dtype):
    """Fused half/bf16 vs float64, at most ~2x as far as PyTorch's own low-precision
    evaluation (the reference run in that dtype's computation) is."""
    fit = pnn_ext.fit("relu", 8, 35.0)
    c = torch.tensor(fit.coeffs, dtype=torch.float32, device=device)
    x = random_input((20000,), 35.0, dtype=dtype, device=device, seed=5, spread=1.0)
    y, _ = op(x, c, 35.0, 0.5, "chebyshev")
    exact, _ = reference64(x, c, 35.0, 0.5, "chebyshev")
    # PyTorch's own: evaluate the polynomial in the low-precision dtype itself.
    torch_low = reference.poly_eval(x.cpu() * (1 / 35.0), c.cpu().to(dtype), "chebyshev")
    err_fused = (y.double().cpu() - exact).abs().max()
    err_torch = (torch_low.double() - exact).abs().max()
    assert err_fused <= 2 * err_torch
    # The boundary term of either form, from the same half/bf16 inputs (float32 lanes, float64 sums).
    for form in FORMS:
        xs = x * 1.5  # some inputs past alpha*B
        _, stats = op(xs, c, 35.0, 0.5, "chebyshev", form)
        assert stats[0] > 0
        error_bounds.check_stats(f"{dtype} stats", stats, xs, 35.0, 0.5, form)


@pytest.mark.parametrize("device", DEVICES)
def test_relu_fit_degree22_float32_accuracy(device):
    """float32 evaluation of a degree-22 ReLU fit on [-B, B]: max|error| / max|y| against
    float64 is the figure docs/numerics.md reports (CPU: 1.8e-7 Chebyshev, 6.3e-3 monomial,
    checked to the digits stated); every element is within its rounding bound."""
    bound = 47.0
    x = torch.linspace(-bound, bound, 100_001, device=device)
    errors = {}
    for basis in BASES:
        fit = pnn_ext.fit("relu", 22, bound, basis=basis)
        c = torch.tensor(fit.coeffs, dtype=torch.float32, device=device)
        y, _ = op(x, c, bound, 0.5, basis)
        error_bounds.check_forward(f"ReLU fit, {basis}", y, x, c, bound, basis)
        yr, _ = reference64(x, c, bound, 0.5, basis)
        errors[basis] = float((y.double().cpu() - yr).abs().max() / yr.abs().max())
    # The CPU figures to the stated digits; CUDA's fused multiply-adds round differently.
    margin = 1.0 if device == "cpu" else 2.0
    assert errors["chebyshev"] < 1.85e-7 * margin
    assert errors["monomial"] < 6.35e-3 * margin


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("basis", BASES)
def test_nan_inf_propagate_and_huge_finite_never_nan(device, basis, form):
    c = random_coeffs(22, device=device)
    x = torch.tensor([0.0, math.nan, math.inf, -math.inf, 1e30, -1e30, 3e38, 10.0], device=device)
    y, stats = op(x, c, B, ALPHA, basis, form)
    assert torch.isnan(y[1]) and not torch.isnan(y[[0, 2, 3, 4, 5, 6, 7]]).any()
    assert torch.isinf(y[[2, 3, 4, 5, 6]]).all()
    assert math.isnan(stats[0]) and math.isnan(stats[1])
    # Without the NaN: L is +inf for infinite inputs, never NaN for finite ones; it is
    # summed in float64 and saturates to +inf in float32 stats only past |x| ~ 3e25
    # (quadratic form: past |x| ~ 1e19, where e^2 passes float32's range).
    y, stats = op(x[[0, 4, 5, 6, 7]], c, B, ALPHA, basis, form)
    assert not torch.isnan(stats).any() and not torch.isnan(y).any()
    huge = 1e20 if form == "exp" else 1e18
    y, stats = op(torch.tensor([huge, -huge, 3.0], device=device), c, B, ALPHA, basis, form)
    assert torch.isfinite(stats).all()
    y, stats = op(x[[2, 7]], c, B, ALPHA, basis, form)
    assert stats[0] == math.inf
    # Backward of huge finite inputs: no NaN (zero incoming gradient stays zero).
    xg = x[[0, 4, 5, 6, 7]].clone().requires_grad_()
    y, stats = pnn_ext.poly_act(xg, c, B, ALPHA, basis, boundary_form=form)
    g, = torch.autograd.grad((y, stats[0]), xg, (torch.zeros_like(y), torch.tensor(1.0, device=device)))
    assert not torch.isnan(g).any()
    # Infinite inputs with a non-zero incoming gradient: +-inf, never inf - inf = NaN.
    xi = x[[2, 3, 7]].clone().requires_grad_()
    y, stats = pnn_ext.poly_act(xi, c, B, ALPHA, basis, boundary_form=form)
    g, = torch.autograd.grad((y, stats[0]), xi, (torch.ones_like(y), torch.tensor(1.0, device=device)))
    assert not torch.isnan(g).any()


@pytest.mark.parametrize("device", DEVICES)
def test_cpu_results_bit_identical_across_runs_and_threads(device):
    c = random_coeffs(22, device=device).requires_grad_()
    x = random_input((300_001,), B, device=device, seed=9).requires_grad_()
    gy = torch.randn_like(x)
    results = []
    threads = torch.get_num_threads()
    for n in ([1, threads, 1] if device == "cpu" else [threads, threads]):
        torch.set_num_threads(n)
        y, stats = pnn_ext.poly_act(x, c, B, ALPHA, "chebyshev")
        gx, gc = torch.autograd.grad((y, stats[0]), (x, c), (gy, torch.tensor(2.0, device=device)))
        results.append((y, stats, gx, gc))
    torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_every_cpu_build_agrees(capability, tmp_path):
    """Run each instruction-set build in a subprocess (the choice is made once per process)."""
    import subprocess
    import sys

    script = (
        "import torch, pnn_ext\n"
        "import error_bounds\n"
        "c = torch.randn(23, generator=torch.Generator().manual_seed(0)) / torch.arange(1, 24)\n"
        "x = (torch.rand(10_007, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 25\n"
        "x = x.requires_grad_()\n"
        "for form in ('exp', 'quadratic'):\n"
        "    y, s = pnn_ext.poly_act(x, c, 20.0, 0.75, 'chebyshev', boundary_form=form)\n"
        "    g, = torch.autograd.grad((y, s[0]), x, (torch.ones_like(y), torch.tensor(1.0)))\n"
        "    error_bounds.check_forward('forward', y, x.detach(), c, 20.0, 'chebyshev')\n"
        "    error_bounds.check_grad_x('backward', g, x.detach(), torch.ones_like(y), 1.0, c, 20.0, 0.75,\n"
        "                              'chebyshev', form)\n"
        "    want = error_bounds.boundary_closed_form(x.detach(), 20.0, 0.75, form)\n"
        "    tol = error_bounds.boundary_value_bound(x.detach(), 20.0, 0.75, form, torch.float32) + 2 ** -24 * want\n"
        "    assert abs(float(s[0]) - want) <= tol, 'boundary term'\n"
        "print(pnn_ext.cpu_capability())\n")
    import os
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    env = dict(os.environ, PNN_EXT_CPU_CAPABILITY=capability,
               PYTHONPATH=os.pathsep.join(filter(None, [bench, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # The build in use never exceeds the processor's.
    assert out.stdout.strip() in {"default", "avx2", "avx512"}
    if capability == "default":
        assert out.stdout.strip() == "default"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("degree", [2, 22, 64])
def test_only_x_is_saved_for_backward(device, degree):
    """Whatever the degree, autograd keeps one tensor of x's size (x itself) and the d+1 coefficients."""
    c = random_coeffs(degree, device=device).requires_grad_()
    x = random_input((64, 129), B, device=device).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, stats = pnn_ext.poly_act(x, c, B, ALPHA, "chebyshev")
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()
    assert sum(t.numel() for t in saved) == x.numel() + degree + 1


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_64bit_indexing(device):
    """More than 2^31 elements (float16: 4 GiB in, 4 GiB out)."""
    n = 2 ** 31 + 77
    x = torch.full((n,), 30.0, dtype=torch.float16, device=device)
    x[-1] = -25.0
    c = torch.tensor([0.5, 2.0], device=device)  # p(t) = 0.5 + 2 t
    y, stats = op(x, c, B, ALPHA, "monomial")
    assert float(y[-1]) == pytest.approx(0.5 + 2 * (-25.0 / B), rel=1e-3)
    assert float(y[n // 2]) == pytest.approx(0.5 + 2 * (30.0 / B), rel=1e-3)
    assert float(stats[1]) == 30.0 and float(stats[2]) == pytest.approx(1.0)


def test_compile_fullgraph_on_meta_tensors():
    """Tracing never asks the dispatcher which kernels exist (that ended fullgraph tracing
    with "Unsupported torch.* op returned non-Tensor"); the CUDA choice is made at import.
    On meta tensors the op's fake kernel serves, whatever the build."""
    x = torch.randn(4, 5, 6, device="meta")
    c = torch.randn(9, device="meta")
    f = torch.compile(lambda x, c: pnn_ext.poly_act(x, c, B, ALPHA), fullgraph=True, backend="aot_eager")
    y, stats = f(x, c)
    assert y.device.type == "meta" and y.shape == x.shape and stats.shape == (3,)
    x4 = torch.empty(2, 3, 4, 5, device="meta").contiguous(memory_format=torch.channels_last)
    y4, _ = f(x4, c)
    assert y4.is_contiguous(memory_format=torch.channels_last)


def test_impl_switch():
    """Both implementations within the rounding bound of numpy's float64 evaluation."""
    c = random_coeffs(8)
    x = random_input((1000,), B, seed=2)
    for impl in ("fused", "reference"):
        y, _ = pnn_ext.poly_act(x, c, B, ALPHA, impl=impl)
        error_bounds.check_forward(impl, y, x, c, B, "chebyshev")
    with pytest.raises(ValueError, match="impl must be one of"):
        pnn_ext.poly_act(x, c, B, ALPHA, impl="triton")
