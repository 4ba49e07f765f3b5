"""Static GPU checks without a GPU: ptxas resource usage of every CUDA kernel for sm_80 and
sm_90 (bench/ptxas_usage.py; `nvcc -Xptxas -v`, cached in build/ptxas by source hash).

No kernel may spill registers to local memory or use a stack frame: the forward kernels,
the backward kernels of every coefficient slice (degree 128 runs as rows of the 25-wide
slice), and the finalize kernels."""
import pytest

import ptxas_usage

pytestmark = pytest.mark.skipif(ptxas_usage.find_nvcc() is None, reason="needs nvcc (CUDA toolkit)")


@pytest.fixture(scope="module")
def usage():
    return ptxas_usage.kernel_usage()


def test_every_kernel_is_compiled_for_both_architectures(usage):
    names = {(u.arch, ptxas_usage.short_name(u.name)) for u in usage}
    for arch in ptxas_usage.ARCHS:  # the backward kernels for both boundary forms
        for form in ("exp", "quadratic"):
            assert any(a == arch and n.startswith("backward_kernel<float") and n.endswith(f", {form}>")
                       for a, n in names), (arch, form)
    kinds = ["forward_kernel", "forward_finalize_kernel", "backward_kernel", "coeff_grad_finalize_kernel"]
    for arch in ptxas_usage.ARCHS:
        for dtype in ("float", "double", "Half", "BFloat16"):
            for kind in kinds:
                assert any(a == arch and n.startswith(f"{kind}<{dtype}") for a, n in names), (arch, kind, dtype)


def test_no_kernel_spills(usage):
    spilling = [(u.arch, u.name, u.spill_stores, u.spill_loads, u.stack) for u in usage
                if u.spill_stores or u.spill_loads or u.stack]
    assert not spilling, spilling


def test_registers_allow_two_blocks_per_sm(usage):
    """256 threads per block: at most 128 registers per thread keeps 2 blocks (16 warps)
    resident on an SM of 64K registers; the memory-bound forward and coefficient-free
    backward want more, at most 64 (4 blocks) for float32."""
    for u in usage:
        assert u.registers <= 128, (u.arch, u.name, u.registers)
        name = ptxas_usage.short_name(u.name)
        # backward_kernel<float, VEC, ALIGNED, SLICE, FORM>: SLICE 0, either boundary form
        coefficient_free = name.startswith("backward_kernel<float") and name.split(", ")[3] == "0"
        if name.startswith("forward_kernel<float") or coefficient_free:
            assert u.registers <= 64, (u.arch, u.name, u.registers)


def test_parser_reads_spills():
    """The parser itself: a spill in ptxas's words is seen (so the no-spill test can fail)."""
    text = ("ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
            "ptxas info    : Function properties for _Z1kv\n"
            "    16 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
            "ptxas info    : Used 80 registers, used 1 barriers, 32 bytes smem, 400 bytes cmem[0]\n")
    (u,) = ptxas_usage.parse(text)
    assert (u.arch, u.registers, u.spill_stores, u.spill_loads, u.stack, u.static_shared) == ("90", 80, 16, 12, 16, 32)
