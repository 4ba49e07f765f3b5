"""pnn-export (python -m pnn_ext.export) on a trained run: the ONNX file predicts the run's test
set as the model does, the AOTInductor package does so in a fresh process that imports only
pnn_ext, and a user's mistake is one line and exit code 2."""
import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch

import pnn_ext
from pnn_ext.export import ExportError, export_aoti
from pnn_ext.export.cli import main
from pnn_ext.models import MLP, SmallCNN
from pnn_ext.train import load_run
from testing import ROOT, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quick degree-8 MLP run on digits: its directory."""
    out = tmp_path_factory.mktemp("export_cli")
    run(out, model="mlp", hidden="32,16", degree=8, epochs=1)
    return str(out / "run")


def test_onnx_predicts_the_test_set_as_the_model(trained, tmp_path, capsys):
    path = str(tmp_path / "model.onnx")
    assert main([trained, "--onnx", path]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {path} (mlp on digits, ONNX): onnxruntime agrees with PyTorch to ")
    assert line.endswith("at batch sizes 2, 1, 7")
    model, _, _ = load_run(trained)
    x = load_run(trained).load_data().test.tensors[0]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]  # the whole test set: one batch
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


BAD = [
    ([], r"nothing to do: give --onnx FILE.onnx and/or --aoti FILE.pt2"),
    (["--onnx", "{TMP}/model.txt"], r"--onnx: path must end in .onnx"),
    (["--aoti", "{TMP}/missing/model.pt2"], r"--aoti: path .*: directory .*missing does not exist"),
    (["--onnx", "{TMP}/m.onnx", "--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_usage_errors_are_one_line(trained, tmp_path, capsys, argv, message):
    argv = [a.replace("{TMP}", str(tmp_path)) for a in argv]
    assert main([trained, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pnn-export: error: ")
    assert re.search(message, err), err
    assert os.listdir(tmp_path) == []  # nothing written


def test_missing_run_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pnn_ext.export", str(tmp_path / "nope"), "--onnx",
                        str(tmp_path / "m.onnx")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("pnn-export: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "nope" in r.stderr


FRESH = """
import sys, torch
import pnn_ext  # the op's library: nothing else of pnn_ext is needed to run the package
compiled = torch._inductor.aoti_load_package(sys.argv[1])
x = torch.load(sys.argv[2])
ys = [compiled(x[:n]) for n in (1, 7, x.shape[0])]
torch.save(ys, sys.argv[3])
print(sorted(m for m in sys.modules if m.startswith("pnn_ext.train")))
"""


@pytest.mark.slow  # AOTInductor compiles C++: ~1-2 minutes on 2 busy cores
def test_aoti_package_predicts_identically_in_a_fresh_process(trained, tmp_path, capsys):
    path = str(tmp_path / "model.pt2")
    assert main([trained, "--aoti", path]) == 0
    assert "the loaded package agrees with PyTorch" in capsys.readouterr().out
    model = load_run(trained).model
    x = load_run(trained).load_data().test.tensors[0][:50]
    torch.save(x, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "-c", FRESH, path, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"  # pnn_ext.train never imported: only the op's library was needed
    with torch.no_grad():
        for y in torch.load(tmp_path / "y.pt"):
            want = model(x[:y.shape[0]])
            assert torch.equal(y.argmax(1), want.argmax(1))
            assert float((y - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_export_aoti_refusals(tmp_path):
    model = pnn_ext.convert(MLP(8, 2, (4,)), degree=4)
    x = torch.randn(2, 8)
    with pytest.raises(ExportError, match="training mode"):
        export_aoti(model, x, str(tmp_path / "m.pt2"))
    with pytest.raises(ExportError, match=r"path must end in .pt2, got '.*m.onnx'"):
        export_aoti(model.eval(), x, str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="every tensor needs a batch dimension"):
        export_aoti(model, torch.tensor(1.0), str(tmp_path / "m.pt2"))


EXPORTED = """
import sys, torch
import pnn_ext
program = torch.export.load(sys.argv[1]).module()
torch.save([program(torch.load(sys.argv[2])[:n]) for n in (1, 7)], sys.argv[3])
"""


def test_exported_program_runs_in_a_fresh_process(tmp_path):
    """What the AOTInductor package relies on, without its compile time: a process that
    imports pnn_ext (and so the op's library) runs a saved torch.export program of a
    converted model, at any batch size."""
    model = pnn_ext.convert(SmallCNN(1, 10, (8, 8)), degree=22).eval()
    x = torch.randn(7, 1, 8, 8)
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "program.pt2")
    torch.save(x, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "-c", EXPORTED, str(tmp_path / "program.pt2"), str(tmp_path / "x.pt"),
                        str(tmp_path / "y.pt")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        for y in torch.load(tmp_path / "y.pt"):
            assert torch.equal(y, model(x[:y.shape[0]]))
