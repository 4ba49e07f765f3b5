"""Distributed training: a 2-process DDP step (gloo, CPU) equals one process on the
combined batch."""
import json
import os
import subprocess
import sys

import torch

from pnn_ext.train import build_model
from pnn_ext.train.config import TrainConfig
from testing import ROOT


def test_two_process_ddp_step_equals_single_process_on_combined_batch(tmp_path):
    common = ["--dataset", "digits", "--model", "mlp", "--hidden", "64,32", "--norm", "none", "--max-steps", "1",
              "--epochs", "1", "--clip-norm", "0.05", "--no-plots", "--no-progress", "--degree", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "pnn_ext.train", *common, "--batch-size", "64",
                             "--out-dir", str(tmp_path / "single")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "pnn_ext.train", *common, "--batch-size", "32", "--out-dir", str(tmp_path / "ddp")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    init = build_model(TrainConfig(model="mlp", hidden="64,32", norm="none", degree=8), (1, 8, 8), "image", 10)
    assert a["step"] == b["step"] == 1
    moved = 0
    for k, v in a["model"].items():
        if torch.is_tensor(v) and v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, rtol=0, atol=2e-6, msg=k)
    for k, v in init.state_dict().items():
        if k in a["model"] and torch.is_tensor(v) and v.is_floating_point() and "coeffs" not in k:
            moved += int(not torch.allclose(v, a["model"][k]))
    assert moved >= 4   # the step really changed the weights
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and not (tmp_path / "ddp" / "rank1").exists()
