"""The CUDA emulation (tests/cuda_emulation/cuda_emulation.h) checked on its own, before it
is trusted to run the project's kernels on the CPU: the small kernels of selftest.cpp,
built once with ASan/UBSan through build.py, one process per mode. Also that the
sanitizers really see inside emulated kernels (out-of-bounds global and shared memory,
signed overflow) and that bad launches, partial-warp masks and deadlocks fail loudly."""
from __future__ import annotations

import os
import shlex
import shutil

import pytest

from cuda_emulation import build as emulation_build

HERE = os.path.dirname(__file__)
SELFTEST = os.path.join(HERE, "cuda_emulation", "selftest.cpp")

pytestmark = pytest.mark.skipif(shutil.which(shlex.split(os.environ.get("CXX", "g++"))[0]) is None,
                                reason="needs a C++20 compiler with ASan/UBSan")


@pytest.fixture(scope="module")
def selftest():
    return emulation_build.build([SELFTEST], "selftest")


def run(binary, mode, **kw):
    return emulation_build.run(binary, [mode], timeout=120, **kw)


def output(proc):
    return f"rc {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


@pytest.mark.parametrize("mode", [
    "barrier",           # writes before __syncthreads seen by other threads after it, 20 rounds
    "shuffle",           # shfl_down / shfl_xor warp sums of float, double, int, unsigned, long long
    "shuffle_variants",  # __shfl_sync, __shfl_up_sync, width 8 segments
    "partial_warp",      # blockDim 48: missing source lanes yield the caller's value
    "vote",              # __ballot_sync / __any_sync / __all_sync with a partial warp
    "dynamic_shared",    # a fresh 0xA5-filled buffer per block
    "grid_sequential",   # blocks one after another, in order, with gridDim/blockIdx
    "indices_2d",        # 3-D grid and block indices
    "early_return",      # returned threads drop out of __syncthreads / __syncwarp
    "atomics",           # last-block ticket, contended atomicAdd, CAS/min/max/exch
    "kernel_args",       # arguments are per-thread copies, converted as in a call
    "exception",         # a throwing thread: the launch rethrows, the others finish
])
def test_emulation_mode(selftest, mode):
    proc = run(selftest, mode)
    assert proc.returncode == 0 and f"OK {mode}" in proc.stdout, output(proc)
    assert "runtime error" not in proc.stderr and "Sanitizer" not in proc.stderr, output(proc)


def test_launch_limits_are_rejected_with_a_clear_message(selftest):
    """sm_80 limits, checked before any thread runs: std::runtime_error naming the limit."""
    proc = run(selftest, "limits")
    assert proc.returncode == 0 and "OK limits" in proc.stdout, output(proc)
    for message in ("invalid configuration (cudaErrorInvalidConfiguration): block (1025,1,1) has 1025 threads, "
                    "more than 1024",
                    "block.z = 65 exceeds 64",
                    "grid.y = 65536 exceeds 65535",
                    "zero-sized grid (0,1,1)",
                    "50176 bytes of dynamic shared memory exceed the limit of 49152"):
        assert message in proc.stdout, output(proc)


def test_out_of_bounds_global_read_is_caught(selftest):
    proc = run(selftest, "oob_global")
    assert proc.returncode != 0 and "OK" not in proc.stdout, output(proc)
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr, output(proc)
    assert "READ of size 4" in proc.stderr and "read_kernel" in proc.stderr, output(proc)
    assert "0 bytes after 400-byte region" in proc.stderr or "0 bytes to the right of 400-byte region" in proc.stderr


def test_dynamic_shared_overflow_is_caught(selftest):
    """Dynamic shared memory is exactly the requested 1024 bytes: one float past it is an error."""
    proc = run(selftest, "oob_shared")
    assert proc.returncode != 0 and "OK" not in proc.stdout, output(proc)
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr, output(proc)
    assert "WRITE of size 4" in proc.stderr and "smem_write_kernel" in proc.stderr, output(proc)
    assert "1024-byte region" in proc.stderr, output(proc)


def test_static_shared_overflow_is_caught(selftest):
    """Static __shared__ arrays are function-local statics: UBSan's object-size check (or
    ASan's global redzone) reports a write past one."""
    proc = run(selftest, "oob_static_shared")
    assert proc.returncode != 0 and "OK" not in proc.stdout, output(proc)
    assert ("AddressSanitizer: global-buffer-overflow" in proc.stderr
            or "runtime error: store to address" in proc.stderr), output(proc)
    assert "static_smem_kernel" in proc.stderr, output(proc)


def test_undefined_behaviour_in_a_kernel_is_caught(selftest):
    proc = run(selftest, "ubsan")
    assert proc.returncode != 0 and "OK" not in proc.stdout, output(proc)
    assert "runtime error: signed integer overflow" in proc.stderr, output(proc)


def test_partial_warp_mask_aborts(selftest):
    proc = run(selftest, "bad_mask")
    assert proc.returncode != 0, output(proc)
    assert "cuda_emulation: __shfl_down_sync: mask 65535 leaves out some of the warp's 32 lanes" in proc.stderr


def test_deadlock_is_reported(selftest):
    """Thread 0 in __syncwarp while the others are in __syncthreads: the watchdog aborts."""
    proc = run(selftest, "deadlock", env={"CUDA_EMULATION_TIMEOUT_S": "1"})
    assert proc.returncode != 0, output(proc)
    assert "block (0,0,0) did not finish within 1 s (64 of 64 threads still running)" in proc.stderr, output(proc)


def test_block_speed(selftest):
    """Hundreds of 256-thread blocks must stay affordable: a block with 2 barriers and 20
    shuffle rounds (the forward kernel's pattern) takes about 10 ms on 2 loaded cores. The
    bound is on CPU time: wall time also counts other processes (it failed at 100 ms beside
    two training runs, under nice)."""
    proc = run(selftest, "bench")
    assert proc.returncode == 0, output(proc)
    ms = float(proc.stdout.split("ms_per_block")[1].split()[0])
    cpu_ms = float(proc.stdout.split("cpu_ms_per_block")[1].split()[0])
    print(f"emulated 256-thread block: {ms:.2f} ms wall, {cpu_ms:.2f} ms CPU")
    assert cpu_ms < 100, output(proc)


def test_build_caches_defines_and_reports_errors(tmp_path):
    src = tmp_path / "tiny.cpp"
    src.write_text("#include <cstdlib>\nint main() { return EXIT_CODE + std::atoi(std::getenv(\"EXTRA\")); }\n")
    binary = emulation_build.build([str(src)], "tiny_build_check", defines=["EXIT_CODE=3"])
    assert emulation_build.run(binary, [], env={"EXTRA": "2"}).returncode == 5
    stamp = binary.stat().st_mtime_ns
    assert emulation_build.build([str(src)], "tiny_build_check", defines=["EXIT_CODE=3"]) == binary
    assert binary.stat().st_mtime_ns == stamp  # cached: not rebuilt
    src.write_text("int main() { return oops; }\n")
    with pytest.raises(emulation_build.BuildError, match="(?s)tiny_build_check failed.*oops"):
        emulation_build.build([str(src)], "tiny_build_check", defines=["EXIT_CODE=3"])
