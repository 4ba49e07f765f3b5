"""Static resource usage of the CUDA kernels: registers, spills, stack and shared memory per
kernel, as ptxas reports them (`nvcc -Xptxas -v`) for sm_80 and sm_90. Needs only nvcc, no GPU.

    python bench/ptxas_usage.py            # prints the table and writes its section of docs/benchmarks.md

tests/test_ptxas.py uses the same functions to fail on any spill.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "csrc", "cuda", "polyact_kernels.cu")
ARCHS = ("80", "90")
# The defines torch's CUDA extensions are built with (half/bfloat16 operators off), so that
# ptxas sees the code the build produces.
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__",
              "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-D__CUDA_NO_HALF2_OPERATORS__"]


@dataclass
class KernelUsage:
    arch: str
    name: str            # demangled
    registers: int
    spill_stores: int    # bytes
    spill_loads: int     # bytes
    stack: int           # bytes of stack frame
    static_shared: int   # bytes (the kernels use dynamic shared memory, sized at launch)


def find_nvcc() -> str | None:
    for cand in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if cand and os.path.isfile(os.path.join(cand, "bin", "nvcc")):
            return os.path.join(cand, "bin", "nvcc")
    return shutil.which("nvcc")


def torch_include() -> str:
    import torch
    return os.path.join(os.path.dirname(torch.__file__), "include")


def ptxas_output(nvcc: str, archs=ARCHS) -> str:
    """nvcc -Xptxas -v over the kernels, cached in build/ptxas by the sources' hash."""
    sources = [os.path.join(ROOT, "csrc", p) for p in ("polyact.h", "polyact_common.h", "cuda/polyact_launch.h",
                                                       "cuda/polyact_kernels.cuh", "cuda/polyact_kernels.cu")]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    cmd = [nvcc, *NVCC_FLAGS, *gencode, "-Xptxas", "-v", f"-I{torch_include()}", "-c", KERNELS]
    key = hashlib.sha256(" ".join(cmd).encode() + b"".join(open(s, "rb").read() for s in sources)).hexdigest()[:16]
    out_dir = os.path.join(ROOT, "build", "ptxas")
    cached = os.path.join(out_dir, f"ptxas-{key}.txt")
    if os.path.exists(cached):
        return open(cached).read()
    os.makedirs(out_dir, exist_ok=True)
    proc = subprocess.run([*cmd, "-o", os.path.join(out_dir, "kernels.o")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    with open(cached + ".tmp", "w") as f:
        f.write(proc.stderr)
    os.replace(cached + ".tmp", cached)
    return proc.stderr


def demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def parse(text: str) -> list[KernelUsage]:
    rows, current = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line)
        if m:
            current = KernelUsage(m.group(2), m.group(1), 0, 0, 0, 0, 0)
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current.registers = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current.static_shared = int(s.group(1)) if s else 0
    for row, name in zip(rows, demangle([r.name for r in rows])):
        row.name = name.replace("pnn::cuda::", "")
    return rows


def kernel_usage(archs=ARCHS) -> list[KernelUsage]:
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME)")
    return parse(ptxas_output(nvcc, archs))


def short_name(name: str) -> str:
    """forward_kernel<c10::Half, 4, true>(...) -> forward_kernel<Half, 4, true>; the backward
    kernels' boundary-form argument (pnn::BoundaryForm)0 / 1 -> exp / quadratic."""
    name = name[:name.index(">(") + 1] if ">(" in name else name.split("(")[0]
    name = re.sub(r"\((?:pnn::)?BoundaryForm\)0", "exp", name)
    name = re.sub(r"\((?:pnn::)?BoundaryForm\)1", "quadratic", name)
    return name.replace("c10::", "").removeprefix("void ")


def markdown(rows: list[KernelUsage]) -> str:
    version = subprocess.run([find_nvcc(), "--version"], capture_output=True, text=True).stdout
    nvcc_version = version.strip().splitlines()[-1]
    lines = [f"`python bench/ptxas_usage.py` on {datetime.date.today()} ({nvcc_version}; `nvcc -O3 -Xptxas -v`). "
             "Template arguments: dtype, elements per thread and step, 16-byte vector access, coefficients "
             "per block row (0: no coefficient gradients). 256 threads per block (finalize kernels too); "
             "shared memory is dynamic: the coefficients plus 8 per-warp reduction slots (at most 3.6 KB).",
             "",
             "| kernel | sm_80 registers | sm_90 registers | spill bytes stored/loaded (sm_80, sm_90) | stack bytes |",
             "|---|---:|---:|---|---:|"]
    by_name: dict[str, dict[str, KernelUsage]] = {}
    for r in rows:
        by_name.setdefault(short_name(r.name), {})[r.arch] = r
    for name in sorted(by_name):
        per = by_name[name]
        spills = ", ".join(f"{per[a].spill_stores}/{per[a].spill_loads}" for a in ARCHS if a in per)
        stack = max(per[a].stack for a in per)
        regs = [str(per[a].registers) if a in per else "—" for a in ARCHS]
        lines.append(f"| `{name}` | {regs[0]} | {regs[1]} | {spills} | {stack} |")
    return "\n".join(lines) + "\n"


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from report import write_section

    text = markdown(kernel_usage())
    print(text)
    write_section("PTXAS", "## CUDA kernels: registers and spills (static, no GPU needed)\n\n" + text)


if __name__ == "__main__":
    main()
