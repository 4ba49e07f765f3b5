"""pnn-ablate: the table, the plot, and continuing an interrupted ablation."""
import json
import os
import shutil

from pnn_ext.train import ablation


def test_ablation_command_writes_table_and_plot(tmp_path):
    out = tmp_path / "abl"
    rc = ablation.main(["--degrees", "2", "--seeds", "0", "--variants", "full,no-clip,quadratic", "--out-dir",
                        str(out), "--", "--epochs", "1", "--no-progress", "--no-plots", "--max-steps", "3"])
    assert rc == 0
    md = (out / "ablation.md").read_text()
    assert "| 2 | full | 1 | 0/1 |" in md and "| 2 | no-clip | 1 | 0/1 |" in md and "| 2 | quadratic | 1 | 0/1 |" in md
    assert "**quadratic**" in md and "**standard-clip**" not in md  # the legend lists the variants run
    quad = json.loads((out / "degree2" / "quadratic" / "seed0" / "summary.json").read_text())["config"]
    assert quad["boundary_form"] == "quadratic" and quad["clip"] == "selective"
    assert (out / "ablation.png").is_file()
    cfg = json.loads((out / "degree2" / "no-clip" / "seed0" / "summary.json").read_text())["config"]
    assert cfg["clip"] == "none" and cfg["guard"] is False and cfg["degree"] == 2
    shutil.rmtree(out / "degree2" / "full")       # a second call reruns only what is missing,
    os.remove(out / "degree2" / "no-clip" / "seed0" / "summary.json")  # and resumes an interrupted run
    assert ablation.main(["--degrees", "2", "--seeds", "0", "--variants", "full,no-clip", "--out-dir", str(out),
                          "--", "--epochs", "1", "--no-progress", "--no-plots", "--max-steps", "3"]) == 0
    assert (out / "degree2" / "full" / "seed0" / "summary.json").is_file()
    resumed = json.loads((out / "degree2" / "no-clip" / "seed0" / "summary.json").read_text())
    assert "--resume last" in resumed["command"] and resumed["status"] == "completed"
