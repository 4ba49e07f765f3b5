"""experiments/docs_section.py, how the experiment scripts write their tables into the
docs: only the marked section changes, and a page without its markers is refused
untouched."""
import os
import subprocess
import sys

from testing import ROOT

SCRIPT = os.path.join(ROOT, "experiments", "docs_section.py")


def _write(page, name, text):
    return subprocess.run([sys.executable, SCRIPT, str(page), name], input=text, capture_output=True, text=True)


def test_replaces_only_the_marked_section(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("intro\n<!-- BEGIN t (by a script) -->\nold table\n<!-- END t -->\noutro\n"
                    "<!-- BEGIN u -->\nkept\n<!-- END u -->\n")
    r = _write(page, "t", "| a |\n|---|\n| 1 |\n")
    assert r.returncode == 0, r.stderr
    assert page.read_text() == ("intro\n<!-- BEGIN t (by a script) -->\n| a |\n|---|\n| 1 |\n<!-- END t -->\noutro\n"
                                "<!-- BEGIN u -->\nkept\n<!-- END u -->\n")


def test_a_page_without_the_markers_is_refused_untouched(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("no markers here\n<!-- BEGIN tt -->\nx\n<!-- END tt -->\n")
    r = _write(page, "t", "new\n")
    assert r.returncode == 2 and "exactly one <!-- BEGIN t" in r.stderr
    assert page.read_text() == "no markers here\n<!-- BEGIN tt -->\nx\n<!-- END tt -->\n"


def test_every_docs_section_a_script_writes_exists():
    """The sections the experiment scripts and bench/report.py write are in their pages."""
    wanted = {"training-results.md": ["training"], "finetune.md": ["finetune"], "encrypted.md": ["he"],
              "convert.md": ["convert-zoo"], "speed.md": ["lean-compile"],
              "stability.md": ["stability-matters", "stability-cliff", "stability-auto", "stability-cell-by-cell"],
              "benchmarks.md": ["CPU", "GPU", "PTXAS", "LAYOUTS", "ROOFLINE"]}
    for page, names in wanted.items():
        text = open(os.path.join(ROOT, "docs", page)).read()
        for name in names:
            assert text.count(f"<!-- BEGIN {name}") == 1 and text.count(f"<!-- END {name} -->") == 1, (page, name)
