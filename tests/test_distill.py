"""Distillation (--teacher): the soft-target loss against its closed form, the objective
the loop builds from it, a frozen teacher, and the refusals."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pnn_ext.train.config import TrainConfig
from pnn_ext.train.distill import TeacherError, distill_loss
from pnn_ext.train.loop import Trainer
from testing import QUICK, run


def _kd_numpy(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    """T^2 * mean over rows of sum_k p_t log(p_t / p_s), softmaxes at temperature T, in float64."""
    def softmax(z):
        z = z / temp
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    ps, pt = softmax(s), softmax(t)
    return float(temp ** 2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


@pytest.mark.parametrize("temp", [1.0, 4.0, 10.0])
def test_distill_loss_is_the_scaled_kl_divergence(temp):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    got = distill_loss(s, t, temp)
    assert got.item() == pytest.approx(_kd_numpy(s.double().numpy(), t.double().numpy(), temp), rel=1e-5)
    assert distill_loss(t, t, temp).item() == pytest.approx(0.0, abs=1e-6)
    # Its gradient is T (softmax(s/T) - softmax(t/T)) / batch: the student is pulled toward the teacher.
    s.requires_grad_(True)
    distill_loss(s, t, temp).backward()
    expect = temp * (F.softmax(s.detach() / temp, 1) - F.softmax(t / temp, 1)) / s.shape[0]
    torch.testing.assert_close(s.grad, expect, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def relu_teacher(tmp_path_factory):
    summary, _ = run(tmp_path_factory.mktemp("teacher"), activation="relu", epochs=1, max_steps=5)
    assert summary["status"] == "completed"
    return summary["config"]["out_dir"]


def test_the_objective_mixes_labels_teacher_and_boundary(tmp_path, relu_teacher):
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "s"), "teacher": relu_teacher, "distill_weight": 0.3,
                         "distill_temperature": 2.0, "bound": 2.0})  # small B: a boundary term that is not 0
    trainer = Trainer(cfg)
    x, y = trainer.data.train.tensors[0][:64], trainer.data.train.tensors[1][:64]
    trainer.model.train()
    logits, ce, bl, loss = trainer._forward(x, y)
    with torch.no_grad():
        soft = trainer.teacher(x)
    expect = 0.7 * F.cross_entropy(logits, y) + 0.3 * distill_loss(logits, soft, 2.0) + cfg.lam * bl
    assert bl.item() > 0
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)  # ce stays the label loss


def test_the_teacher_is_frozen_while_the_student_learns(tmp_path, relu_teacher):
    summary, trainer = run(tmp_path, teacher=relu_teacher, epochs=1, max_steps=4)
    assert summary["status"] == "completed" and summary["config"]["teacher"] == relu_teacher
    assert not trainer.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    from pnn_ext.train import load_run
    saved = load_run(relu_teacher).model.state_dict()
    for k, v in trainer.teacher.state_dict().items():
        assert torch.equal(v, saved[k]), k  # not one BatchNorm statistic moved: eval mode


def test_bad_teacher_settings_are_refused(tmp_path, relu_teacher):
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\]"):
        TrainConfig(out_dir=str(tmp_path), teacher=relu_teacher, distill_weight=1.5)
    with pytest.raises(ValueError, match="distill_temperature must be > 0"):
        TrainConfig(out_dir=str(tmp_path), teacher=relu_teacher, distill_temperature=0.0)
    with pytest.raises(TeacherError, match="--teacher .* trained on digits"):
        Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "m"), "teacher": relu_teacher,
                               "model": "mlp", "dataset": "npz:" + _other_data(tmp_path)}))


def _other_data(tmp_path) -> str:
    """An npz data set of digits' shape but 3 classes: a teacher of 10 digits cannot teach it."""
    g = np.random.default_rng(0)
    path = tmp_path / "other.npz"
    np.savez(path, x_train=g.normal(size=(60, 64)).astype(np.float32), y_train=np.arange(60) % 3,
             x_test=g.normal(size=(30, 64)).astype(np.float32), y_test=np.arange(30) % 3)
    return str(path)
