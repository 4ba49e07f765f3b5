"""Op registration (opcheck, torch.compile) and the op's argument errors, fused and reference."""
import math

import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import reference
from testing import DEVICES, random_coeffs, random_input


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("coeffs_grad", [False, True])
def test_opcheck(device, dtype, coeffs_grad):
    c = random_coeffs(8, dtype, device).requires_grad_(coeffs_grad)
    for x in (random_input((3, 33), 20.0, dtype, device).requires_grad_(), random_input((7,), 20.0, dtype, device)):
        torch.library.opcheck(torch.ops.pnn_ext.poly_act, (x, c, 20.0, 0.75, "chebyshev"))
        torch.library.opcheck(torch.ops.pnn_ext.poly_act, (x, c, 20.0, 0.75, "chebyshev", "quadratic"))
    x = random_input((3, 33), 20.0, dtype, device)
    gs = torch.tensor([1.5, 0.0, 0.0], dtype=reference.compute_dtype(dtype), device=device)
    for form in ("exp", "quadratic"):
        torch.library.opcheck(torch.ops.pnn_ext.poly_act_backward,
                              (torch.randn_like(x), gs, x, c.detach(), 20.0, 0.75, "monomial", coeffs_grad, form))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    c = random_coeffs(22, device=device).requires_grad_()
    x = random_input((64, 33), 47.0, device=device).requires_grad_()

    def step(x, c):
        y, stats = pnn_ext.poly_act(x, c, 47.0, 0.5, "chebyshev")
        return (y.sin().sum() + 1000 * stats[0]), stats

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    out_e, st_e = step(x, c)
    ge = torch.autograd.grad(out_e, (x, c))
    out_c, st_c = compiled(x, c)
    gc = torch.autograd.grad(out_c, (x, c))
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(st_c, st_e)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)


def test_module_under_torch_compile_inductor_cpu():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), pnn_ext.PolyActivation(8), nn.Linear(16, 2))
    pnn_ext.track(model)
    x = torch.randn(32, 8) * 10
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager)


BAD_ARGS = [
    ("x", lambda x, c: (x.long(), c, 20.0, 0.5, "chebyshev")),
    ("x", lambda x, c: (x.int(), c, 20.0, 0.5, "chebyshev")),
    ("degree", lambda x, c: (x, c[:1], 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x, c.reshape(3, 3), 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x, c.double(), 20.0, 0.5, "chebyshev")),
    ("coeffs", lambda x, c: (x.double(), c, 20.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, 0.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, -3.0, 0.5, "chebyshev")),
    ("bound", lambda x, c: (x, c, math.nan, 0.5, "chebyshev")),
    ("alpha", lambda x, c: (x, c, 20.0, 0.0, "chebyshev")),
    ("basis", lambda x, c: (x, c, 20.0, 0.5, "legendre")),
    ("boundary_form", lambda x, c: (x, c, 20.0, 0.5, "chebyshev", "cubic")),
]
# The compiled op's degree limit (128; the reference has none).
FUSED_ONLY = [("degree", lambda x, c: (x, torch.zeros(200), 20.0, 0.5, "chebyshev"))]
CALLS = [(n, m, impl) for impl in ("fused", "reference") for n, m in BAD_ARGS + (FUSED_ONLY if impl == "fused" else [])]


@pytest.mark.parametrize("name,make,impl", CALLS, ids=[f"{n}-{i}-{impl}" for i, (n, _, impl) in enumerate(CALLS)])
def test_bad_arguments_name_the_argument(name, make, impl):
    f = torch.ops.pnn_ext.poly_act if impl == "fused" else reference.poly_act
    x, c = torch.randn(10), torch.randn(9)
    args = make(x, c)
    with pytest.raises(RuntimeError, match=name):
        f(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_coeffs_on_wrong_device():
    with pytest.raises(RuntimeError, match="coeffs must be on x's device"):
        torch.ops.pnn_ext.poly_act(torch.randn(10, device="cuda"), torch.randn(9), 20.0, 0.5, "chebyshev")
