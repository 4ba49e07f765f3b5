"""polynomial_report: what a forward runs that is not polynomial, by module."""
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.conversion import NotPolynomialError


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.scale = nn.Parameter(torch.full((4,), 2.0))

    def forward(self, x):
        x = self.bn(x) / self.scale        # affine: division by a parameter
        x = x / x.norm(dim=-1, keepdim=True)  # division by a tensor (and a norm)
        x = torch.softmax(self.norm(x), -1)
        return x.amax(-1) + x.pow(2).sum(-1)


def test_report_names_what_is_not_polynomial():
    model = Mixed().train()
    report = pnn_ext.polynomial_report(model, torch.randn(3, 4))
    assert model.training  # the mode is restored
    assert report.ops() == {"linalg_vector_norm": 1, "division by a tensor": 1, "layer_norm": 1, "softmax": 1,
                            "amax": 1}
    assert {(e.module, e.op) for e in report.entries} >= {("norm", "layer_norm"), ("", "softmax")}
    assert "layer_norm" in str(report) and not report.ok
    with pytest.raises(NotPolynomialError, match="softmax") as err:
        pnn_ext.convert(Mixed(), degree=2, strict=True, example_input=torch.randn(3, 4))
    assert err.value.report.ops()["layer_norm"] == 1


def test_report_keeps_boundary_terms():
    model = pnn_ext.convert(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), degree=2)
    model(torch.randn(4, 2))
    before = list(model[1].boundary_terms)
    pnn_ext.polynomial_report(model, torch.randn(3, 2))
    assert model[1].boundary_terms == before


class Powers(nn.Module):
    def forward(self, x):
        return x ** 3 + x / 4 + 2 ** x + x ** 0.5 + x * x


def test_report_integer_powers_are_polynomial():
    report = pnn_ext.polynomial_report(Powers(), torch.rand(3) + 0.5)
    assert report.ops() == {"pow": 2}  # 2 ** x and x ** 0.5; x ** 3, x / 4, x * x are polynomial
    assert report.summary().startswith("not polynomial: pow x2")
