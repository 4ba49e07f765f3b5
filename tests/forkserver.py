"""Runs many command lines and Python snippets for tests/test_cli_errors.py, each in a
process of its own, without paying torch's import (~1.6 s) per case: torch and pnn_ext
are imported once here, and every case runs in a child forked from this process.

A command-line case runs its module as ``python -m MODULE ARGS`` would (runpy, as
``__main__``), so its exit code, stdout and stderr are what a user gets, traceback
included when there is one. A snippet case runs its code as a script would and
reports how it ended: ``{"raised": None}`` or the exception's type and message.

    python tests/forkserver.py < cases.jsonl > results.jsonl

Input, one JSON object a line: {"module": ..., "argv": [...]} or {"code": ...}, with
optional "watch" (a directory whose files' digest is reported after the case) and
"timeout" (seconds; default 120). Output, one line per case: {"rc", "stdout", "stderr",
"seconds", "watch"}."""
import hashlib
import importlib
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
import warnings

# The point of this process: what the cases import, imported once, before the forks. Only
# a speed-up: a module missing here is imported by the cases that need it.
for _name in ("torch", "torchvision", "sklearn.datasets", "sklearn.model_selection", "yaml", "pnn_ext",
              "pnn_ext.train.loop", "pnn_ext.he.fold"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass


def tree_digest(root: str) -> str | None:
    """SHA-256 over the names and bytes of every file under ``root`` (None if absent)."""
    if not os.path.isdir(root):
        return None
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def child(case: dict, out_path: str, err_path: str) -> int:
    out = open(out_path, "w")
    err = open(err_path, "w")
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # a module imported before -m
    code = 0
    try:
        if "module" in case:
            sys.argv = [case["module"], *case["argv"]]
            runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
        else:
            try:
                exec(compile(case["code"], "<case>", "exec"), {"__name__": "__main__"})
                print(json.dumps({"raised": None}))
            except Exception as e:
                print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run_case(case: dict, tmp: str) -> dict:
    out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            rc = child(case, out_path, err_path)
        finally:
            os._exit(locals().get("rc", 70))
    deadline = time.monotonic() + case.get("timeout", 120)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.01)
    rc = os.waitstatus_to_exitcode(status) if status != -1 else "timeout"
    with open(out_path) as fh:
        stdout = fh.read()
    with open(err_path) as fh:
        stderr = fh.read()
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "seconds": round(time.monotonic() - start, 2),
            "watch": tree_digest(case["watch"]) if case.get("watch") else None}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(run_case(json.loads(line), tmp)), flush=True)


if __name__ == "__main__":
    main()
