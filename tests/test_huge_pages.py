"""The CPU op's large outputs are advised to use transparent huge pages (csrc/cpu/huge_pages.h),
small ones are not, and the advice changes no value. Linux only; skipped where the kernel
has transparent huge pages off."""
import os
import sys

import pytest
import torch

import pnn_ext
from testing import random_coeffs, random_input

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists(THP) or "[never]" in open(THP).read(),
    reason="needs Linux with transparent huge pages not 'never'")

B, ALPHA = 20.0, 0.75
MIN_BYTES = 4 << 20  # kHugePageMinBytes


def vm_flags(address: int) -> set[str]:
    """VmFlags of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def interior(t: torch.Tensor) -> int:
    """An address inside t's 2 MiB-aligned interior (the range the op advises)."""
    huge = 2 << 20
    first = (t.data_ptr() + huge - 1) // huge * huge
    assert first + huge <= t.data_ptr() + t.nbytes
    return first


@pytest.mark.parametrize("numel", [MIN_BYTES // 4, 3 * MIN_BYTES // 4 + 13])
def test_large_outputs_are_advised_huge_pages(numel):
    c = random_coeffs(8)
    x = random_input((numel,), B).requires_grad_()
    y, stats = pnn_ext.poly_act(x, c, B, ALPHA, impl="fused")
    assert "hg" in vm_flags(interior(y))
    (y.sum() + stats[0]).backward()
    assert "hg" in vm_flags(interior(x.grad))
    # The advice changes no value: the same call on a slice (a small, unadvised output) agrees.
    part = x.detach()[:4096].clone()
    y_part, _ = pnn_ext.poly_act(part, c, B, ALPHA, impl="fused")
    assert torch.equal(y_part, y.detach()[:4096])


def test_inputs_are_not_advised():
    """Only the op's own outputs get the advice: x's mapping keeps its flags."""
    x = random_input((MIN_BYTES // 2,), B)  # 8 MB: its own mapping (glibc mmaps blocks this large at first)
    before = vm_flags(interior(x))
    pnn_ext.poly_act(x, random_coeffs(8), B, ALPHA, impl="fused")
    assert vm_flags(interior(x)) == before
