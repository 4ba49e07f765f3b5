"""Shared by the tests: the op test matrix, listed once (devices, dtypes, degrees and
tolerances), and quick training runs."""
import os

import pytest
import torch

import pnn_ext
from pnn_ext import reference

DEGREES = [1, 2, 3, 4, 8, 16, 22, 32]
BASES = ["chebyshev", "monomial"]
FORMS = list(reference.BOUNDARY_FORMS)  # boundary-term forms: exp, quadratic
# Awkward sizes: below, at and past vector widths and the CPU chunk (32768).
SIZES = [0, 1, 7, 16, 17, 129, 1134, 32768 + 5, 100_003]

cuda_only = pytest.mark.skipif(not torch.cuda.is_available() or not pnn_ext.has_cuda_kernels(),
                               reason="needs a CUDA device and the CUDA kernels")
# Every device test runs on CPU and CUDA; the CUDA cases skip without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=[cuda_only, pytest.mark.cuda])]


def random_coeffs(degree, dtype=torch.float32, device="cpu", seed=0):
    """Random coefficients whose p stays O(1) on [-1, 1] (c_k ~ N(0, 1/(k+1)))."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(degree + 1, generator=g, dtype=torch.float64) / torch.arange(1, degree + 2)
    return c.to(dtype=reference.compute_dtype(dtype), device=device)


def random_input(shape, bound, dtype=torch.float32, device="cpu", seed=0, spread=1.2):
    """Inputs spread over [-spread*B, spread*B], so some lie past alpha*B and B."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * spread * bound
    return x.to(dtype=dtype, device=device)


def reference64(x, coeffs, bound, alpha, basis, boundary_form="exp"):
    return reference.poly_act(x.double().cpu(), coeffs.double().cpu(), bound, alpha, basis, boundary_form)


# ---------------------------------------------------------------- training runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, cwd of subprocess runs
# A quick pnn-train run: digits (no download), 2 epochs, no bar, no plots.
QUICK = dict(dataset="digits", epochs=2, batch_size=64, progress=False, plots=False)


def run(tmp_path, name="run", **kw):
    """(summary, trainer) of a quick run in tmp_path/name; ``kw`` overrides settings."""
    from pnn_ext.train.config import TrainConfig
    from pnn_ext.train.loop import Trainer
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / name), **kw})
    trainer = Trainer(cfg)
    return trainer.run(), trainer


def weights(trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if torch.is_tensor(v)}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
