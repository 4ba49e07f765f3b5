"""bench/roofline.py's measurement and table at CI's smoke size, so the script cannot rot:
every row's figures are positive and finite, and the op never takes less time than its
arithmetic needs at the machine's measured rates (a fraction of the floor above 1 would mean
a peak that measured the wrong thing)."""
import math

import roofline


def test_roofline_measures_and_renders():
    m = roofline.measure({"tiny": 4096}, degrees=(2, 22), reps=1)
    assert len(m["rows"]) == 2 * 2 * len(m["thread_counts"])
    for r in m["rows"]:
        for key in ("ns", "gflops", "fma_frac", "floor_frac", "gbs", "warm_frac", "mem_frac"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["floor_frac"] <= 1, r
    text = roofline.section(m, "python bench/roofline.py --sizes tiny")
    assert text.count("\n| tiny |") == len(m["rows"]) and "FMA GFLOP/s" in text
