"""--bound auto: PolyActivation.set_bound, the calibration pass, and a calibrated run
recorded in summary and checkpoint and folded for HE unchanged."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import fitting, models
from pnn_ext.he import fold
from pnn_ext.train import load_run
from pnn_ext.train.calibrate import calibrate
from pnn_ext.train.cli import main as train_main
from pnn_ext.train.config import TrainConfig, parse_config


def test_set_bound_refits_in_place():
    act = pnn_ext.PolyActivation(8, 35.0, learnable=True, target="silu")
    param = act.coeffs
    act.set_bound(5.0)
    assert act.coeffs is param and act.bound == 5.0
    want = fitting.fit("silu", 8, 5.0).coeffs
    np.testing.assert_allclose(act.coeffs.detach().double().numpy(), want, rtol=1e-6, atol=1e-6)
    x = torch.linspace(-5, 5, 101)
    assert (act(x) - torch.nn.functional.silu(x)).abs().max() < 0.05  # a good fit on the new interval
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="bound must be finite"):
            act.set_bound(bad)
    leaky = pnn_ext.PolyActivation(8, 10.0, target="leaky_relu(negative_slope=0.2)")  # a key convert() makes
    leaky.set_bound(4.0)
    np.testing.assert_allclose(leaky.coeffs.double().numpy(), fitting.fit("leaky_relu(negative_slope=0.2)", 8, 4.0)
                               .coeffs, rtol=1e-6, atol=1e-6)
    custom = pnn_ext.PolyActivation.from_coefficients([0.0, 1.0, 0.5], bound=2.0)
    with pytest.raises(ValueError, match="refits the target"):
        custom.set_bound(3.0)


def mlp(seed=0):
    torch.manual_seed(seed)
    model = models.MLP(20, 5, (32, 16, 8), dropout=0.3)
    models.kaiming_uniform_init(model)
    return pnn_ext.convert(model, degree=22)


def layer_inputs(model, x) -> list[torch.Tensor]:
    """|x| reaching each PolyActivation in one training-mode forward, in float64 (the random
    streams put back, so a calibration pass that follows sees the same dropout)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach().double().abs().flatten()))
             for m in pnn_ext.nn.poly_modules(model)]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model.train()(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("scale", [0.05, 1.0, 300.0])
def test_each_layer_gets_margin_times_its_quantile(scale):
    """Hostile input scales: B follows the inputs each layer really sees after the layers
    before it were calibrated; running statistics and the random streams are left as they were."""
    model = mlp()
    x = scale * torch.randn(512, 20, generator=torch.Generator().manual_seed(1))
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bn]
    rng = torch.get_rng_state()
    records = calibrate(model, x, quantile=0.99, margin=3.0)
    assert torch.equal(torch.get_rng_state(), rng)
    for m, (mean, var, n) in zip(bn, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var) and int(m.num_batches_tracked) == n
    polys = list(pnn_ext.nn.poly_modules(model))
    assert [r["bound"] for r in records] == [m.bound for m in polys] and len(records) == 3
    # the same forward again (dropout in the same random state), in float64: each layer's input quantile
    seen = layer_inputs(model, x)
    for r, v, m in zip(records, seen, polys):
        q = float(torch.quantile(v, 0.99))
        assert r["quantile_abs_x"] == pytest.approx(q, rel=1e-4)
        assert m.bound * m.alpha ** 2 == pytest.approx(3.0 * q, rel=1e-4)
        assert float(v.max()) <= m.bound * m.alpha  # nothing beyond the penalty's start
    first = (x @ model[1].weight.detach().T).abs().double()
    assert polys[0].bound * 0.25 == pytest.approx(3.0 * float(torch.quantile(first, 0.99)), rel=1e-3)


def test_recalibration_measures_every_layer_before_moving_any():
    """sequential=False (--recalibrate-epoch): each layer's B comes from the inputs it sees
    with the B the network was trained at; the sequential pass instead measures layer 2
    behind an already-moved layer 1, whose inputs past its new B blow up (here: the
    quantile-based B of layer 1 leaves 1 % of its inputs outside the interval)."""
    x = torch.randn(512, 20, generator=torch.Generator().manual_seed(3))
    model = mlp()
    polys = list(pnn_ext.nn.poly_modules(model))
    seen = layer_inputs(model, x)
    together = calibrate(model, x, quantile=0.99, margin=0.25, sequential=False)  # B = q
    for r, v, m in zip(together, seen, polys):
        assert r["quantile_abs_x"] == pytest.approx(float(torch.quantile(v, 0.99)), rel=1e-4)
        assert m.bound == r["bound"] == pytest.approx(r["quantile_abs_x"], rel=1e-6)
    # BatchNorm's running statistics re-estimated through the moved polynomials (dropout as in the pass)
    probe = copy.deepcopy(model)
    bn_in = []
    probe[3].register_forward_pre_hook(lambda mod, a: bn_in.append(a[0].detach().double()))
    for m in pnn_ext.nn.poly_modules(probe):  # that pass clamps each polynomial's inputs to [-B, B]
        m.register_forward_pre_hook(lambda mod, a: (a[0].clamp(-mod.bound, mod.bound),))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        probe.train()(x)
    torch.testing.assert_close(model[3].running_mean.double(), bn_in[0].mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[3].running_var.double(), bn_in[0].var(0), rtol=1e-4, atol=1e-5)
    assert model[3].momentum == 0.1
    one_by_one = calibrate(mlp(), x, quantile=0.99, margin=0.25)
    assert one_by_one[0]["bound"] == pytest.approx(together[0]["bound"], rel=1e-6)
    assert one_by_one[1]["max_abs_x"] > 2 * together[1]["max_abs_x"]  # 26 against 9.7


def test_recalibration_keeps_batchnorm_statistics_finite():
    """A B far inside the inputs (margin 0.02: most inputs past B): the polynomials explode on
    them, but BatchNorm's statistics are re-estimated from inputs clamped to [-B, B], finite."""
    model = mlp()
    x = 5 * torch.randn(1024, 20, generator=torch.Generator().manual_seed(4))
    calibrate(model, x, quantile=0.999, margin=0.02, sequential=False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            assert torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all()
            assert m.running_var.max() < 1e6  # the bounded polynomial's outputs, not the explosion
            assert not torch.equal(m.running_var, torch.ones_like(m.running_var))  # re-estimated, not kept
    seen = []  # what an unclamped pass hands the BatchNorms
    probe = copy.deepcopy(model).train()
    for m in probe.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.register_forward_pre_hook(lambda mod, a: seen.append(float(a[0].abs().max())))
    with torch.no_grad():
        probe(x)
    assert max(seen) > 1e6


def test_non_finite_inputs_name_the_layer():
    model = mlp()
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    before = [m.bound for m in pnn_ext.nn.poly_modules(model)]
    for sequential in (True, False):
        with pytest.raises(ValueError, match=r"inputs of layer '2' are not finite"):
            calibrate(model, torch.randn(64, 20), quantile=0.999, margin=2.5, sequential=sequential)
        assert [m.bound for m in pnn_ext.nn.poly_modules(model)] == before


def test_dead_layer_gets_a_positive_bound():
    model = mlp()
    with torch.no_grad():
        model[1].weight.zero_()
    records = calibrate(model, torch.randn(64, 20), quantile=0.999, margin=4.0)
    assert records[0]["bound"] > 0 and records[0]["quantile_abs_x"] == 0.0


def test_config_accepts_auto_and_numbers_only():
    assert parse_config(["--bound", "auto"]).bound == "auto" and TrainConfig(bound="12").bound == 12.0
    for bad in ("abc", "-3", "0", "inf"):
        with pytest.raises(ValueError, match="bound must be a number > 0 or auto"):
            TrainConfig(bound=bad)
    with pytest.raises(ValueError, match="calibrate_quantile"):
        TrainConfig(calibrate_quantile=1.5)


def test_auto_run_records_bounds_and_folds_unchanged(tmp_path):
    out = tmp_path / "auto"
    rc = train_main(["--dataset", "digits", "--model", "mlp", "--hidden", "32,16", "--degree", "8", "--bound", "auto",
                     "--epochs", "1", "--max-steps", "5", "--no-progress", "--no-plots", "--out-dir", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["bound"] == "auto" and len(s["bounds"]) == 2
    assert [r["bound"] for r in s["calibration"]] == s["bounds"]
    assert all(0.25 * r["bound"] == pytest.approx(2.5 * r["quantile_abs_x"]) for r in s["calibration"])  # alpha 0.5
    assert len(set(s["bounds"])) == 2 and 35.0 not in s["bounds"]   # per layer, not the preset
    run = load_run(str(out))
    assert [m.bound for m in pnn_ext.nn.poly_modules(run.model)] == s["bounds"]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert [v["bound"] for k, v in ck["model"].items() if k.endswith("_extra_state")] == s["bounds"]
    he = fold(run.model, run.data.in_shape)
    assert [layer.bound for layer in he.layers if hasattr(layer, "coeffs")] == s["bounds"]
    x = run.load_data().test.tensors[0][:64]
    with torch.no_grad():
        ref = run.model.double()(x.double()).numpy()
    np.testing.assert_allclose(he(x.numpy()), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("method", ["lstsq", "remez"])
def test_calibrated_layers_are_fitted_by_the_runs_fit_method(method):
    """--bound auto with --fit-method remez refits by Remez at the calibrated B (it refitted by
    least squares before), so the minimax fit asked for is the one trained."""
    model = mlp()
    calibrate(model, torch.randn(256, 20, generator=torch.Generator().manual_seed(2)), 0.99, 2.5, method=method)
    for m in pnn_ext.nn.poly_modules(model):
        want = fitting.fit("relu", 22, m.bound, method=method).coeffs
        np.testing.assert_allclose(m.coeffs.double().numpy(), want, rtol=1e-6, atol=1e-6)


def test_input_weight_is_a_density_with_a_uniform_floor():
    from pnn_ext.train.calibrate import WEIGHT_FLOOR, input_weight
    bound = 10.0
    x = torch.cat([torch.full((300,), 1.05), torch.full((100,), -2.95), torch.tensor([50.0, -11.0])])  # 2 outside
    w = input_weight(x, bound)
    grid = np.linspace(-bound, bound, 200001)
    assert np.mean(w(grid)) * 2 * bound == pytest.approx(1.0, rel=1e-3)  # integrates to 1 over [-B, B]
    floor = WEIGHT_FLOOR / (2 * bound)
    assert w(np.array([5.0]))[0] == pytest.approx(floor)  # no input there: the floor alone
    bin_width = 2 * bound / 200
    assert w(np.array([1.05]))[0] == pytest.approx(floor + (1 - WEIGHT_FLOOR) * 0.75 / bin_width)
    assert w(np.array([-2.95]))[0] == pytest.approx(floor + (1 - WEIGHT_FLOOR) * 0.25 / bin_width)
    empty = input_weight(torch.tensor([20.0]), bound)  # nothing inside: uniform
    assert empty(np.array([0.0]))[0] == pytest.approx(1 / (2 * bound))


def test_weighted_calibration_keeps_b_and_fits_to_the_measured_inputs():
    from pnn_ext.train.calibrate import input_weight
    model = mlp()
    x = torch.randn(256, 20, generator=torch.Generator().manual_seed(3))
    polys = list(pnn_ext.nn.poly_modules(model))
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach().flatten().clone())) for m in polys]
    records = calibrate(model, x, 0.999, 2.5, auto_bound=False, weighted=True)
    for h in hooks:
        h.remove()
    assert [r["bound"] for r in records] == [47.0] * 3 and all(r["weighted"] for r in records)
    for m, v in zip(polys, seen):
        assert m.bound == 47.0
        want = fitting.fit("relu", 22, 47.0, weight=input_weight(v, 47.0)).coeffs
        np.testing.assert_allclose(m.coeffs.double().numpy(), want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(want, fitting.fit("relu", 22, 47.0).coeffs, atol=1e-3)  # the weight mattered


def test_fit_weight_setting_is_checked_and_fixed_at_resume(tmp_path, capsys):
    with pytest.raises(ValueError, match="fit_weight must be one of"):
        TrainConfig(out_dir=str(tmp_path), fit_weight="data")
    with pytest.raises(ValueError, match="fit_weight inputs .* needs fit_method lstsq"):
        TrainConfig(out_dir=str(tmp_path), fit_weight="inputs", fit_method="remez")
    out = str(tmp_path / "r")
    train_main(["--epochs", "1", "--max-steps", "2", "--fit-weight", "inputs", "--out-dir", out, "--no-progress",
                "--no-plots"])
    summary = json.loads(open(f"{out}/summary.json").read())
    assert [r["weighted"] for r in summary["calibration"]] == [True] * 3 and summary["bounds"] == [47.0] * 3
    capsys.readouterr()
    assert train_main(["--epochs", "2", "--resume", "last", "--allow-changes", "--fit-weight", "uniform",
                       "--out-dir", out, "--no-progress", "--no-plots"]) == 2
    assert "fit_weight 'inputs' -> 'uniform'" in capsys.readouterr().err


def test_recalibration_after_warm_up_sets_b_from_the_trained_layers(tmp_path):
    """--recalibrate-epoch 1 (the default at the preset B): epoch 1 trains at the preset B and
    alpha, then each layer's B is recalibrate_margin x the quantile of the inputs the trained
    layers see / recalibrate_alpha^2, alpha recalibrate_alpha, the polynomial refitted there;
    a resume continues with those B and alpha and does not measure again."""
    from testing import run
    summary, trainer = run(tmp_path, epochs=2, recalibrate_margin=2.0)
    records = summary["recalibration"]
    assert len(records) == 3 and summary["calibration"] is None
    first, second = (r["layer_bound"] for r in trainer.history)
    assert first == [47.0] * 3
    assert second == [r["bound"] for r in records] == summary["bounds"] != first
    for r, m in zip(records, trainer.polys):
        assert m.alpha == r["alpha"] == 0.9  # the preset's 0.5 before
        assert r["bound"] == pytest.approx(2.0 * r["quantile_abs_x"] / 0.9 ** 2)
        np.testing.assert_allclose(m.coeffs.double().numpy(), fitting.fit("relu", 22, r["bound"]).coeffs,
                                   rtol=1e-5, atol=1e-6)
    assert summary["max_abs_x_over_b"] == pytest.approx(max(
        x / b for row in trainer.history for x, b in zip(row["layer_max_abs_x"], row["layer_bound"])))
    out = str(tmp_path / "run")
    assert train_main(["--epochs", "3", "--recalibrate-margin", "2.0", "--batch-size",
                       "64", "--resume", "last", "--out-dir", out, "--no-progress", "--no-plots"]) == 0
    resumed = json.loads(open(f"{out}/summary.json").read())
    assert resumed["recalibration"] == records and resumed["bounds"] == summary["bounds"]
    assert resumed["epochs_completed"] == 3
    resumed_model, _, _ = load_run(out)
    assert [m.alpha for m in pnn_ext.nn.poly_modules(resumed_model)] == [0.9] * 3


def test_recalibration_is_skipped_where_the_warm_up_reached_the_penalty(tmp_path):
    """alpha 0.05: the penalty starts at 2.35 at B = 47, the warm-up's inputs go well past it
    and the boundary loss outweighs 5 % of the cross-entropy, so B and alpha stay, each
    record says why, and the run trains on at the preset."""
    from testing import run
    summary, trainer = run(tmp_path, epochs=2, alpha=0.05)
    records = summary["recalibration"]
    assert len(records) == 3 and all(r["skipped"] and r["warmup_boundary_share"] > 0.05 for r in records)
    assert summary["bounds"] == [47.0] * 3 and [m.alpha for m in trainer.polys] == [0.05] * 3
    assert [r["layer_bound"] for r in trainer.history] == [[47.0] * 3] * 2


def test_recalibration_is_the_default_where_b_is_not_given():
    assert TrainConfig().recalibrate_after() == 1 and TrainConfig(bound="auto").recalibrate_after() == 1
    assert TrainConfig().recalibrate_epoch is None  # unresolved in the settings: a resume for more epochs matches
    assert TrainConfig(epochs=1).recalibrate_after() == 1  # a run that ends first never gets there
    assert TrainConfig(bound="12").recalibrate_after() == 0 and TrainConfig(activation="relu").recalibrate_after() == 0
    assert TrainConfig(recalibrate_epoch=0).recalibrate_after() == 0
    assert TrainConfig(bound="12", recalibrate_epoch=2, epochs=3).recalibrate_after() == 2
    assert TrainConfig().recalibrated_alpha() == 0.9 and TrainConfig(alpha=0.25).recalibrated_alpha() == 0.25
    assert TrainConfig(alpha=0.25, recalibrate_alpha=0.8).recalibrated_alpha() == 0.8
    for name in ("recalibrate_margin", "recalibrate_alpha"):
        with pytest.raises(ValueError, match=f"{name} must be > 0"):
            TrainConfig(**{name: 0.0})
    with pytest.raises(ValueError, match="recalibrate_epoch must be >= 0"):
        TrainConfig(recalibrate_epoch=-1)


def test_recalibrate_epoch_must_fall_inside_the_run(tmp_path):
    with pytest.raises(ValueError, match=r"recalibrate_epoch \(3\) must be below epochs \(3\)"):
        TrainConfig(out_dir=str(tmp_path), epochs=3, recalibrate_epoch=3)
    with pytest.raises(ValueError, match="recalibrate_epoch must be >= 0"):
        TrainConfig(out_dir=str(tmp_path), recalibrate_epoch=-1)
