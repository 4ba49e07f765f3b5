"""ONNX export (pnn_ext.export_onnx, the dynamo exporter with pnn_ext::poly_act's translation)
run in onnxruntime against PyTorch: the op over degrees, bases, float16 and hostile inputs,
the model zoo at degrees 2, 8 and 22, converted torchvision models, and the refusals."""
import math

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.export import ExportError, export_onnx
from pnn_ext.export.checks import relative_error
from pnn_ext.models import MLP, CNN1d, CryptoNets, SmallCNN
from testing import random_coeffs, random_input

B = 6.0
# Every degree of the op's range costs its own unrolled recurrence in the graph: a handful by
# default, more with -m slow.
BASES = ("chebyshev", "monomial")
ALL = [(d, b) for d in (1, 2, 3, 7, 16, 22, 32, 64, 100, 128) for b in BASES]
OP_CASES = [(torch.float32, [(1, "chebyshev"), (1, "monomial"), (2, "monomial"), (22, "chebyshev"), (22, "monomial"),
                             (128, "chebyshev")]),
            (torch.float16, [(1, "monomial"), (22, "chebyshev")]),
            pytest.param(torch.float32, ALL, marks=pytest.mark.slow),
            pytest.param(torch.float16, ALL, marks=pytest.mark.slow)]


class Bank(nn.Module):
    """One PolyActivation per (degree, basis), all applied to the same input: one export
    checks them all."""

    def __init__(self, cases):
        super().__init__()
        self.acts = nn.ModuleList(pnn_ext.PolyActivation.from_coefficients(random_coeffs(d, seed=d), bound=B,
                                                                           basis=basis)
                                  for d, basis in cases)

    def forward(self, x):
        return tuple(act(x) for act in self.acts)


def run_onnx(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(y) for y in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


@pytest.mark.parametrize("dtype, cases", OP_CASES)
def test_op_over_degrees_and_bases(tmp_path, dtype, cases):
    bank = Bank(cases).eval()
    x = random_input((3, 5, 40), B, dtype=dtype, seed=1)  # a sixth of it past B: evaluated, not clamped
    # float16: both sides evaluate in float32 and round once to float16 (2^-10 relative).
    report = export_onnx(bank, x, str(tmp_path / "bank.onnx"), tolerance=1e-4 if dtype == torch.float32 else 2e-3)
    assert report.batch_sizes == (3, 1, 7) and report.max_error <= report.tolerance
    got = run_onnx(tmp_path / "bank.onnx", x)
    for act, y in zip(bank.acts, got):
        assert y.dtype == dtype and y.shape == x.shape
        # against the float64 evaluation of the same coefficients (rounded to x's dtype: float16
        # overflows to inf past 65504), not only against the fused op
        want = pnn_ext.reference.poly_act(x.double(), act.coeffs.double(), B, 0.5, act.basis)[0].to(dtype)
        tol = 1e-6 * (act.degree + 1) * 1.2 ** act.degree if dtype == torch.float32 else 2e-3
        assert relative_error(y, want) <= tol, (act.degree, act.basis)


def test_overflow_and_nan_follow_the_fused_op(tmp_path):
    """Past the float range p(t) is +-inf with the sign of the leading term (never NaN), as the
    fused op; NaN in, NaN out."""
    bank = Bank([(d, b) for d in (3, 8, 22) for b in BASES]).eval()
    x = torch.tensor([[0.0, 1.0, -B, 2 * B, -1e3, 1e5, -1e5, 1e30, -1e30, 3e38, -3e38, math.nan]] * 2)
    export_onnx(bank, random_input(x.shape, B, seed=2), str(tmp_path / "bank.onnx"))
    for act, y in zip(bank.acts, run_onnx(tmp_path / "bank.onnx", x)):
        want = act(x)
        assert torch.equal(y.isnan(), want.isnan()) and torch.equal(y.isinf(), want.isinf()), (act.degree, act.basis)
        finite = want.isfinite()
        assert torch.equal(y[~finite].nan_to_num(), want[~finite].nan_to_num())
        assert torch.allclose(y[finite], want[finite], rtol=1e-4, atol=1e-4 * float(want[finite].abs().max()))
        assert want[0, 8:11].isinf().all()  # the rule is exercised: these overflow in float32


SHAPES = {"small-cnn": (1, 8, 8), "mlp": (64,), "cnn1d": (3, 16), "cryptonets": (1, 12, 12)}
ZOO_DEGREES = (2, 8, 22)


def zoo(degree):
    torch.manual_seed(degree)
    models = [SmallCNN(1, 10, (8, 8)), MLP(64, 10), CNN1d(3, 5, 16), CryptoNets(1, 10, (12, 12))]
    for model in models:
        for m in model.modules():  # batch norm that does something in eval mode
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return [pnn_ext.convert(model, degree=degree).eval() for model in models]


class Zoo(nn.Module):
    """small-cnn, mlp, cnn1d and cryptonets at each degree, side by side (one input per model
    kind): one export, and its fixed cost, for all twelve."""

    def __init__(self):
        super().__init__()
        self.models = nn.ModuleList(m for d in ZOO_DEGREES for m in zoo(d))

    def forward(self, image8, features, sequence, image12):
        xs = (image8, features, sequence, image12) * len(ZOO_DEGREES)
        return tuple(m(x) for m, x in zip(self.models, xs))


def test_model_zoo_degrees_2_8_22_batch_1_and_7_from_one_file(tmp_path):
    model = Zoo().eval()
    xs = tuple(torch.randn(1, *shape) * 2 for shape in SHAPES.values())
    report = export_onnx(model, xs, str(tmp_path / "zoo.onnx"))
    assert report.batch_sizes == (1, 7) and report.max_error <= 1e-4 and report.tolerance == 1e-4
    # the same file at batch 7, checked here too (export_onnx drew its own batch of 7)
    session = onnxruntime.InferenceSession(str(tmp_path / "zoo.onnx"), providers=["CPUExecutionProvider"])
    x7 = tuple(torch.randn(7, *shape) * 2 for shape in SHAPES.values())
    got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), x7)})
    with torch.no_grad():
        want = model(*x7)
    assert len(got) == len(want) == 12
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape) and np.abs(g - w.numpy()).max() <= 1e-4 * float(w.abs().max())


class Torchvision(nn.Module):
    """Converted torchvision resnet18 and mobilenet_v2 (random weights, nothing downloaded)
    side by side on one input: one export for both."""

    def __init__(self):
        super().__init__()
        import torchvision
        torch.manual_seed(0)
        self.models = nn.ModuleList(pnn_ext.convert(torchvision.models.get_model(name, weights=None, num_classes=10),
                                                    degree=8) for name in ("resnet18", "mobilenet_v2"))

    def forward(self, x):
        return tuple(m(x) for m in self.models)


def test_converted_torchvision_resnet18_and_mobilenet_v2(tmp_path):
    pytest.importorskip("torchvision")
    report = export_onnx(Torchvision().eval(), torch.randn(1, 3, 32, 32), str(tmp_path / "torchvision.onnx"))
    assert report.batch_sizes == (1, 7) and report.max_error <= 1e-4


class UsesStatistics(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = pnn_ext.PolyActivation(4)

    def forward(self, x):
        return self.act(x), pnn_ext.boundary_loss(self)


class ExportsDifferently(nn.Module):
    """What an exported file that disagrees with PyTorch looks like."""

    def forward(self, x):
        return x + 1.0 if torch.compiler.is_exporting() else x


def test_refusals(tmp_path):
    model = Bank([(4, "chebyshev")])
    x = torch.randn(2, 8)
    with pytest.raises(ExportError, match="training mode.*call model.eval"):
        export_onnx(model, x, str(tmp_path / "m.onnx"))
    model.eval()
    with pytest.raises(ExportError, match="path must end in .onnx"):
        export_onnx(model, x, str(tmp_path / "m.pt"))
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(model, x, str(tmp_path / "no" / "m.onnx"))
    with pytest.raises(ExportError, match="bfloat16 inputs cannot be checked in onnxruntime"):
        export_onnx(model, x.bfloat16(), str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="example_input must be a tensor"):
        export_onnx(model, [1, 2], str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="boundary term or range statistics.*not exported"):
        export_onnx(UsesStatistics().eval(), x, str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="onnxruntime disagrees with PyTorch at batch size 2"):
        export_onnx(ExportsDifferently().eval(), x, str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()  # a file that disagrees is not left behind


def test_torchscript_paths_refused_in_one_line(tmp_path):
    model = pnn_ext.convert(SmallCNN(1, 10, (8, 8)), degree=4).eval()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match=r"^pnn_ext: torch.onnx.export\(..., dynamo=False\) .*not supported.*"
                                           r"torch.export.export.*pnn_ext.export_onnx") as e:
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match=r"^pnn_ext: torch.jit.script .*not supported.*torch.export.export"):
        torch.jit.script(model)
    assert len(model.state_dict()) > 0  # the exporter's flag was reset: the state dict reads again
