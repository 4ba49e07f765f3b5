"""convert() leaves no activation behind and ignores no setting: a module instance held in
several places, a model converted before (the same settings: nothing changes; others: a
clear error, the model untouched), and the kinds of models it cannot change (TorchScript,
an ExportedProgram), each named in one line."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import fitting
from pnn_ext.conversion import ConvertError
from pnn_ext.nn import PolyActivation, poly_modules

DEGREE = 8


class TwoNames(nn.Module):
    """One ReLU instance under two attribute names of one parent, called once through each."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.act = nn.ReLU()
        self.act_again = self.act

    def forward(self, x):
        return self.act_again(self.fc2(self.act(self.fc1(x))))


def _same(a: dict, b: dict) -> bool:
    """Two state dicts (tensors, and PolyActivation's extra state) hold equal entries for a's keys."""
    return all(torch.equal(v, b[k]) if torch.is_tensor(v) else v == b[k] for k, v in a.items())


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output with every ReLU call evaluated as the degree-DEGREE fit, in float64."""
    bound, _ = fitting.preset(DEGREE)
    coeffs = fitting.fit("relu", DEGREE, bound).coeffs  # Chebyshev, in t = x / B

    def poly(module, args, out):
        return torch.as_tensor(np.polynomial.chebyshev.chebval(args[0].numpy() / bound, coeffs))
    handles = [m.register_forward_hook(poly) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            return model.double()(x.double())
    finally:
        for h in handles:
            h.remove()
        model.float()


@pytest.mark.parametrize("build", [
    lambda r: nn.Sequential(nn.Linear(4, 6), r, nn.Linear(6, 3), r),
    lambda r: nn.Sequential(nn.Sequential(nn.Linear(4, 6), r), nn.Sequential(nn.Linear(6, 3), r)),
    lambda r: TwoNames(),
], ids=["twice-in-one-sequential", "in-two-parents", "two-names-in-one-parent"])
def test_a_reused_activation_is_converted_at_every_use(build):
    torch.manual_seed(0)
    model = build(nn.ReLU())
    x = torch.randn(32, 4) * 3
    expected = _reference(model, x)
    converted = pnn_ext.convert(model, degree=DEGREE, strict=True, example_input=x)  # strict: nothing left
    assert not any(isinstance(m, nn.ReLU) for m in converted.modules())
    polys = list(poly_modules(converted))
    assert len(polys) == 1  # one instance before, one after, held wherever the ReLU was
    y = converted(x)
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)
    assert len(polys[0].boundary_terms) == 2  # both calls count in the boundary loss


def test_converting_again_with_the_same_settings_changes_nothing():
    model = pnn_ext.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.SiLU()), degree=DEGREE,
                            learnable=True)
    with torch.no_grad():  # as training would: the second conversion must keep what was learned
        model[1].coeffs.add_(0.01)
    model[1].set_bound(3.0)
    before = copy.deepcopy(model.state_dict())
    first = model[1]
    model.append(nn.ReLU())  # added since: converted now
    again = pnn_ext.convert(model, degree=DEGREE, learnable=True)
    assert again is model and again[1] is first and again[1].bound == 3.0
    assert _same(before, again.state_dict())
    assert isinstance(again[4], PolyActivation) and again[4].degree == DEGREE


@pytest.mark.parametrize("kwargs, message", [
    ({"degree": 4}, r"'1': degree 8 \(this call: 4\)"),
    ({"degree": DEGREE, "basis": "monomial"}, r"basis 'chebyshev' \(this call: 'monomial'\)"),
    ({"degree": DEGREE, "bound": 5.0}, r"bound 35\.0 \(this call: 5\.0\)"),
    ({"degree": DEGREE, "alpha": 0.9}, r"alpha 0\.5 \(this call: 0\.9\)"),
    ({"degree": DEGREE, "learnable": True}, r"learnable False \(this call: True\)"),
    ({"degree": DEGREE, "target": "silu"}, r"target 'relu' \(this call: 'silu'\)"),
], ids=["degree", "basis", "bound", "alpha", "learnable", "target"])
def test_converting_again_with_other_settings_is_refused_before_any_change(kwargs, message):
    model = pnn_ext.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU()), degree=DEGREE)
    model.append(nn.ReLU())
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ConvertError, match=message) as e:
        pnn_ext.convert(model, **kwargs)
    assert "\n" not in str(e.value) and "and 1 more" in str(e.value) and "does not refit" in str(e.value)
    assert type(model[4]) is nn.ReLU and model[1].degree == DEGREE  # untouched
    assert _same(state, model.state_dict()) and state.keys() == model.state_dict().keys()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch.jit is deprecated: still what users hold
def test_models_convert_cannot_change_get_one_accurate_line():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    for kwargs in ({}, {"functional": False}, {"example_input": torch.randn(2, 4)}):
        with pytest.raises(ConvertError, match=r"^the model is a TorchScript module \(RecursiveScriptModule\).*"
                                               r"convert the nn\.Module it was scripted or traced from$"):
            pnn_ext.convert(scripted, **kwargs)
    traced = nn.Sequential(nn.Linear(4, 4), torch.jit.trace(nn.ReLU(), torch.randn(2, 4)))
    with pytest.raises(ConvertError, match=r"its submodule '1' is a TorchScript module"):
        pnn_ext.convert(traced)
    assert type(traced[1]).__name__ == "TopLevelTracedModule"
    x = torch.randn(2, 4)
    exported = torch.export.export(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (x,))
    with pytest.raises(ConvertError, match=r"model must be a torch\.nn\.Module, got ExportedProgram .*\.module\(\), "
                                           r"with example_input"):
        pnn_ext.convert(exported)
    # the advice holds: its module, with an example input, converts
    converted = pnn_ext.convert(exported.module(), degree=DEGREE, example_input=x)
    assert len(list(poly_modules(converted))) == 1 and converted(x).shape == (2, 4)
    with pytest.raises(ConvertError, match=r"model must be a torch\.nn\.Module, got builtin_function_or_method$"):
        pnn_ext.convert(torch.relu)
