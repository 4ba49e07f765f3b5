#!/usr/bin/env bash
# The test command of the README (and of CI): set-up, build, the linter, the fast
# tests (pyproject.toml deselects the slow ones), the documentation site built in strict
# mode (a broken link, a page missing from the nav or an API entry that cannot be made
# fails), then a smoke run of the benchmark suite (tiny sizes, timing off) so the
# benchmarks cannot rot. Extra arguments go to
# the first pytest (e.g. -m slow, -k compile). PNN_EXT_REQUIRE_EXTENSION=1 makes a
# missing or broken build an ImportError here instead of the users' silent fallback.
source "$(dirname "$0")/env.sh"
set +e
export PNN_EXT_REQUIRE_EXTENSION=1
status=0
run() {
  "$@"
  local rc=$?
  # pytest exits 5 when a selection collects no test: not a failure of the suite.
  [ "$rc" -eq 5 ] && { echo "[test] no test collected"; rc=0; }
  [ "$rc" -ne 0 ] && status=$rc
}
run ruff check pnn_ext tests bench scripts experiments
run python -m pytest -q "$@"
NO_MKDOCS_2_WARNING=1 run mkdocs build --strict
PNN_BENCH_SIZES=tiny PNN_BENCH_DEGREES=2,22 run python -m pytest -q -p no:cacheprovider bench --benchmark-disable
exit "$status"
