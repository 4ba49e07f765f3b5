"""Builds pnn_ext._C: the C++ CPU kernels always, the CUDA kernels when possible.

Environment variables:
  PNN_EXT_CUDA=1 / 0   force the CUDA kernels on (fails without nvcc) or off;
                       default: on when nvcc is found and torch is a CUDA build.
  TORCH_CUDA_ARCH_LIST architectures for nvcc; default "8.0;9.0+PTX"
                       (A100, H100/H200, and PTX for newer GPUs).
  DEBUG=1              -O0 -g instead of -O3.

The CPU kernels (csrc/cpu/kernel_*.cpp) are compiled once per instruction set
with their own -m flags, and the library picks one at run time, as ATen does.
setuptools has no per-file flags, so build_extension() below wraps the
compiler's per-source compile step (hence the non-ninja build).
"""
import glob
import os
import shutil
import sys


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
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


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

DEBUG = os.environ.get("DEBUG", "0") == "1"

# Per-file flags of the instruction-set builds of the CPU kernels.
CPU_KERNEL_FLAGS = {
    "kernel_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
    "kernel_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}


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


class BuildExt(BuildExtension):
    def build_extension(self, ext):
        inner = self.compiler._compile

        def compile_one(obj, src, ext_name, cc_args, extra_postargs, pp_opts):
            extra = CPU_KERNEL_FLAGS.get(os.path.basename(src))
            if extra:
                extra_postargs = dict(extra_postargs)
                extra_postargs["cxx"] = list(extra_postargs["cxx"]) + extra
            return inner(obj, src, ext_name, cc_args, extra_postargs, pp_opts)

        self.compiler._compile = compile_one
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = inner


def extension():
    use_cuda = want_cuda()
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    # polyact.cpp first: where the instruction-set builds share an inline function
    # with it, the linker keeps the first (generic) copy.
    sources = ["csrc/polyact.cpp", "csrc/cpu/kernel_default.cpp", "csrc/cpu/kernel_avx2.cpp",
               "csrc/cpu/kernel_avx512.cpp"]
    depends = sorted(glob.glob("csrc/**/*.h", recursive=True))
    extra = {"cxx": opt + ["-std=c++20", "-Wno-unknown-pragmas"]}
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        extra["nvcc"] = opt + ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension("pnn_ext._C", sources, extra_compile_args=extra, depends=depends,
                             include_dirs=cuda_library_includes())
    return CppExtension("pnn_ext._C", sources, extra_compile_args=extra, depends=depends)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=False)},
)
