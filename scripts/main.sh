#!/usr/bin/env bash
# The main job of the README: set-up, build, then a degree-22 network trained on
# scikit-learn's digits (no download). Extra arguments go to the demo (--help).
source "$(dirname "$0")/env.sh"
exec python examples/digits_demo.py "$@"
