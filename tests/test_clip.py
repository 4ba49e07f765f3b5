"""Gradient clipping in the training loop's three modes (clip_gradients)."""
import math

import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.clip import clip_gradients
from pnn_ext.models import SmallCNN


def _with_grads(model):
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 10
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["selective", "all", "none"])
def test_clipping_modes_touch_exactly_the_right_parameters(mode):
    model = SmallCNN(1, 10, (8, 8))
    before = _with_grads(model)
    is_bn = {n: isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.BatchNorm1d | nn.BatchNorm2d)
             for n, _ in model.named_parameters()}
    assert any(is_bn.values()) and not all(is_bn.values())
    n_other, n_bn = clip_gradients(model, mode, 0.1, "cpu")
    after = {n: p.grad for n, p in model.named_parameters()}
    other_norm = torch.linalg.vector_norm(torch.stack([after[n].norm() for n in after if not is_bn[n]]))
    total_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in after.values()]))
    assert n_other == pytest.approx(torch.linalg.vector_norm(
        torch.stack([before[n].norm() for n in before if not is_bn[n]])).item(), rel=1e-5)
    for n in after:
        changed = not torch.equal(after[n], before[n])
        if mode == "none":
            assert not changed, n
        elif mode == "selective":
            assert changed != is_bn[n], n          # exactly the non-BatchNorm gradients move
        else:
            assert changed, n
    if mode == "selective":
        assert other_norm.item() == pytest.approx(0.1, rel=1e-4)
    if mode == "all":
        assert total_norm.item() == pytest.approx(0.1, rel=1e-4)


def test_selective_clipping_spares_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), pnn_ext.PolyActivation(2), nn.Flatten(),
                          nn.LazyLinear(3), nn.BatchNorm1d(3))
    model(torch.randn(5, 3, 8, 8))
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    total = pnn_ext.clip_grad_norm_selective_(model, max_norm=1.0)
    bn = {id(p) for m in (model[1], model[5]) for p in m.parameters()}
    others = [p for p in model.parameters() if id(p) not in bn]
    assert total == pytest.approx(10.0 * math.sqrt(sum(p.numel() for p in others)), rel=1e-5)
    assert torch.cat([p.grad.flatten() for p in others]).norm() == pytest.approx(1.0, rel=1e-4)
    for p in model.parameters():
        if id(p) in bn:
            assert torch.equal(p.grad, torch.full_like(p, 10.0))


def test_clipping_edges():
    """No BatchNorm: its norm is a 0-d zero; a non-finite gradient raises only when asked
    (as clip_grad_norm_ does); an unknown mode names the three."""
    model = nn.Sequential(nn.Linear(3, 2))
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)
    n_other, n_bn = clip_gradients(model, "none", 1.0, "cpu")
    assert n_bn.shape == () and float(n_bn) == 0.0 and float(n_other) == pytest.approx(2.0 * math.sqrt(8))
    model[0].bias.grad[0] = math.inf
    assert math.isinf(float(pnn_ext.clip_grad_norm_selective_(model, 1.0)))
    with pytest.raises(RuntimeError, match="non-finite"):
        pnn_ext.clip_grad_norm_selective_(model, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="mode must be 'selective', 'all' or 'none', got 'some'"):
        clip_gradients(model, "some", 1.0, "cpu")
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        pnn_ext.clip_grad_norm_selective_(model, 0.0)
