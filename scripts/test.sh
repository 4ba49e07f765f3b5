#!/usr/bin/env bash
# The test command of the README (and of CI): set-up, build, the fast tests, then a
# smoke run of the benchmark suite (tiny sizes, timing off) so the benchmarks cannot rot.
# Extra arguments go to the first pytest (e.g. -m slow, -k compile).
source "$(dirname "$0")/env.sh"
set +e
status=0
run() {
  "$@"
  local rc=$?
  # pytest exits 5 when a selection collects no test: not a failure of the suite.
  [ "$rc" -eq 5 ] && { echo "[test] no test collected"; rc=0; }
  [ "$rc" -ne 0 ] && status=$rc
}
run python -m pytest -q -m "not slow" "$@"
PNN_BENCH_SIZES=tiny PNN_BENCH_DEGREES=2,22 run python -m pytest -q -p no:cacheprovider bench --benchmark-disable
exit "$status"
