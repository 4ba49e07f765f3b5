"""Builds pnn_ext._C: the C++ CPU kernels always, the CUDA kernels when possible.

Environment variables:
  PNN_EXT_CUDA=1 / 0   force the CUDA kernels on (fails without nvcc) or off;
                       default: on when nvcc is found and torch is a CUDA build.
  TORCH_CUDA_ARCH_LIST architectures for nvcc; default "8.0;9.0+PTX"
                       (A100, H100/H200, and PTX for newer GPUs).
  DEBUG=1              -O0 -g instead of -O3 -DNDEBUG (release builds have no -g).
  MAX_JOBS=N           parallel compile jobs (ninja -j); default: build_ext's -j,
                       else the number of CPUs. nvcc also compiles the architectures
                       of one .cu in parallel.
  CXX                  the C++ compiler (default g++), also nvcc's host compiler.

The build runs ninja (pip install ninja; a ninja on PATH also works): build_ext's
build_extension() below writes build/ninja/build.ninja, one compile edge per
source with that source's own flags (the SOURCES table), and runs `ninja -j N`.
The objects stay in build/ninja/, so a rebuild recompiles only the sources whose
text, included headers (compiler depfiles) or command line changed. The library
is linked there and copied to where setuptools expects it (pnn_ext/ in place).

The CPU kernels (csrc/cpu/kernel_*.cpp) are compiled once per instruction set with
their own -m flags, and the library picks one at run time, as ATen does. The order of
the sources does not matter: the objects are linked by instruction-set level (see
SOURCES).
"""
import fcntl
import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.path.join(ROOT, "build", "ninja")


def find_cuda_home():
    """The CUDA toolkit: $CUDA_HOME / $CUDA_PATH, else the one nvcc belongs to.

    torch guesses dirname(dirname(which nvcc)), which is wrong when nvcc on PATH
    is a wrapper script (here /usr/local/bin/nvcc -> /usr/local/cuda-13.0), so
    look for a directory that has both bin/nvcc and include/cuda_runtime.h."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None,
                  "/usr/local/cuda"]
    for cand in filter(None, candidates):
        if os.path.isfile(os.path.join(cand, "bin", "nvcc")) and \
                os.path.isfile(os.path.join(cand, "include", "cuda_runtime.h")):
            return cand
    return None


if find_cuda_home():  # before torch.utils.cpp_extension reads it at import
    os.environ["CUDA_HOME"] = find_cuda_home()

import torch  # noqa: E402
from setuptools import Extension, setup  # noqa: E402
from setuptools.command.build_ext import build_ext  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, include_paths, library_paths  # noqa: E402

DEBUG = os.environ.get("DEBUG", "0") == "1"

# Every source and its flags, in one place: (glob under the repository, compiler,
# extra flags, instruction-set level). Compilers: "cxx" (g++), "cuda_cxx" (g++ with
# the CUDA headers: host code that includes ATen/cuda or c10/cuda headers), "nvcc";
# the CUDA rows are built only with the CUDA kernels. Each source must match exactly
# one row, and each csrc/cpu/kernel_*.cpp needs its own row (a missing one is an
# error, not a silent generic build).
#
# Level: 0 for code built for any x86-64, then higher for wider instruction sets
# (each a superset of the lower ones). The objects are linked in (level, path)
# order, whatever the order of the rows or of the files on disk. Why the level
# matters: a per-ISA object also emits out-of-line copies of inline functions from
# the ATen/c10 headers (for example the TORCH_CHECK message builder
# c10::detail::_str_wrapper<...>::call, which g++ compiles with AVX instructions
# under -mavx2), and the linker keeps one copy of each, the first it sees. Linking
# by level makes that copy come from the least capable object that has one, so no
# code runs instructions beyond its own level (generic code never gets an AVX2 or
# AVX-512 copy). Functions of pnn's own kernels live in pnn::cpu::<ISA> and are
# not shared.
SOURCES = [
    ("csrc/*.cpp", "cxx", [], 0),
    ("csrc/cpu/kernel_default.cpp", "cxx", [], 0),
    ("csrc/cpu/kernel_avx2.cpp", "cxx", ["-mavx2", "-mfma", "-mf16c"], 1),
    ("csrc/cpu/kernel_avx512.cpp", "cxx",
     ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"], 2),
    ("csrc/cuda/*.cpp", "cuda_cxx", [], 0),
    ("csrc/cuda/*.cu", "nvcc", [], 0),
]
CUDA_COMPILERS = ("cuda_cxx", "nvcc")


def cuda_library_includes():
    """Headers of the CUDA math libraries (cuSPARSE, cuBLAS, ...) that ATen's CUDA
    headers include: a minimal toolkit lacks them, torch's pip wheels ship them."""
    dirs = []
    for path in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            cand = os.path.join(path, sub)
            if os.path.isfile(os.path.join(cand, "cusparse.h")):
                dirs.append(cand)
    return dirs[:1]


def want_cuda() -> bool:
    forced = os.environ.get("PNN_EXT_CUDA")
    available = CUDA_HOME is not None and shutil.which("nvcc", path=os.path.join(CUDA_HOME, "bin")) is not None \
        and torch.version.cuda is not None
    if forced == "1":
        if not available:
            raise RuntimeError("PNN_EXT_CUDA=1 but nvcc or a CUDA build of torch is missing "
                               f"(CUDA_HOME={CUDA_HOME}, torch.version.cuda={torch.version.cuda})")
        return True
    if forced == "0":
        return False
    return available


def cuda_arch_flags():
    """-gencode flags for TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX": sm_80 and sm_90 code,
    plus compute_90 PTX), as torch's BuildExtension derives them."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0+PTX"
    flags = []
    for arch in archs.replace(" ", ";").split(";"):
        if not arch:
            continue
        num = arch.split("+")[0].replace(".", "")
        if not num[:2].isdigit():
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read {arch!r} (use numbers such as 8.0;9.0+PTX)")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return sorted(set(flags))


def ninja_path():
    """The pinned ninja of requirements.txt (the ninja package), else one on PATH."""
    try:
        import ninja
        exe = os.path.join(ninja.BIN_DIR, "ninja")
        if os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    exe = shutil.which("ninja")
    if exe is None:
        raise RuntimeError("pnn_ext is built with ninja, which was not found: `pip install ninja` "
                           "(pinned in requirements.txt), or install a ninja on PATH")
    return exe


def collect_sources(use_cuda):
    """[(path relative to ROOT, compiler, extra flags)] in link order (level, path);
    every source under csrc/ must match exactly one SOURCES row."""
    rows = [row for row in SOURCES if use_cuda or row[1] not in CUDA_COMPILERS]
    found = {}
    for pattern, compiler, extra, level in rows:
        for path in glob.glob(os.path.join(ROOT, pattern)):
            rel = os.path.relpath(path, ROOT)
            if rel in found:
                raise RuntimeError(f"setup.py SOURCES: {rel} matches two rows")
            found[rel] = (compiler, list(extra), level)
    on_disk = {os.path.relpath(p, ROOT) for ext in ("cpp", "cu")
               for p in glob.glob(os.path.join(ROOT, "csrc", "**", f"*.{ext}"), recursive=True)}
    skipped = {p for p in on_disk - found.keys() if use_cuda or not p.startswith(os.path.join("csrc", "cuda", ""))}
    if skipped:
        raise RuntimeError(f"setup.py SOURCES has no row for {sorted(skipped)}: add one "
                           "(the per-instruction-set kernels need their -m flags)")
    # nvcc sources first within their level: ninja starts the edges in this order and
    # they are the longest (the critical path of a clean build).
    order = sorted(found, key=lambda rel: (found[rel][2], found[rel][0] != "nvcc", rel))
    return [(rel, found[rel][0], found[rel][1]) for rel in order]


def q(args):
    """A shell command line in a ninja variable ($ is ninja's escape)."""
    return " ".join(shlex.quote(str(a)) for a in args).replace("$", "$$")


def ninja_escape(path):
    return path.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def write_build_ninja(path, sources, target, use_cuda):
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    defines = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    py_includes = sorted({sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]})
    includes = include_paths(device_type="cpu") + py_includes
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    # -fopenmp: at::parallel_for is a header template that runs its body serially unless the
    # extension itself is compiled with OpenMP (ParallelOpenMP.h tests _OPENMP), and
    # -Wno-unknown-pragmas hid the ignored "#pragma omp parallel". The link's libgomp.so.1
    # is the one torch has already loaded (same soname), so torch.set_num_threads governs it.
    cxxflags = opt + ([] if DEBUG else ["-DNDEBUG"]) + \
        ["-std=c++20", "-fPIC", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"] + defines
    ldflags = ["-shared", "-fopenmp"] + [f"-L{d}" for d in library_paths(device_type="cpu")] + \
        ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    lines = ["ninja_required_version = 1.3",
             f"cxx = {q(cxx)}",
             f"cxxflags = {q(cxxflags + [f'-I{d}' for d in includes])}",
             ""]
    if use_cuda:
        cuda_includes = cuda_library_includes() + include_paths(device_type="cuda") + py_includes
        nvcc_flags = opt + ["-std=c++20", "-lineinfo",
                            "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                            "--expt-relaxed-constexpr", "--compiler-options", "-fPIC",
                            # the architectures of one .cu in parallel (cicc and ptxas for
                            # sm_80 and sm_90 at once; 0: up to one thread per CPU)
                            "--threads", "0"] + defines + cuda_arch_flags()
        if "CXX" in os.environ:
            nvcc_flags += ["-ccbin", cxx[-1]]
        cpu_libs = library_paths(device_type="cpu")
        ldflags[1:1] = [f"-L{d}" for d in library_paths(device_type="cuda") if d not in cpu_libs]
        ldflags += ["-lc10_cuda", "-ltorch_cuda", "-lcudart"]
        lines += [f"nvcc = {q([os.path.join(CUDA_HOME, 'bin', 'nvcc')])}",
                  f"nvcc_flags = {q(nvcc_flags + [f'-I{d}' for d in cuda_includes])}",
                  f"cuda_cxxflags = {q(cxxflags + [f'-I{d}' for d in cuda_includes])}",
                  "",
                  "rule nvcc",
                  "  command = $nvcc --generate-dependencies-with-compile --dependency-output $out.d "
                  "$nvcc_flags $extra -c $in -o $out",
                  "  depfile = $out.d",
                  "  deps = gcc",
                  "",
                  "rule cuda_cxx",
                  "  command = $cxx -MMD -MF $out.d $cuda_cxxflags $extra -c $in -o $out",
                  "  depfile = $out.d",
                  "  deps = gcc",
                  ""]
    lines += ["rule cxx",
              "  command = $cxx -MMD -MF $out.d $cxxflags $extra -c $in -o $out",
              "  depfile = $out.d",
              "  deps = gcc",
              "",
              "rule link",
              "  command = $cxx $in $ldflags -o $out",
              "",
              f"ldflags = {q(ldflags)}",
              ""]
    objects = []
    for rel, compiler, extra in sources:
        obj = ninja_escape(os.path.join(BUILD_DIR, rel + ".o"))
        objects.append(obj)
        lines.append(f"build {obj}: {compiler} {ninja_escape(os.path.join(ROOT, rel))}")
        if extra:
            lines.append(f"  extra = {q(extra)}")
    lines += [f"build {ninja_escape(target)}: link {' '.join(objects)}", f"default {ninja_escape(target)}", ""]
    text = "\n".join(lines)
    # Rewrite only on change: ninja then neither re-reads nor rebuilds for nothing.
    if not os.path.exists(path) or open(path).read() != text:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def run_ninja(cmd):
    """Runs ninja, echoing its output; returns (exit status, the lines of its
    FAILED: blocks: each failing command and its compiler output)."""
    env = dict(os.environ, NINJA_STATUS="[%f/%t] ")
    failed, in_failed = [], False
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", env=env) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            if line.startswith("FAILED:"):
                in_failed = True
            elif line.startswith(("ninja: ", "[")) and not line.startswith("[code="):
                in_failed = False
            if in_failed:
                failed.append(line.rstrip("\n"))
        sys.stdout.flush()
    return proc.returncode, failed


class NinjaBuildExt(build_ext):
    """build_ext whose build_extension() compiles and links with ninja (see the
    module docstring); setuptools' compiler object is not used."""

    def build_extension(self, ext):
        use_cuda = want_cuda()
        sources = collect_sources(use_cuda)
        ninja = ninja_path()
        jobs = os.environ.get("MAX_JOBS", "")
        if jobs.isdigit() and int(jobs) > 0:
            jobs = int(jobs)
        elif isinstance(self.parallel, int) and not isinstance(self.parallel, bool) and self.parallel > 0:
            jobs = self.parallel
        else:
            jobs = os.cpu_count() or 1
        os.makedirs(BUILD_DIR, exist_ok=True)
        target = os.path.join(BUILD_DIR, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
        print(f"pnn_ext: building {ext.name} with ninja -j {jobs} in {BUILD_DIR} "
              f"({'CPU and CUDA' if use_cuda else 'CPU only'} kernels{', DEBUG' if DEBUG else ''})", flush=True)
        # One build at a time in build/ninja (ninja itself does not lock).
        with open(os.path.join(BUILD_DIR, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_build_ninja(os.path.join(BUILD_DIR, "build.ninja"), sources, target, use_cuda)
            rc, failed = run_ninja([ninja, "-C", BUILD_DIR, "-v", "-j", str(jobs)])
            if rc != 0:
                # Repeat the failing commands' output last, after the warnings of the
                # compiles that were still running (a log's tail then shows the error).
                print("\n".join(["", "pnn_ext: failed:"] + failed), flush=True)
                raise SystemExit(f"pnn_ext: the ninja build failed (exit {rc}), see the output above; "
                                 f"rebuild with: ninja -C {BUILD_DIR}")
            # Copy to a fresh file, then rename: a process that has the old library
            # loaded keeps its copy; the copy gets a new mtime (scripts/env.sh compares it).
            dest = self.get_ext_fullpath(ext.name)
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            shutil.copyfile(target, dest + ".tmp")
            shutil.copymode(target, dest + ".tmp")
            os.replace(dest + ".tmp", dest)


setup(
    ext_modules=[Extension("pnn_ext._C", sources=[row[0] for row in collect_sources(use_cuda=True)], language="c++")],
    cmdclass={"build_ext": NinjaBuildExt},
)
