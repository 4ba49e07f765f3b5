"""The range certificate (pnn_ext.he.certificate): per activation, max |x| / B and the
fraction of samples outside [-B, B] over a data set, as the float64 model computes them;
carried by the model file (and its id); `pnn-he certify` writes it; `pnn-he serve`
refuses a model without one or with an input outside [-B, B] unless overridden. No
encryption here: everything is plaintext and fast."""
import numpy as np
import pytest
import torch
from torch import nn

from pnn_ext import PolyActivation


def mlp(bound=2.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), PolyActivation(4, bound=bound), nn.Linear(5, 4),
                         PolyActivation(4, bound=bound), nn.Linear(4, 3))


def pre_activations(model, x):
    """The inputs of each PolyActivation, by forward hooks on the original torch model."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().double().numpy()))
             for m in model if isinstance(m, PolyActivation)]
    with torch.no_grad():
        model.double().eval()(torch.as_tensor(x))
    for h in hooks:
        h.remove()
    return seen


def test_margins_match_the_torch_model():
    from pnn_ext.he import fold
    from pnn_ext.he.certificate import certify
    model = mlp()
    x = np.random.default_rng(0).normal(size=(300, 6)) * 2
    he = fold(model, (6,))
    cert = certify(he, x, "normal x 2")
    for a, pre in zip(cert["activations"], pre_activations(model, x)):
        assert a["max_abs_over_bound"] == pytest.approx(np.abs(pre).max() / 2.0, rel=1e-9)
        assert a["fraction_outside"] == pytest.approx((np.abs(pre) > 2.0).any(axis=1).mean())
        assert a["margin"] == pytest.approx(1 - a["max_abs_over_bound"])
    assert cert["inside"] == all(a["max_abs_over_bound"] <= 1 for a in cert["activations"])
    assert [a["layer"] for a in cert["activations"]] == [1, 3] and cert["samples"] == 300
    small = certify(he, x / 100, "small")
    assert small["inside"] and all(a["fraction_outside"] == 0 for a in small["activations"])
    big = certify(he, x * 100, "big")
    assert not big["inside"] and big["activations"][0]["fraction_outside"] > 0.9
    with pytest.raises(ValueError, match="features"):
        certify(he, x[:, :5], "narrow")


def test_fold_certifies_on_the_training_inputs_and_the_file_carries_it(tmp_path):
    from pnn_ext.he import HEModel, fold
    x = np.random.default_rng(1).normal(size=(200, 6)) * 0.5
    he = fold(mlp(), (6,), inputs=x)
    assert he.certificate["data"] == "the training inputs" and he.certificate["samples"] == 200
    model_id = he.export(str(tmp_path / "m.npz"))
    back = HEModel.load(str(tmp_path / "m.npz"))
    assert back.certificate == he.certificate and back.model_id == model_id
    back.certificate = {**back.certificate, "samples": 1}
    assert back.model_id != model_id                         # the id covers the certificate
    bare = fold(mlp(), (6,))
    assert bare.certificate is None and "certificate" not in bare._contents()[0]   # earlier files keep their id


def test_certify_command_and_serve_refusal(tmp_path, capsys):
    import json

    from pnn_ext.he import fold
    from pnn_ext.he.cli import main
    x = np.random.default_rng(2).normal(size=(100, 6))
    fold(mlp(), (6,), inputs=x * 0.1).export(str(tmp_path / "m.npz"))
    np.save(tmp_path / "far.npy", x * 100)
    assert main(["certify", str(tmp_path / "m.npz"), "--data", str(tmp_path / "far.npy"),
                 "--out", str(tmp_path / "far.npz")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["certificate"]["inside"] and "OUTSIDE [-B, B]" in report["summary"]
    assert main(["serve", str(tmp_path / "far.npz"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OUTSIDE [-B, B]" in err and "--allow-out-of-range" in err
    fold(mlp(), (6,)).export(str(tmp_path / "bare.npz"))
    assert main(["serve", str(tmp_path / "bare.npz"), "--port", "0"]) == 2
    assert "no range certificate" in capsys.readouterr().err
    assert main(["certify", str(tmp_path / "m.npz"), "--data", "test"]) == 2
    assert "needs a pnn-train run" in capsys.readouterr().err
