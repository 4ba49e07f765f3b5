"""The Trainer's methods one at a time on a tiny data set (24 samples of 4 features, 3
classes, an MLP of width 5): the exact AdamW step of train_step and what a skipped step
leaves, train_epoch's means and guard counting on scripted steps, the evaluation and
schedule calls, the checkpoint content, and run()'s bookkeeping on scripted epochs.
(tests/test_loop.py trains real models end to end.)"""
# Over 400 lines: one method of Trainer per section, each with its scripted doubles; the file is
# also the whole per-mutant test set of pnn_ext/train/loop.py in scripts/mutation.py.
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import pnn_ext
from pnn_ext.errors import Terminated
from pnn_ext.train import artifacts, checkpoint, finetune, loop
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.data import Data, DataSpec
from pnn_ext.train.distributed import Dist
from pnn_ext.train.guard import NonFinite, Rollback


def _data(n_train=24, augment=False) -> Data:
    g = torch.Generator().manual_seed(0)

    def part(n):
        return TensorDataset(torch.randn(n, 4, generator=g) * 3, torch.randint(0, 3, (n,), generator=g))
    return Data("digits", "features", (4,), 3, part(n_train), part(8), part(8), augment)


def _trainer(tmp_path, data=None, command=None, **kw) -> loop.Trainer:
    cfg = TrainConfig(**{"dataset": "digits", "model": "mlp", "hidden": "5", "degree": 2, "batch_size": 8,
                         "epochs": 2, "progress": False, "plots": False, "out_dir": str(tmp_path / "run"),
                         "recalibrate_epoch": 0, **kw})  # the loop's bookkeeping, not the recalibration
    return loop.Trainer(cfg, data=data or _data(), command=command)


# ---------------------------------------------------------------- construction

def test_a_new_trainer_starts_at_zero(tmp_path):
    t = _trainer(tmp_path)
    assert (t.epoch, t.step, t.history, t.nonfinite, t.rollbacks, t.lr_scale) == (0, 0, [], 0, 0, 1.0)
    assert (t.divergence, t.best_val, t.stop_test_acc, t.interrupted_by, t.changes) == (None, -1.0, None, None, [])
    assert (t.init_info, t.calibration, t.progressive, t.resume_ck, t.command) == (None, None, None, None, None)
    assert t.out == str(tmp_path / "run") and t.net is t.model and t.device.type == "cpu"
    assert t.polys == list(pnn_ext.nn.poly_modules(t.model)) and len(t.polys) == 1
    bn = t.model[3]                                        # Flatten, Linear, PolyActivation, BatchNorm1d, Linear
    assert isinstance(bn, torch.nn.BatchNorm1d)
    assert [b.data_ptr() for b in t.bn_buffers] == [b.data_ptr() for b in bn.buffers()]
    assert [b.data_ptr() for b in t.bn_float] == [bn.running_mean.data_ptr(), bn.running_var.data_ptr()]
    loader = t.train_loader
    assert (loader.batch_size, loader.drop_last, loader.pin_memory, len(loader)) == (8, True, False, 3)
    assert (t.sampler.num_replicas, t.sampler.rank, t.sampler.shuffle, t.sampler.seed) == (1, 0, True, 0)
    assert [g["name"] for g in t.optimizer.param_groups] == ["weights", "bn_and_bias"]
    assert isinstance(t.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    # a training set no larger than a batch keeps its only batch
    small = _trainer(tmp_path, _data(8), out_dir=str(tmp_path / "small"), command="pnn-train x")
    assert small.train_loader.drop_last is False and len(small.train_loader) == 1 and small.command == "pnn-train x"
    prog = _trainer(tmp_path, out_dir=str(tmp_path / "p"), replace="progressive", replace_epochs=1.0)
    assert isinstance(prog.progressive, finetune.Progressive)


# ---------------------------------------------------------------- one step

def _adamw_expected(t, x, y, lam, with_boundary):
    """The parameters after one AdamW step (its first: m/sqrt(v) = g/|g|), and the step's values."""
    ref = copy.deepcopy(t.model).train()
    logits = ref(x)
    ce = F.cross_entropy(logits, y)
    bl = pnn_ext.boundary_loss(ref)
    loss = ce + lam * bl if with_boundary else ce
    loss.backward()
    lr, eps = t.cfg.lr, 1e-8
    decay = {id(p): g["weight_decay"] for g in t.optimizer.param_groups for p in g["params"]}
    by_id = dict(zip(map(id, t.model.parameters()), ref.parameters()))
    want = {}
    for p in t.model.parameters():
        r = by_id[id(p)]
        want[id(p)] = r.detach() * (1 - lr * decay[id(p)]) - lr * r.grad / (r.grad.abs() + eps)
    values = [float(loss), float(ce), float(bl), float((logits.argmax(1) == y).sum())]
    return want, values


@pytest.mark.parametrize("with_boundary", [True, False])
def test_train_step_takes_the_adamw_step_of_the_objective(tmp_path, with_boundary):
    t = _trainer(tmp_path, lr=0.01, weight_decay=0.1, lam=2.0, boundary_loss=with_boundary, clip="none")
    x, y = t.data.train[:8]
    want, values = _adamw_expected(t, x, y, 2.0, with_boundary)
    got = t.train_step(x, y)
    assert got == pytest.approx(values, rel=1e-5) and len(got) == 4 and t.step == 1
    for p in t.model.parameters():
        torch.testing.assert_close(p.detach(), want[id(p)], rtol=1e-5, atol=1e-7)


def test_train_step_clips_as_configured(tmp_path, monkeypatch):
    t = _trainer(tmp_path, clip="all", clip_norm=0.5)
    seen = []
    real = loop.clip_gradients

    def spy(model, mode, max_norm, device):
        seen.append((model, mode, max_norm, device))
        return real(model, mode, max_norm, device)
    monkeypatch.setattr(loop, "clip_gradients", spy)
    x, y = t.data.train[:8]
    t.train_step(x, y)
    assert seen == [(t.model, "all", 0.5, t.device)]


def test_a_nonfinite_step_is_skipped_and_leaves_nothing_behind(tmp_path):
    t = _trainer(tmp_path)
    x, y = t.data.train[:8]
    before = {k: v.clone() for k, v in t.model.state_dict().items() if torch.is_tensor(v)}
    bad = x.clone()
    bad[0, 0] = math.nan
    assert t.train_step(bad, y) is None
    assert t.step == 0 and all(p.grad is None for p in t.model.parameters())
    for k, v in t.model.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k]), k            # BatchNorm statistics and counter put back


def test_a_nonfinite_batchnorm_statistic_skips_the_step(tmp_path):
    """A finite loss whose forward left inf in a running statistic is a bad step too."""
    t = _trainer(tmp_path)
    x, y = t.data.train[:8]
    bn = t.model[3]
    before = bn.running_var.clone()

    def poison(module, args, out):
        module.running_var.data[0] = math.inf             # behind autograd's back, as a kernel would
    handle = bn.register_forward_hook(poison)
    assert t.train_step(x, y) is None and t.step == 0
    assert torch.equal(bn.running_var, before)
    handle.remove()
    assert t.train_step(x, y) is not None and t.step == 1
    assert t.train_step(x, y) is not None and t.step == 2


@pytest.mark.parametrize("layer", [1, 3])               # a Linear's weight, a BatchNorm's weight
def test_a_nonfinite_gradient_with_a_finite_loss_skips_the_step(tmp_path, layer):
    t = _trainer(tmp_path)
    x, y = t.data.train[:8]
    before = [p.detach().clone() for p in t.model.parameters()]
    t.model[layer].weight.register_hook(lambda g: g * math.inf)
    assert t.train_step(x, y) is None and t.step == 0
    assert all(torch.equal(p, b) for p, b in zip(t.model.parameters(), before))


# ---------------------------------------------------------------- one epoch, on scripted steps

def _script(t, outputs, stats=None):
    """Make train_step return ``outputs`` in turn (a list [loss, ce, boundary, correct] or None),
    setting the polynomial layer's range_stats to ``stats`` of the same step."""
    calls = []

    def step(x, y):
        i = len(calls)
        calls.append((x.clone(), y.clone()))
        if stats is not None:
            t.polys[0].range_stats = torch.tensor(stats[i])
        out = outputs[i]
        if out is not None:
            t.step += 1
        return out
    t.train_step = step
    return calls


def test_train_epoch_means_over_its_batches(tmp_path):
    t = _trainer(tmp_path)
    calls = _script(t, [[1.0, 0.5, 0.25, 3.0], [2.0, 1.5, 0.5, 4.0], [3.0, 2.5, 0.75, 8.0]],
                    stats=[[2.0, 0.5], [7.0, 0.25], [4.0, 0.0]])
    row = t.train_epoch()
    assert len(calls) == 3 and all(len(y) == 8 for _, y in calls)
    assert {k: row[k] for k in ("train_loss", "train_ce", "train_boundary", "train_acc")} == \
        pytest.approx({"train_loss": 2.0, "train_ce": 1.5, "train_boundary": 0.5, "train_acc": 15 / 24})
    assert row["layer_max_abs_x"] == [7.0] and row["layer_frac_outside_b"] == pytest.approx([0.25])
    assert 0 <= row["epoch_time_s"] < 60 and t.net.training
    # the epoch's order is the sampler's for this epoch: every training sample once
    xs = torch.cat([x for x, _ in calls])
    assert sorted(xs[:, 0].tolist()) == sorted(t.data.train.tensors[0][:, 0].tolist())
    t.epoch = 1
    calls2 = _script(t, [[0.0, 0.0, 0.0, 0.0]] * 3)
    t.train_epoch()
    assert not torch.equal(torch.cat([x for x, _ in calls2]), xs)       # another epoch, another order


def test_train_epoch_without_range_statistics_and_with_max_steps(tmp_path):
    t = _trainer(tmp_path, max_steps=2)
    t.polys[0].range_stats = None
    calls = _script(t, [[1.0, 1.0, 0.0, 8.0], [3.0, 3.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    row = t.train_epoch()                                 # range_stats None: counted as zeros
    assert len(calls) == 2 and row["train_loss"] == 2.0 and row["train_acc"] == 0.5
    assert row["layer_max_abs_x"] == [0.0] and row["layer_frac_outside_b"] == [0.0]


def test_train_epoch_counts_skipped_steps_and_rolls_back_after_patience(tmp_path):
    t = _trainer(tmp_path, guard_patience=2)
    ok = [1.0, 1.0, 0.0, 1.0]
    _script(t, [ok, None, ok])                            # one skipped step between good ones: goes on
    row = t.train_epoch()
    assert t.nonfinite == 1 and row["train_loss"] == 1.0 and row["train_acc"] == 2 / 16
    _script(t, [None, ok, ok])                            # the epoch starts with none in a row
    t.train_epoch()
    assert t.nonfinite == 2
    t.step = 5
    _script(t, [ok, None, None])
    with pytest.raises(Rollback) as e:
        t.train_epoch()
    assert e.value.args[0] == {"epoch": 1, "step": 6, "nonfinite_in_a_row": 2} and t.nonfinite == 4


def test_train_epoch_with_the_guard_off_stops_at_the_first_skipped_step(tmp_path):
    t = _trainer(tmp_path, guard=False)
    t.epoch = 1
    _script(t, [[1.0, 1.0, 0.0, 1.0], None])
    with pytest.raises(NonFinite):
        t.train_epoch()
    assert t.divergence == {"epoch": 2, "step": 1, "nonfinite_in_a_row": 1,
                            "reason": "non-finite loss, gradient or BatchNorm statistic (guard off)"}
    assert t.nonfinite == 1


def test_train_epoch_augments_with_a_per_epoch_generator(tmp_path, monkeypatch):
    t = _trainer(tmp_path, _data(augment=True), seed=3)
    t.epoch = 2
    seeds = []

    def augment(x, gen):
        seeds.append(gen.initial_seed())
        return x + 1
    monkeypatch.setattr(loop, "augment_batch", augment)
    calls = _script(t, [[0.0, 0.0, 0.0, 0.0]] * 3)
    t.train_epoch()
    assert seeds == [3 * 1_000_003 + 2 * 7919] * 3
    xs = torch.cat([x for x, _ in calls]) - 1
    assert sorted(xs[:, 0].tolist()) == pytest.approx(sorted(t.data.train.tensors[0][:, 0].tolist()))


def test_train_epoch_of_another_rank(tmp_path, monkeypatch):
    """Rank 1 of 2: its own augmentation stream (seed + rank) and no bar even when asked."""
    t = _trainer(tmp_path, _data(augment=True), seed=3, progress=True)
    t.dist = Dist(world=2, rank=1)
    reduced = []

    def reduce_(tensor, d, op="sum"):
        reduced.append((tensor.dtype, tensor.tolist(), op, d))
        return tensor
    monkeypatch.setattr(loop.distributed, "reduce_", reduce_)
    seeds, bars = [], []
    monkeypatch.setattr(loop, "augment_batch", lambda x, gen: seeds.append(gen.initial_seed()) or x)
    monkeypatch.setattr(loop.artifacts, "progress_bar", lambda it, enabled, desc: bars.append(enabled) or it)
    _script(t, [[0.0, 0.0, 0.0, 0.0]] * 3)
    t.train_epoch()
    assert seeds == [3 * 1_000_003 + 1] * 3 and bars == [False]
    # sums, samples and batches added over ranks in float64; the largest |x| the largest over ranks
    (d1, totals, op1, _), (d2, _, op2, _), (d3, _, op3, _) = reduced
    assert (d1, totals, op1) == (torch.float64, [0.0, 0.0, 0.0, 0.0, 24.0, 3.0], "sum")
    assert (d2, op2, d3, op3) == (torch.float32, "max", torch.float32, "sum") and all(r[3] is t.dist for r in reduced)


def test_train_epoch_logs_each_activation_replaced(tmp_path, capsys):
    t = _trainer(tmp_path)
    steps = []

    class Schedule:
        def apply(self, step):
            steps.append(step)
            return ["2"] if step == 1 else []
    t.progressive = Schedule()
    _script(t, [[0.0, 0.0, 0.0, 0.0]] * 3)
    t.train_epoch()
    assert steps == [0, 1, 2] and capsys.readouterr().out == "[replace] step 1: activation 2 is polynomial now\n"


def test_train_epoch_shows_its_running_means_on_the_bar(tmp_path, monkeypatch):
    t = _trainer(tmp_path, progress=True)
    bars = []

    class Bar:
        def __init__(self, iterable, enabled, desc):
            self.iterable, self.enabled, self.desc, self.posts = iterable, enabled, desc, []
            bars.append(self)

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, refresh, **kw):
            self.posts.append((kw, refresh))
    monkeypatch.setattr(loop.artifacts, "progress_bar", Bar)
    _script(t, [[1.0, 0.5, 0.001, 6.0], [2.0, 1.5, 0.003, 2.0], [0.0, 0.0, 0.0, 0.0]])
    t.epoch = 1
    t.train_epoch()
    (bar,) = bars
    assert bar.enabled is True and bar.desc == "epoch 2/2" and bar.iterable is t.train_loader
    assert bar.posts[1] == ({"loss": "1.5000", "ce": "1.0000", "boundary": "2.00e-03", "acc": "50.00%"}, False)
    assert len(bar.posts) == 3


# ---------------------------------------------------------------- evaluation and schedules

def test_evaluate_uses_batches_of_at_least_256(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(loop, "evaluate", lambda *a: seen.append(a) or (0.5, 0.25))
    t = _trainer(tmp_path)
    assert t.evaluate("data") == (0.5, 0.25)
    assert seen == [(t.model, "data", t.device, 256, False, False)]
    t.cfg = TrainConfig(**{**t.cfg.to_dict(), "batch_size": 300})
    t.evaluate("data")
    assert seen[-1][3] == 300


@pytest.mark.parametrize("scheduler", ["plateau", "cosine", "none"])
def test_evaluate_epoch_steps_the_schedule(tmp_path, scheduler):
    t = _trainer(tmp_path, scheduler=scheduler)
    results = {id(t.data.val): (0.75, 0.5), id(t.data.test): (0.5, 0.625)}
    t.evaluate = lambda d: results[id(d)]
    steps = []
    if t.scheduler is not None:
        t.scheduler.step = lambda *a: steps.append(a)
    t.epoch, t.step, t.nonfinite = 3, 17, 2
    t.optimizer.param_groups[0]["lr"] = 0.125
    row = t._evaluate_epoch({"train_loss": 9.0})
    assert row == {"epoch": 3, "step": 17, "lr": 0.125, "val_loss": 0.75, "val_acc": 0.5, "test_loss": 0.5,
                   "test_acc": 0.625, "nonfinite_steps": 2}
    assert steps == {"plateau": [(0.75,)], "cosine": [()], "none": []}[scheduler]
    if scheduler == "plateau":                            # no validation loss: the training loss drives it
        results[id(t.data.val)] = (math.nan, math.nan)
        t._evaluate_epoch({"train_loss": 9.0})
        assert steps[-1] == (9.0,)


# ---------------------------------------------------------------- checkpoints and logs

def test_state_save_and_log(tmp_path, capsys):
    t = _trainer(tmp_path, command="cmd")
    t.epoch, t.step, t.history, t.best_val, t.lr_scale, t.nonfinite, t.rollbacks = 2, 9, [{"a": 1}], 0.5, 0.25, 3, 1
    t.changes = [{"epoch": 1}]
    s = t.state()
    assert set(s) == {"format", "epoch", "step", "model", "optimizer", "scheduler", "rng", "history", "best_val",
                      "lr_scale", "nonfinite", "rollbacks", "config", "data", "changes", "recalibration"}
    assert (s["format"], s["epoch"], s["step"], s["history"], s["best_val"], s["lr_scale"], s["nonfinite"],
            s["rollbacks"], s["changes"]) == (checkpoint.FORMAT, 2, 9, [{"a": 1}], 0.5, 0.25, 3, 1, [{"epoch": 1}])
    assert s["recalibration"] is None                    # no --recalibrate-epoch
    assert s["config"] == t.cfg.to_dict() and s["scheduler"] == t.scheduler.state_dict()
    assert s["data"] == {"name": "digits", "layout": "features", "in_shape": (4,), "num_classes": 3}
    assert s["model"].keys() == t.model.state_dict().keys() and s["optimizer"] == t.optimizer.state_dict()
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    t.save(best=False)
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]
    t.save(best=True)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt"]
    assert checkpoint.load(str(run / "best.pt"))["epoch"] == 2
    t.log("hello")
    assert capsys.readouterr().out == "hello\n"
    t.dist = Dist(world=2, rank=1)                        # another rank writes and prints nothing
    t.epoch = 5
    t.save(best=True)
    t.log("quiet")
    assert checkpoint.load(str(run / "last.pt"))["epoch"] == 2 and capsys.readouterr().out == ""
    scheduler_free = _trainer(tmp_path, out_dir=str(tmp_path / "n"), scheduler="none")
    assert scheduler_free.state()["scheduler"] is None


# ---------------------------------------------------------------- run(), on scripted epochs

def _row(loss=1.0):
    return {"train_loss": loss, "train_ce": loss, "train_boundary": 0.0, "train_acc": 0.5, "epoch_time_s": 0.1,
            "layer_max_abs_x": [6.0], "layer_frac_outside_b": [0.0]}


def _script_epochs(t, vals, tests=None):
    """train_epoch returns a fixed row (or raises what ``vals`` holds); _evaluate_epoch the given val_acc."""
    seq = list(vals)
    done = []

    def train_epoch():
        v = seq[len(done)]
        done.append(v)
        if isinstance(v, BaseException):
            raise v
        return _row()

    def evaluate_epoch(row):
        assert row == _row()                              # the epoch's own training row
        v = done[-1]
        return {"epoch": t.epoch, "step": t.step, "lr": 0.001, "val_loss": 1.0, "val_acc": v, "test_loss": 1.0,
                "test_acc": (tests or {}).get(len(done), 0.5), "nonfinite_steps": 0}
    t.train_epoch, t._evaluate_epoch = train_epoch, evaluate_epoch
    return done


def test_run_keeps_the_best_epoch_and_writes_its_files(tmp_path, capsys):
    t = _trainer(tmp_path, epochs=3, command="pnn-train --x")
    _script_epochs(t, [0.5, 0.25, 0.75], tests={1: 0.4, 2: 0.3, 3: 0.6})
    summary = t.run()
    run = tmp_path / "run"
    assert summary["status"] == "completed" and t.epoch == 3 and len(t.history) == 3
    assert t.best_val == 0.75 and checkpoint.load(str(run / "best.pt"))["epoch"] == 3
    assert checkpoint.load(str(run / "last.pt"))["epoch"] == 3
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "completed" and saved["command"] == "pnn-train --x"
    assert (saved["epochs_completed"], saved["best_val_acc"], saved["final_test_acc"]) == (3, 0.75, 0.6)
    assert saved["parameters"] == sum(p.numel() for p in t.model.parameters()) and saved["poly_layers"] == 1
    assert saved["bounds"] == [12.0] and saved["max_abs_x_over_b"] == 0.5 and saved["world_size"] == 1
    assert saved["config"] == t.cfg.to_dict() and saved["total_time_s"] >= 0 and saved["rollbacks"] == 0
    assert saved["replacement"] is None and saved["init_from"] is None and saved["calibration"] is None
    lines = capsys.readouterr().out.splitlines()
    assert lines == [artifacts.epoch_line(r, 3) for r in t.history]
    assert not (run / "curves.png").exists()


def test_run_best_checkpoint_follows_the_validation_accuracy(tmp_path):
    t = _trainer(tmp_path, epochs=3)
    _script_epochs(t, [0.5, 0.75, 0.25])
    t.run()
    assert t.best_val == 0.75 and checkpoint.load(str(tmp_path / "run" / "best.pt"))["epoch"] == 2
    t = _trainer(tmp_path, out_dir=str(tmp_path / "tie"), epochs=2)
    _script_epochs(t, [0.5, 0.5])                         # a tie is no improvement
    t.run()
    assert checkpoint.load(str(tmp_path / "tie" / "best.pt"))["epoch"] == 1
    t = _trainer(tmp_path, out_dir=str(tmp_path / "nan"), epochs=2)
    _script_epochs(t, [math.nan, 0.5])                    # no validation accuracy: every epoch is the best
    t.run()
    assert t.best_val == 0.5 and checkpoint.load(str(tmp_path / "nan" / "best.pt"))["epoch"] == 2
    t = _trainer(tmp_path, out_dir=str(tmp_path / "nan2"), epochs=2)
    _script_epochs(t, [0.5, math.nan])
    t.run()
    assert t.best_val == 0.5 and checkpoint.load(str(tmp_path / "nan2" / "best.pt"))["epoch"] == 2


def test_run_saves_no_best_while_an_activation_is_a_stand_in(tmp_path):
    t = _trainer(tmp_path, epochs=2, replace="progressive", replace_epochs=1.0)
    done = iter([False, True])
    t.progressive.done = lambda: next(done)
    t.progressive.schedule = lambda: {"s": 1}
    _script_epochs(t, [0.75, 0.5])
    summary = t.run()
    assert checkpoint.load(str(tmp_path / "run" / "best.pt"))["epoch"] == 2 and t.best_val == 0.5
    assert summary["replacement"] == {"s": 1}


def test_run_stops_at_max_steps_and_writes_plots(tmp_path, monkeypatch):
    plots = []
    monkeypatch.setattr(loop.artifacts, "write_plots", lambda out, history, polys: plots.append((out, len(history),
                                                                                                 polys)))
    t = _trainer(tmp_path, epochs=5, max_steps=2, plots=True)
    done = _script_epochs(t, [0.5] * 5)
    orig = t.train_epoch

    def two_steps_per_epoch():
        t.step += 1
        return orig()
    t.train_epoch = two_steps_per_epoch
    t.run()
    assert len(done) == 2 and t.epoch == 2
    assert plots == [(t.out, 2, t.polys)]


def test_run_rolls_back_on_the_guards_signal(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "rollback", lambda trainer, where: calls.append(("rollback", where, trainer)))
    monkeypatch.setattr(loop, "rolled_back_on_state", lambda trainer: calls.append(("state", trainer.epoch)) and False)
    t = _trainer(tmp_path, epochs=1)
    _script_epochs(t, [Rollback({"epoch": 1}), 0.5])
    assert t.run()["status"] == "completed"
    assert calls == [("rollback", {"epoch": 1}, t), ("state", 0)] and t.epoch == 1
    flips = iter([True, False])
    monkeypatch.setattr(loop, "rolled_back_on_state", lambda trainer: next(flips))
    t = _trainer(tmp_path, out_dir=str(tmp_path / "b"), epochs=1)
    done = _script_epochs(t, [0.5, 0.25])
    t.run()
    assert len(done) == 2 and t.epoch == 1 and len(t.history) == 1   # the rolled-back epoch does not count


@pytest.mark.parametrize("error, status, by", [(KeyboardInterrupt(), "interrupted", "SIGINT"),
                                               (Terminated(), "interrupted", "SIGTERM"),
                                               (RuntimeError("boom"), "failed", None)])
def test_run_records_how_it_ended(tmp_path, error, status, by):
    t = _trainer(tmp_path)
    _script_epochs(t, [0.5, error])
    with pytest.raises(type(error)):
        t.run()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == status and saved["interrupted_by"] == by and saved["epochs_completed"] == 1
    assert t.interrupted_by == by


def test_run_that_diverges_stops_with_its_record(tmp_path, monkeypatch):
    stopped = []
    monkeypatch.setattr(loop, "stop_diverged", lambda trainer: stopped.append(trainer))
    t = _trainer(tmp_path)
    _script_epochs(t, [0.5, NonFinite()])
    t.divergence = {"epoch": 2, "step": 3, "reason": "r"}
    summary = t.run()
    assert summary["status"] == "diverged" and stopped == [t] and summary["diverged_at"] == t.divergence


def test_run_overwrites_or_resumes(tmp_path, monkeypatch):
    t = _trainer(tmp_path, epochs=1)
    _script_epochs(t, [0.5])
    t.run()
    (tmp_path / "run" / "extra.txt").write_text("kept")
    cleared = []
    real_clear = loop.artifacts.clear
    monkeypatch.setattr(loop.artifacts, "clear", lambda out: cleared.append(out) or real_clear(out))
    t = _trainer(tmp_path, epochs=1, overwrite=True)
    _script_epochs(t, [0.5])
    t.run()
    assert cleared == [t.out]
    resumed = []
    monkeypatch.setattr(loop, "resume", lambda trainer: resumed.append(trainer))
    t = _trainer(tmp_path, epochs=1, resume="last")
    saves = []
    t.save = lambda best: saves.append(best)
    _script_epochs(t, [0.5])
    t.run()
    assert resumed == [t] and saves == [True] and cleared == [t.out]    # the epoch's, no epoch-0 save over it
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "curves.png").write_text("someone else's")
    fresh = _trainer(tmp_path, out_dir=str(tmp_path / "fresh"), epochs=0)
    fresh.run()
    assert checkpoint.load(str(tmp_path / "fresh" / "last.pt"))["epoch"] == 0   # the base for an early rollback
    assert not (tmp_path / "fresh" / "best.pt").exists()                      # epoch 0 is no best
    assert (tmp_path / "fresh" / "curves.png").exists()                       # a new run clears nothing


def test_initial_weights_and_calibration_reach_the_model(tmp_path, monkeypatch):
    src = _trainer(tmp_path, out_dir=str(tmp_path / "src"))
    with torch.no_grad():
        src.model[1].weight.mul_(-2.0)                    # weights no fresh initialisation has
    (tmp_path / "src").mkdir(exist_ok=True)
    src.save(best=False)
    t = _trainer(tmp_path, init_from=str(tmp_path / "src" / "last.pt"))
    assert torch.equal(t.model[1].weight, src.model[1].weight) and t.init_info["path"].endswith("last.pt")
    calls = []
    monkeypatch.setattr(loop, "calibrate_run", lambda *a: calls.append(a) or [{"layer": "2"}])
    t = _trainer(tmp_path, out_dir=str(tmp_path / "auto"), bound="auto")
    assert t.calibration == [{"layer": "2"}] and len(calls) == 1
    model, train_set, cfg, device = calls[0]
    assert model is t.model and train_set is t.data.train and cfg is t.cfg and device == t.device


def test_summary_records_the_counters(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.artifacts, "environment", lambda device: {"device": str(device)})
    t = _trainer(tmp_path, command="c")
    t.stop_test_acc, t.nonfinite, t.rollbacks, t.lr_scale, t.step, t.epoch = 0.25, 4, 1, 0.5, 17, 0
    t.changes, t.calibration, t.init_info = [{"epoch": 1}], [{"layer": "2"}], {"path": "x"}
    t.divergence, t.interrupted_by = {"epoch": 1, "step": 2, "reason": "r"}, "SIGINT"
    s = t._summary("diverged", 1.5)
    assert s["status"] == "diverged" and s["total_time_s"] == 1.5
    assert {k: s[k] for k in ("test_acc_at_stop", "nonfinite_steps", "rollbacks", "lr_scale", "interrupted_by",
                              "resumed_with_changes", "epochs_completed", "steps", "calibration", "init_from",
                              "environment", "world_size", "command", "diverged_at", "replacement")} == {
        "test_acc_at_stop": 0.25, "nonfinite_steps": 4, "rollbacks": 1, "lr_scale": 0.5, "interrupted_by": "SIGINT",
        "resumed_with_changes": [{"epoch": 1}], "epochs_completed": 0, "steps": 17, "calibration": [{"layer": "2"}],
        "init_from": {"path": "x"}, "environment": {"device": "cpu"}, "world_size": 1, "command": "c",
        "diverged_at": {"epoch": 1, "step": 2, "reason": "r"}, "replacement": None}
    assert s["max_abs_x_over_b"] is None                  # no epoch completed
    done = {"val_acc": 0.5, "test_acc": 0.5, "epoch": 1}
    t.history = [{**_row(), **done, "layer_max_abs_x": [3.0]}, {**_row(), **done, "layer_max_abs_x": [18.0]}]
    assert t._summary("completed", 0.0)["max_abs_x_over_b"] == 1.5    # 18 / B (12)


def test_one_batch_epoch_means(tmp_path):
    t = _trainer(tmp_path, _data(8))
    _script(t, [[2.0, 1.0, 0.5, 4.0]])
    row = t.train_epoch()
    assert (row["train_loss"], row["train_ce"], row["train_boundary"], row["train_acc"]) == (2.0, 1.0, 0.5, 0.5)


def test_log_lines_are_flushed_at_once(tmp_path, monkeypatch):
    """A log followed live (tail -f, a job scheduler's file) sees each line when it is written."""
    printed = []
    monkeypatch.setattr(loop, "print", lambda *a, **k: printed.append((a, k)), raising=False)
    _trainer(tmp_path).log("line")
    assert printed == [(("line",), {"flush": True})]


def test_a_trainer_loads_its_data_and_checks_a_resume_against_it(tmp_path):
    t = loop.Trainer(TrainConfig(dataset="digits", epochs=1, batch_size=64, seed=3, progress=False, plots=False,
                                 out_dir=str(tmp_path / "d")))
    assert t.data.spec == DataSpec("digits", "image", (1, 8, 8), 10) and t.sampler.seed == 3   # small-cnn: images
    t = _trainer(tmp_path, epochs=1)
    _script_epochs(t, [0.5])
    t.run()
    again = _trainer(tmp_path, epochs=2, resume="last")
    assert again.resume_ck["epoch"] == 1 and again.resume_ck["resume_changes"] == {}
    other = _data()
    other.in_shape = (5,)
    other.train = TensorDataset(torch.zeros(24, 5), torch.zeros(24, dtype=torch.long))
    other.test = other.val = TensorDataset(torch.zeros(8, 5), torch.zeros(8, dtype=torch.long))
    with pytest.raises(checkpoint.CheckpointError, match=r"was made for data with in_shape \(4,\), this run's "
                                                         r"data has \[5\]"):
        _trainer(tmp_path, other, epochs=2, resume="last")


@pytest.mark.parametrize("activation, module", [("silu", torch.nn.SiLU), ("gelu", torch.nn.GELU)])
def test_exact_baselines_replace_every_relu(activation, module, tmp_path, capsys):
    """--activation silu/gelu: the network a smooth --target approximates, run exactly
    (no ReLU and no polynomial left), trained and reloaded as such."""
    from pnn_ext.train import build_model, load_run
    from pnn_ext.train.cli import main as train_main
    for name, shape, layout in (("small-cnn", (1, 8, 8), "image"), ("resnet18", (3, 8, 8), "image"),
                                ("mlp", (64,), "features")):
        model = build_model(TrainConfig(model=name, activation=activation), shape, layout, 10)
        kinds = {type(m) for m in model.modules()}
        assert module in kinds and torch.nn.ReLU not in kinds and pnn_ext.PolyActivation not in kinds, name
    out = tmp_path / activation
    assert train_main(["--dataset", "digits", "--activation", activation, "--epochs", "1", "--max-steps", "3",
                       "--no-progress", "--no-plots", "--out-dir", str(out)]) == 0
    assert f"small-cnn on digits, {activation}:" in capsys.readouterr().out
    model, cfg, _ = load_run(str(out))
    assert cfg.activation == activation and any(isinstance(m, module) for m in model.modules())
    with pytest.raises(ValueError, match="activation must be one of"):
        TrainConfig(activation="tanh")
