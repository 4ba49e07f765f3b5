"""pnn-sweep: a tiny grid on digits, its reports, resuming, the submitit engine
(submitit's local executor) writing the same run directories as the local engine, a
cell's identity (reused only for its own settings), the lock and signals. Refused
command lines are in tests/test_cli_errors.py."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pnn_ext.strict_json import strict
from pnn_ext.train import sweep, sweep_plan, sweep_report, sweep_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--", "--dataset", "digits", "--model", "mlp", "--hidden", "16,8", "--epochs", "1", "--max-steps", "3"]
GRID = ["--grid", "bound=2,47", "--grid", "lr=1e-3", "--variants", "full,no-clip", "--seeds", "0,1"]


def strict_json(path):
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    with open(path) as fh:
        return json.load(fh, parse_constant=refuse)


def test_tiny_grid_reports_and_resume(tmp_path, capsys):
    out = tmp_path / "sw"
    assert sweep.main([*GRID, "--jobs", "2", "--out-dir", str(out), *TRAIN]) == 0
    report = strict_json(out / "sweep.json")
    assert report["axes"] == [["bound", ["2", "47"]], ["lr", ["1e-3"]]]
    cells = {(c["axes"]["bound"], c["variant"]): c for c in report["cells"]}
    assert set(cells) == {(b, v) for b in ("2", "47") for v in ("full", "no-clip")}
    # B = 2 at degree 22 puts the inputs far outside [-B, B]: the polynomial overflows and
    # BatchNorm's statistics go non-finite at the first step, so every run of it diverged
    for variant in ("full", "no-clip"):
        c = cells[("2", variant)]
        assert c["finished"] == 2 and c["diverged"] == 2 and c["acc_mean"] is None
        s = json.loads((out / "bound=2" / "lr=1e-3" / variant / "seed0" / "summary.json").read_text())
        assert s["status"] == "diverged" and s["config"]["bound"] == 2.0
    for variant in ("full", "no-clip"):  # B = 47 keeps them well inside
        c = cells[("47", variant)]
        accs = [100 * json.loads((out / "bound=47" / "lr=1e-3" / variant / f"seed{i}" / "summary.json").read_text())
                ["final_test_acc"] for i in range(2)]
        assert c["finished"] == 2 and c["diverged"] == 0 and c["acc_mean"] == pytest.approx(sum(accs) / 2)
        assert 0 < min(accs) and max(accs) <= 100
        assert 0 < c["max_abs_x_over_b"] < 1
        run = out / "bound=47" / "lr=1e-3" / variant / "seed1"
        s = json.loads((run / "summary.json").read_text())
        # the setting, the variant and the guard reached the run; max|x|/B is that of its layers
        assert s["config"]["bound"] == 47.0 and s["config"]["guard"] is False
        assert s["config"]["clip"] == ("none" if variant == "no-clip" else "selective")
        assert s["bounds"] == [47.0] * 2
        assert math.isclose(s["max_abs_x_over_b"], max(
            x / 47.0 for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            for x in r["layer_max_abs_x"]))
    md = (out / "sweep.md").read_text()
    assert "| 47 | 1e-3 | no-clip | 2 | 0/2 |" in md and "| 2 | 1e-3 | full | 2 | 2/2 |" in md
    assert "**full**: final test accuracy %, rows bound" in md
    assert (out / "sweep.png").stat().st_size > 1000

    # resume: finished runs are skipped, a deleted one is redone, an interrupted one continues
    kept = out / "bound=2" / "lr=1e-3" / "full" / "seed0" / "summary.json"
    stamp = kept.stat().st_mtime_ns
    shutil.rmtree(out / "bound=47" / "lr=1e-3" / "full" / "seed1")
    os.remove(out / "bound=47" / "lr=1e-3" / "no-clip" / "seed0" / "summary.json")
    capsys.readouterr()
    assert sweep.main([*GRID, "--out-dir", str(out), *TRAIN]) == 0
    assert "8 runs, 6 done before, 2 to run" in capsys.readouterr().out
    assert kept.with_name("cell.json").is_file()
    assert kept.stat().st_mtime_ns == stamp
    resumed = json.loads((out / "bound=47" / "lr=1e-3" / "no-clip" / "seed0" / "summary.json").read_text())
    assert "--resume last" in resumed["command"] and resumed["status"] == "completed"
    assert strict_json(out / "sweep.json")["cells"][2]["finished"] == 2


def test_submitit_local_executor_writes_the_same_runs(tmp_path):
    """The submitit engine (its local executor, one job for all runs) and the local engine
    give the same run directories with the same results: runs are reproducible on CPU."""
    grid = ["--grid", "bound=47", "--variants", "full", "--seeds", "0,1"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "pnn_ext.train.sweep", *grid, "--engine", "submitit",
                          "--submitit-cluster", "local", "--cells-per-job", "2", "--out-dir", str(tmp_path / "sub"),
                          *TRAIN], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "submitted 1 submitit jobs (2 runs)" in out.stdout
    assert sweep.main([*grid, "--out-dir", str(tmp_path / "loc"), *TRAIN]) == 0
    for seed in (0, 1):
        a, b = (json.loads((tmp_path / root / "bound=47" / "full" / f"seed{seed}" / "summary.json").read_text())
                for root in ("sub", "loc"))
        assert a["status"] == b["status"] == "completed" and a["final_test_acc"] == b["final_test_acc"]
    # a table rebuilt from the submitit runs alone
    assert sweep.main([*grid, "--report-only", "--out-dir", str(tmp_path / "sub"), *TRAIN]) == 0
    assert strict_json(tmp_path / "sub" / "sweep.json")["cells"][0]["finished"] == 2


@pytest.mark.parametrize("grid, message", [
    (["--grid", "nonsense=1"], "NAME a pnn-train setting"),
    (["--grid", "lr=fast"], "'fast' is not a valid value"),
    (["--grid", "seed=1,2"], "the sweep sets it"),
    (["--grid", "lr="], "no values"),
])
def test_bad_axes_are_refused(grid, message, capsys):
    assert sweep.main([*grid, "--out-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("pnn-sweep: error: ") and err.count("\n") == 1


def test_unknown_variant_and_strict_json(capsys):
    assert sweep.main(["--grid", "lr=1e-3", "--variants", "full,quadratik", "--out-dir", "/nonexistent"]) == 2
    assert capsys.readouterr().err == ("pnn-sweep: error: unknown variants ['quadratik']; choose from "
                                       f"{list(sweep.VARIANTS)}\n")
    assert strict({"a": [float("nan"), 1.0, float("inf")]}) == {"a": [None, 1.0, None]}
    assert set(sweep.VARIANTS) >= {"full", "no-boundary", "no-clip", "standard-clip", "quadratic"}


def test_report_of_a_diverged_cell(tmp_path):
    """Cells are read from summaries alone: a diverged run counts, its accuracy is left out."""
    grid = []
    for seed, status, acc in ((0, "completed", 0.9), (1, "diverged", None), (2, "completed", 0.8)):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"status": status, "final_test_acc": acc, "bounds": [4.0],
                                                    "max_abs_x_over_b": 1.5 + seed}))
        grid.append({"axes": {"lr": "1e-1"}, "variant": "full", "seed": seed, "dir": str(d)})
    report = sweep_report.collect(grid, [("lr", ["1e-1"])])
    c = report["cells"][0]
    assert (c["finished"], c["diverged"], c["divergence_rate"]) == (3, 1, 1 / 3)
    assert math.isclose(c["acc_mean"], 85.0) and math.isclose(c["acc_std"], math.sqrt(50))
    assert c["max_abs_x_over_b"] == 3.5 and sweep_report.cell_text(c) == "85.0 ± 7.1 ✗1/3"
    sweep_report.write(report, str(tmp_path), "pnn-sweep test", guard=False)
    assert "| 1e-1 | full | 3 | 1/3 | 85.00 ± 7.07 |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").is_file()


BOOL = ["--grid", "learnable=true,false", "--variants", "full", "--seeds", "0"]


def test_boolean_axis_and_a_cell_reused_only_for_its_own_settings(tmp_path, capsys):
    """A boolean setting is swept; a finished cell is reused only by a command of the same
    settings, whichever record says so (cell.json, or summary.json alone for runs of older
    sweeps); other settings are refused before anything is written, --overwrite reruns them."""
    from forkserver import tree_digest
    out = tmp_path / "sw"
    assert sweep.main([*BOOL, "--out-dir", str(out), *TRAIN]) == 0
    runs = {v: out / f"learnable={v}" / "full" / "seed0" for v in ("true", "false")}
    for value, run in runs.items():
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "completed" and s["config"]["learnable"] is (value == "true")
        assert json.loads((run / "cell.json").read_text())["identity"]["learnable"] is (value == "true")
    stamp = (runs["true"] / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    # the same command, written otherwise (lr 1e-3 is the default): nothing runs again
    assert sweep.main([*BOOL, "--out-dir", str(out), *TRAIN, "--lr", "0.001"]) == 0
    assert "to run" not in capsys.readouterr().out
    assert (runs["true"] / "summary.json").stat().st_mtime_ns == stamp
    # other settings after --: refused, naming the cell and the setting; the report is untouched
    before = tree_digest(str(out))
    assert sweep.main([*BOOL, "--out-dir", str(out), *TRAIN, "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cell learnable=true/full/seed0" in err and "lr 0.001 -> 0.01" in err, err
    assert "(and 1 more cells)" in err and "--overwrite" in err
    assert tree_digest(str(out)) == before
    # a run of an older sweep (no cell.json) is judged by its summary's config
    os.remove(runs["false"] / "cell.json")
    os.remove(runs["true"] / "cell.json")
    assert sweep.main([*BOOL, "--out-dir", str(out), *TRAIN, "--max-steps", "4"]) == 2
    assert "max_steps 3 -> 4" in capsys.readouterr().err
    # --overwrite: both cells run again with the new settings, the report has their numbers
    assert sweep.main([*BOOL, "--out-dir", str(out), "--overwrite", *TRAIN, "--lr", "0.01"]) == 0
    assert "2 runs, 0 done before, 2 to run" in capsys.readouterr().out
    for run in runs.values():
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "completed" and s["config"]["lr"] == 0.01 and "--resume" not in s["command"]
        assert json.loads((run / "cell.json").read_text())["identity"]["lr"] == 0.01
    report = strict_json(out / "sweep.json")
    assert report["axes"] == [["learnable", ["true", "false"]]]
    assert [c["finished"] for c in report["cells"]] == [1, 1]


def test_run_directories_are_one_to_one():
    """Two values never share a directory: '/' and '%' are escaped, not replaced."""
    values = ["a/b", "a_b", "a%2Fb", "..", "é", "1e-3", "npz:x.npz", "none"]
    names = [sweep_plan.dir_text(v) for v in values]
    assert len(set(names)) == len(values) and all("/" not in n and os.sep not in n for n in names)
    assert names[-3:] == ["1e-3", "npz:x.npz", "none"]  # the usual values keep their names
    cell = {"axes": {"init_from": "../../x"}, "variant": "full", "seed": 0}
    assert os.path.dirname(os.path.dirname(sweep_plan.run_dir("root", cell))) == os.path.join(
        "root", "init_from=..%2F..%2Fx")


def test_a_second_sweep_into_a_locked_out_dir_is_refused(tmp_path, capsys):
    out = tmp_path / "sw"
    grid = ["--grid", "lr=1e-3", "--variants", "full", "--seeds", "0", "--out-dir", str(out)]
    with sweep_run.locked(str(out)):
        assert sweep.main([*grid, *TRAIN]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use by another pnn-sweep" in err, err
        assert not (out / "lr=1e-3").exists()
        # a report elsewhere only reads the runs: allowed while the sweep runs
        assert sweep.main([*grid, "--report-only", "--report-dir", str(tmp_path / "rep"), *TRAIN]) == 0
        assert (tmp_path / "rep" / "sweep.md").is_file()
    assert sweep.main([*grid, "--report-only", *TRAIN]) == 0  # released


@pytest.mark.parametrize("sig, rc", [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_parallel_sweep_within_seconds(tmp_path, sig, rc):
    """--jobs 2 over 6 long runs: once two have started, the signal ends the sweep within
    seconds (the queued runs never start), with one line, and the report is written."""
    out = tmp_path / "sw"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "pnn_ext.train.sweep", "--grid", "lr=1e-3,2e-3,3e-3",
                             "--variants", "full,no-clip", "--seeds", "0", "--jobs", "2", "--out-dir", str(out),
                             "--", "--dataset", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "1000"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list(out.glob("*/*/seed0/cell.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=180)  # the six runs would take hours
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    took = time.monotonic() - sent
    assert proc.returncode == rc, stderr[-2000:]
    # the grace at most, then the report (matplotlib): 3.5-5.3 s measured here at load 7, more on a busier machine
    assert took < sweep_run.STOP_GRACE_S + 50, took
    assert "Traceback" not in stdout + stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert len(list(out.glob("*/*/seed0"))) == 2  # the four queued runs never started
    report = strict_json(out / "sweep.json")
    assert report["stopped_by"] == sig.name and len(report["cells"]) == 6
    assert f"Stopped by {sig.name}" in (out / "sweep.md").read_text()


def test_values_valid_together_are_not_refused_alone(tmp_path):
    """A value is judged in its cells: replace_epochs 15 is refused beside epochs 5 (naming the
    cell) but not beside epochs 20, although the default epochs (10) would refuse it."""
    def plan(grid):
        return sweep_plan.plan(sweep.parser().parse_args([*grid, "--variants", "full", "--seeds", "0", "--out-dir",
                                                          str(tmp_path), "--", "--replace", "progressive"]))
    cells = plan(["--grid", "replace_epochs=15", "--grid", "epochs=20"])
    assert [c["identity"]["replace_epochs"] for c in cells] == [15.0] and not os.listdir(tmp_path)
    with pytest.raises(ValueError, match=r"^cell replace_epochs=15/epochs=5/full/seed0: replace_epochs \(15\) must "
                                         r"not exceed epochs \(5\)"):
        plan(["--grid", "replace_epochs=15", "--grid", "epochs=20,5"])
