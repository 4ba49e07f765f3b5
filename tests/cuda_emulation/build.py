"""Build and run C++ programs that use the CUDA emulation (cuda_emulation.h) under
AddressSanitizer and UndefinedBehaviorSanitizer. Standard library only.

    binary = build(["tests/cuda_emulation/selftest.cpp"], "selftest")
    proc = run(binary, ["barrier"])   # CompletedProcess; any sanitizer report fails it

Binaries go to <repo>/build/cuda_emulation/<output_name>, with <output_name>.hash beside
them: a build is skipped when the hash of the compiler command, the compiler version, the
sources and every header under tests/cuda_emulation/ and csrc/ is unchanged.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_DIR = REPO / "build" / "cuda_emulation"
FLAGS = ["-std=c++20", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-pthread"]
HASHED_HEADER_DIRS = [HERE, REPO / "csrc"]
HEADER_SUFFIXES = {".h", ".hh", ".hpp", ".cuh", ".inl"}
# Any report ends the process with a non-zero status (exit 1, not an abort, so the report
# is complete); leaks count as reports.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:abort_on_error=0:detect_leaks=1:print_stacktrace=1",
    "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=0:print_stacktrace=1",
}


class BuildError(RuntimeError):
    """The compiler failed; the message holds its command line and output."""


def compiler_command(sources: Sequence[str], output: pathlib.Path, include_dirs: Iterable[str] = (),
                     defines: Iterable[str] = ()) -> list[str]:
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    return [*cxx, *FLAGS, f"-I{HERE}", *(f"-I{pathlib.Path(d).resolve()}" for d in include_dirs),
            *(f"-D{d}" for d in defines),
            *(str(pathlib.Path(s).resolve()) for s in sources), "-o", str(output)]


def _hash(command: list[str], sources: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update("\0".join(command).encode())
    try:
        version = subprocess.run([command[0], "--version"], capture_output=True, text=True).stdout
    except OSError:
        version = ""
    h.update(version.encode())
    files = [pathlib.Path(s).resolve() for s in sources]
    for d in HASHED_HEADER_DIRS:
        files += sorted(p for p in d.rglob("*") if p.suffix in HEADER_SUFFIXES and p.is_file())
    for f in files:
        h.update(f"\0{f}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def build(sources: list[str], output_name: str, include_dirs: Sequence[str] = (),
          defines: Sequence[str] = ()) -> pathlib.Path:
    """Compiles `sources` into build/cuda_emulation/<output_name> (if anything changed)."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    output = BUILD_DIR / output_name
    hash_file = output.with_name(output_name + ".hash")
    command = compiler_command(sources, output, include_dirs, defines)
    digest = _hash(command, sources)
    if output.is_file() and hash_file.is_file() and hash_file.read_text().strip() == digest:
        return output
    # Build under a temporary name and rename: concurrent builders never see half a binary.
    tmp = output.with_name(f"{output_name}.tmp{os.getpid()}")
    proc = subprocess.run(command[:-1] + [str(tmp)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {output_name} failed (exit {proc.returncode}):\n$ {shlex.join(command)}\n"
                         f"{proc.stdout}{proc.stderr}")
    os.replace(tmp, output)
    tmp_hash = hash_file.with_name(f"{hash_file.name}.tmp{os.getpid()}")
    tmp_hash.write_text(digest + "\n")
    os.replace(tmp_hash, hash_file)
    return output


def run(binary: os.PathLike | str, args: Sequence[str] = (), *, timeout: float | None = 300,
        env: Mapping[str, str] | None = None, cwd: os.PathLike | str | None = None) -> subprocess.CompletedProcess:
    """Runs `binary args...` with sanitizer options under which any report fails the
    process; returns the CompletedProcess (text stdout/stderr captured, not checked).
    `env` entries are added to (and override) the environment and those options."""
    full_env = {**os.environ, **SANITIZER_ENV, **(env or {})}
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)
