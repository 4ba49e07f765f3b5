"""Fine-tuning into a PNN (--init-from, --replace progressive) and the quadratic boundary
form in training: weights carried over, the swap order, mismatches refused in one line."""
import hashlib
import json

import pytest
import torch

from pnn_ext import PolyActivation
from pnn_ext.train import cli
from pnn_ext.train.checkpoint import CheckpointError
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.loop import Trainer
from testing import QUICK, run


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    """A trained ReLU run on digits (one epoch), the source of the fine-tuning tests."""
    tmp = tmp_path_factory.mktemp("relu")
    summary, trainer = run(tmp, "relu", activation="relu", epochs=1)
    assert summary["status"] == "completed"
    return tmp / "relu" / "last.pt", trainer


def _is_activation_key(model, key):
    polys = {name + "." for name, m in model.named_modules() if isinstance(m, PolyActivation)}
    return any(key.startswith(p) for p in polys)


def test_init_from_relu_copies_everything_but_the_activations(tmp_path, relu_run):
    path, source = relu_run
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "ft"), "degree": 8, "init_from": str(path)})
    trainer = Trainer(cfg)
    src = torch.load(path, weights_only=True)["model"]
    dst = trainer.model.state_dict()
    copied = [k for k in dst if not _is_activation_key(trainer.model, k)]
    assert len(copied) == len(src) > 0 and any("running_mean" in k for k in copied)  # BN statistics too
    for k in copied:
        assert torch.equal(dst[k], src[k]), k
    polys = list(trainer.polys)
    assert polys and all(m.degree == 8 for m in polys)
    # A fresh model of the same seed differs: the weights really came from the checkpoint.
    fresh = Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "fresh"), "degree": 8}))
    assert not all(torch.equal(fresh.model.state_dict()[k], dst[k]) for k in copied)
    summary = trainer.run()
    info = summary["init_from"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["path"] == str(path.resolve()) and info["activations_replaced"] == len(polys)
    assert json.loads((tmp_path / "ft" / "summary.json").read_text())["init_from"]["sha256"] == info["sha256"]
    # Starting from a trained network, one epoch at degree 8 keeps most of its accuracy.
    assert summary["final_test_acc"] > 0.8


def test_init_from_a_pnn_of_another_degree(tmp_path, relu_run):
    path, _ = relu_run
    _, deg8 = run(tmp_path, "deg8", degree=8, init_from=str(path), max_steps=3, epochs=1)
    trainer = Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "deg22"), "degree": 22,
                                     "init_from": str(tmp_path / "deg8" / "last.pt")}))
    src = deg8.model.state_dict()
    for k, v in trainer.model.state_dict().items():
        if _is_activation_key(trainer.model, k):
            continue
        assert torch.equal(v, src[k]), k
    assert all(m.degree == 22 and m.coeffs.numel() == 23 for m in trainer.polys)
    # And back to ReLU (the PolyActivations' state is skipped), from the run directory (its best.pt).
    back = Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "relu2"), "activation": "relu",
                                  "init_from": str(tmp_path / "deg8")}))
    assert back.init_info["path"] == str((tmp_path / "deg8" / "best.pt").resolve())
    assert not back.polys and torch.equal(back.model.state_dict()[next(iter(src))], src[next(iter(src))])


def test_mismatch_is_one_line_naming_the_first_key(tmp_path, relu_run, capsys):
    path, _ = relu_run
    with pytest.raises(CheckpointError, match=r"this model: '[\w.]+' \(\d+,\) is in the checkpoint but not in this"):
        Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "a"), "init_from": str(path), "norm": "none"}))
    run(tmp_path, "mlp", model="mlp", hidden="32,16", activation="relu", epochs=1, max_steps=1)
    with pytest.raises(CheckpointError, match=r"'[\w.]+weight' is \(32, 64\) in the checkpoint, \(48, 64\) in this"):
        Trainer(TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "c"), "model": "mlp", "hidden": "48,16",
                               "init_from": str(tmp_path / "mlp" / "last.pt")}))
    code = cli.main(["--dataset", "digits", "--model", "mlp", "--init-from", str(path), "--out-dir",
                     str(tmp_path / "b"), "--no-progress", "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("pnn-train: error: --init-from") and "'" in err and "this model" in err


def test_progressive_swaps_layers_in_order(tmp_path, relu_run):
    path, _ = relu_run
    cfg = TrainConfig(**{**QUICK, "out_dir": str(tmp_path / "p"), "degree": 8, "init_from": str(path),
                         "replace": "progressive", "replace_epochs": 2.0})
    trainer = Trainer(cfg)
    prog = trainer.progressive
    names = [name for name, _ in prog.layers]
    steps = prog.period
    assert steps == 2 * len(trainer.train_loader) and len(names) >= 2
    starts = [s["polynomial_from_step"] for s in prog.schedule()]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] < steps
    order = []
    for step in range(steps + 1):
        order += prog.apply(step)
        active = [("forward" not in m.__dict__) for _, m in prog.layers]
        assert active == [step >= s for s in starts]  # a prefix of the layers, by the step alone
    assert order == names[1:] and prog.done()  # layer 0 is polynomial from the first step: never swapped
    # A stand-in computes the function fitted to, and adds no boundary term.
    prog.apply(0)
    name, last = prog.layers[-1]
    x = torch.linspace(-100, 100, 11)
    assert torch.equal(last(x), torch.relu(x)) and last.boundary_terms == []
    summary = trainer.run()
    assert summary["status"] == "completed" and prog.done()
    assert [r["layer"] for r in summary["replacement"]] == names


def test_progressive_needs_poly_and_enough_epochs():
    with pytest.raises(ValueError, match="activation poly"):
        TrainConfig(activation="relu", replace="progressive")
    with pytest.raises(ValueError, match="replace_epochs"):
        TrainConfig(epochs=1, replace="progressive", replace_epochs=2.0)


def test_quadratic_boundary_form_reaches_the_modules_and_trains(tmp_path):
    summary, trainer = run(tmp_path, "q", degree=8, boundary_form="quadratic", epochs=1, max_steps=5)
    assert summary["status"] == "completed"
    assert trainer.polys and all(m.boundary_form == "quadratic" for m in trainer.polys)
    ck = torch.load(tmp_path / "q" / "last.pt", weights_only=True)["model"]
    assert all(v["boundary_form"] == "quadratic" for k, v in ck.items() if k.endswith("_extra_state"))
