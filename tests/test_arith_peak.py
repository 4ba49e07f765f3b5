"""_C.arith_peak, the roofline's arithmetic limit (csrc/cpu/roofline_impl.h): a positive
finite rate for every kind, clear errors, and a limit the fused op cannot beat. No timed
assertions: the only comparison is against the op's own arithmetic, which a peak that
measured the wrong thing (a loop the compiler deleted, a chain count too low, the wrong
flop count) would fail by a wide margin."""
import math

import pytest
import torch

from cases import Case, flops_per_element

_C = pytest.importorskip("pnn_ext._C")


@pytest.mark.parametrize("kind", ["fma", "add", "clenshaw"])
def test_peak_is_a_positive_finite_rate(kind):
    flops = _C.arith_peak(1, kind)
    assert math.isfinite(flops) and flops > 1e8, f"{kind}: {flops} FLOP/s"


def test_default_kind_is_fma():
    # Both measure the same chains; loads on a shared machine can shift one run, not by 10x.
    a, b = _C.arith_peak(1), _C.arith_peak(1, "fma")
    assert 0.1 < a / b < 10


@pytest.mark.parametrize("args, message", [((0,), "threads must be in 1.."), ((10 ** 6,), "threads must be in 1.."),
                                           ((1, "mul"), "kind must be 'fma', 'add' or 'clenshaw'")])
def test_bad_arguments_name_themselves(args, message):
    with pytest.raises(ValueError, match=message):
        _C.arith_peak(*args)


def test_the_fused_forward_stays_below_the_peak():
    """The op's polynomial arithmetic per second (best of 5 calls, one thread) is at most the
    measured FMA and add peaks together (every port busy), and its time at least what that
    arithmetic needs at the measured rates (roofline.arith_floor_s)."""
    import roofline

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peaks = {k: _C.arith_peak(1, k) for k in roofline.KINDS}
        case = Case(22, 2 ** 16)
        seconds = roofline.best_time(roofline.op_call(case, "forward"), reps=5)
    finally:
        torch.set_num_threads(old)
    achieved = flops_per_element(22, "forward") * case.numel / seconds
    ports = peaks["fma"] + peaks["add"]
    assert achieved <= ports, f"fused forward {achieved / 1e9:.1f} GFLOP/s > FMA + add peaks {ports / 1e9:.1f}"
    assert roofline.arith_floor_s(22, "forward", peaks) * case.numel <= seconds
