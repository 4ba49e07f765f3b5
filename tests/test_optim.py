"""The optimizer and schedule of a run (pnn_ext.train.optim): which parameters decay,
the coefficients' learning rate, ReduceLROnPlateau on a loss (mode "min")."""
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext.train import optim
from pnn_ext.train.config import TrainConfig


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), pnn_ext.PolyActivation(2, learnable=True),
                         nn.Flatten(), nn.Linear(8, 3), nn.BatchNorm1d(3))


def test_groups_decay_only_conv_and_linear_weights_and_scale_the_coefficients_lr():
    model = _model()
    cfg = TrainConfig(lr=1e-3, weight_decay=0.05, coeff_lr_scale=0.1)
    opt = optim.make_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    conv, bn2, poly, lin, bn1 = model[0], model[1], model[2], model[4], model[5]
    assert ids["weights"] == {id(conv.weight), id(lin.weight)}
    assert ids["bn_and_bias"] == {id(p) for p in (conv.bias, lin.bias, bn2.weight, bn2.bias, bn1.weight, bn1.bias)}
    assert ids["coeffs"] == {id(poly.coeffs)}
    assert (groups["weights"]["weight_decay"], groups["bn_and_bias"]["weight_decay"],
            groups["coeffs"]["weight_decay"]) == (0.05, 0.0, 0.0)
    assert groups["weights"]["lr"] == groups["bn_and_bias"]["lr"] == 1e-3
    assert groups["coeffs"]["lr"] == pytest.approx(1e-4)
    # With zero gradients one AdamW step is the decay alone: w * (1 - lr * wd), only on the weights.
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in model.parameters():
        want = before[id(p)] * (1 - 1e-3 * 0.05) if id(p) in ids["weights"] else before[id(p)]
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-7)


def test_frozen_parameters_and_fixed_coefficients_join_no_group():
    model = nn.Sequential(nn.Linear(4, 4), pnn_ext.PolyActivation(2), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    groups = optim.parameter_groups(model, TrainConfig())
    assert [g["name"] for g in groups] == ["weights", "bn_and_bias"]
    assert [len(g["params"]) for g in groups] == [1, 2]


def test_plateau_schedule_lowers_the_lr_when_the_loss_stops_falling():
    model = _model()
    cfg = TrainConfig(lr=1e-2, scheduler="plateau", plateau_factor=0.5, plateau_patience=1)
    opt = optim.make_optimizer(model, cfg)
    sched = optim.make_scheduler(opt, cfg)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and sched.mode == "min"
    for loss in (1.0, 0.9, 0.8, 0.7):      # falling: the rate stays
        sched.step(loss)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2, 1e-3]
    for loss in (0.75, 0.75):              # no better than 0.7 for patience + 1 epochs: halved
        sched.step(loss)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-3, 5e-3, 5e-4])


def test_cosine_and_none():
    opt = optim.make_optimizer(_model(), TrainConfig(lr=1e-2))
    cos = optim.make_scheduler(opt, TrainConfig(scheduler="cosine", epochs=4))
    assert isinstance(cos, torch.optim.lr_scheduler.CosineAnnealingLR) and cos.T_max == 4
    assert optim.make_scheduler(opt, TrainConfig(scheduler="cosine", epochs=1)).T_max == 1
    assert optim.make_scheduler(opt, TrainConfig(scheduler="none")) is None
