"""pnn_ext.he.fold on hand-made models whose folded form is known exactly: the 1/B and
out_scale placed in the affine maps, the Chebyshev coefficients, the names of the
layers, every refusal with its message, and the recorded input range.
(tests/test_he.py checks folding of the zoo's models against their float64 outputs.)"""
import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.he.fold import AFFINE, UnsupportedLayerError, chebyshev_in_t, fold
from pnn_ext.he.model import Affine, InputRange, Poly

W1 = [[1.0, 2.0], [-3.0, 0.5]]
B1 = [0.25, -1.0]
W2 = [[2.0, -1.0]]
B2 = [3.0]
C = [0.5, 1.5, 0.25]          # c_0 + c_1 T_1 + c_2 T_2 in t
BOUND = 4.0


def _linear(w, b) -> nn.Linear:
    m = nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.bias.copy_(torch.tensor(b))
    return m


def _poly(basis="chebyshev", coeffs=C) -> pnn_ext.PolyActivation:
    return pnn_ext.PolyActivation(2, BOUND, 0.5, basis=basis, coeffs=np.array(coeffs))


def _model(**kw) -> nn.Sequential:
    return nn.Sequential(_linear(W1, B1), nn.Sequential(_poly(**kw)), _linear(W2, B2))


@pytest.mark.parametrize("normalize", [True, False])
def test_fold_places_one_over_b_and_the_output_scale(normalize):
    model = _model()
    he = fold(model, (2,), normalize_outputs=normalize)
    s = BOUND if normalize else 1.0
    a1, p, a2 = he.layers
    assert [type(v) for v in he.layers] == [Affine, Poly, Affine]
    np.testing.assert_array_equal(a1.weight, np.array(W1) / BOUND)
    np.testing.assert_array_equal(a1.bias, np.array(B1) / BOUND)
    assert (p.degree, p.bound, p.out_scale, p.name) == (2, BOUND, s, "1.0")
    np.testing.assert_array_equal(p.coeffs, np.array(C) / s)
    np.testing.assert_array_equal(a2.weight, np.array(W2) * s)
    np.testing.assert_array_equal(a2.bias, np.array(B2))
    assert he.input_range is None and he.in_shape == (2,)
    x = np.array([[0.5, -1.0], [2.0, 3.0]])
    t = (x @ np.array(W1).T + B1) / BOUND
    want = np.polynomial.chebyshev.chebval(t, C) @ np.array(W2).T + B2
    np.testing.assert_allclose(he(x), want, rtol=1e-13)
    assert isinstance(model[0].weight.data, torch.Tensor) and model[0].weight.dtype == torch.float32   # untouched


def test_monomial_coefficients_are_converted_to_chebyshev():
    he = fold(_model(basis="monomial"), (2,), normalize_outputs=False)
    np.testing.assert_allclose(he.layers[1].coeffs, np.polynomial.chebyshev.poly2cheb(C), rtol=1e-15)
    c = np.array(C)
    out = chebyshev_in_t(c, "chebyshev")
    out[0] = 99.0                                         # a copy, not the caller's array
    assert c[0] == 0.5
    np.testing.assert_array_equal(chebyshev_in_t(c, "monomial"), np.polynomial.chebyshev.poly2cheb(C))
    assert chebyshev_in_t([1, 2], "chebyshev").dtype == np.float64


def test_fold_uses_eval_mode_and_float64():
    """Dropout and BatchNorm as in eval mode, whatever mode the model is in; float64 throughout."""
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    third = 1 / 3                                         # not a float32 number
    model = nn.Sequential(nn.Dropout(0.5), _linear([[third, 0.0], [0.0, 1.0]], [0.0, 0.0]), bn, _poly(),
                          nn.Flatten(), _linear(W2, B2)).train()
    he = fold(model, (2,), normalize_outputs=False)
    assert model.training                                 # the caller's model is left in its mode
    scale = np.array([3.0 / np.sqrt(4.0 + 1e-5), 1.0 / np.sqrt(0.25 + 1e-5)])
    weight = np.diag(scale) @ np.array([[np.float32(third), 0.0], [0.0, 1.0]]) / BOUND
    np.testing.assert_allclose(he.layers[0].weight, weight, rtol=1e-15)
    np.testing.assert_allclose(he.layers[0].bias, (np.array([0.5, 0.0]) - scale * [1.0, -2.0]) / BOUND, rtol=1e-15)


def test_a_lone_activation_and_a_chain_of_affine_maps():
    he = fold(_poly(), (3,), normalize_outputs=False)
    assert he.layers[1].name == "PolyActivation"         # no Sequential around it: its type names it
    np.testing.assert_array_equal(he.layers[0].weight, np.eye(3) / BOUND)
    np.testing.assert_array_equal(he.layers[2].weight, np.eye(3))
    he = fold(nn.Sequential(_linear(W1, B1), nn.Identity(), _linear(W2, B2)), (2,))
    assert [type(v) for v in he.layers] == [Affine]
    np.testing.assert_allclose(he.layers[0].weight, np.array(W2) @ np.array(W1), rtol=1e-15)
    np.testing.assert_allclose(he.layers[0].bias, np.array(W2) @ B1 + B2, rtol=1e-15)


def test_input_range_from_the_inputs_given():
    x = np.array([[0.5, -1.0], [2.0, 3.0], [0.0, 0.0]])
    assert fold(_model(), (2,), inputs=x).input_range == InputRange(-1.0, 3.0, 3)
    assert fold(_model(), (2,), inputs=torch.tensor(x)).input_range == InputRange(-1.0, 3.0, 3)
    assert fold(_model(), (2,), inputs=np.zeros((0, 2))).input_range is None


class _Custom(nn.Module):
    def forward(self, x):
        return x


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 2)

    def forward(self, x):
        return x + self.inner(x)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(), "the model has no layers to fold"),
    (nn.Sequential(_linear(W1, B1), nn.Sequential(nn.ReLU())),
     "unsupported layer '1.0' (ReLU) (not a polynomial: convert the model with pnn_ext.convert first)"),
    (nn.Sequential(nn.AdaptiveMaxPool1d(1)),
     "unsupported layer '0' (AdaptiveMaxPool1d) (max-pooling is not a polynomial: pnn_ext.convert(..., "
     "max_pool=\"avg\") replaces it)"),
    (nn.Sequential(_linear(W1, B1), _Block()),
     "unsupported layer '1' (_Block) (only chains of modules, nn.Sequential, are folded; residual blocks and custom "
     "forwards are not)"),
    (nn.Sequential(_Custom()), "unsupported layer '0' (_Custom)"),
    (_Custom(), "unsupported layer '<model>' (_Custom)"),
])
def test_refusals_name_the_layer(model, message):
    with pytest.raises(UnsupportedLayerError) as e:
        fold(model, (2,))
    assert str(e.value) == message


def test_layers_that_do_not_chain_are_named_with_the_shape():
    with pytest.raises(UnsupportedLayerError) as e:
        fold(nn.Sequential(_linear(W1, B1), _poly(), nn.Linear(3, 1)), (2,))
    assert str(e.value).startswith("layer '2' (Linear) failed on input of shape (2,): ")
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_affine_set_is_what_folds():
    """Every module type fold accepts is affine in eval mode: listed, and nothing else passes."""
    assert set(AFFINE) == {nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool1d,
                                       nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten,
                                       nn.Dropout, nn.Identity}


def test_output_scale_is_exact_in_float64():
    """out_scale B = 0.3 (not a float32 number) reaches the next map as float64's 0.3."""
    model = nn.Sequential(_linear(W1, B1), pnn_ext.PolyActivation(2, 0.3, 0.5, coeffs=np.array(C)), _linear(W2, B2))
    he = fold(model, (2,))
    assert he.layers[1].out_scale == 0.3
    np.testing.assert_allclose(he.layers[2].weight, np.array(W2) * 0.3, rtol=1e-15, atol=0)
