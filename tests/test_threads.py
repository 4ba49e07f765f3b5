"""The CPU kernels run on torch's OpenMP threads: the extension is compiled with OpenMP (without
it at::parallel_for silently runs serially) and shares torch's one OpenMP runtime.
Thread-count independence of the results is tested in test_ops.py."""
import shutil
import subprocess
import sys

import pytest

import pnn_ext._C as C

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF and /proc: Linux only")


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_extension_is_compiled_with_openmp():
    undefined = subprocess.run(["nm", "-D", "--undefined-only", C.__file__], capture_output=True, text=True,
                               check=True).stdout
    assert "GOMP_parallel" in undefined, "pnn_ext._C has no OpenMP parallel region: built without -fopenmp?"


def test_one_openmp_runtime_in_the_process():
    """In a fresh interpreter (other tests import libraries with their own libgomp, e.g.
    scikit-learn's), importing pnn_ext loads no OpenMP runtime beside torch's."""
    code = ("import pnn_ext._C\n"
            "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l})))")
    paths = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert len(paths) == 1, f"OpenMP runtimes loaded: {paths}"
