# Sourced by scripts/main.sh and scripts/test.sh: all set-up on a fresh machine.
#  1. a virtual environment cached outside the clone, keyed by requirements.txt
#     (PNN_EXT_CACHE, default ~/.cache/pnn_ext), made once;
#  2. the package installed in it (pip install --no-build-isolation -e .: the
#     extension built in place, the pnn-train, pnn-ablate, pnn-sweep and pnn-he commands) when the
#     venv lacks it or csrc/, setup.py or pyproject.toml changed since the last
#     build (CUDA kernels too when nvcc is found, see setup.py for PNN_EXT_CUDA
#     and TORCH_CUDA_ARCH_LIST).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
KEY=$( (cat requirements.txt; $PY -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
VENV=${PNN_EXT_CACHE:-$HOME/.cache/pnn_ext}/venv-$KEY
if [ ! -f "$VENV/.complete" ]; then
  echo "[env] creating $VENV (one time: torch and friends, a few minutes)"
  rm -rf "$VENV"
  $PY -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements.txt
  touch "$VENV/.complete"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
so=$(ls pnn_ext/_C*.so 2>/dev/null | head -n1 || true)
# Rebuild when there is no extension, when sources or packaging changed since it was
# built, or when this venv does not have the package installed (entry points).
if [ -z "$so" ] || [ -n "$(find csrc setup.py pyproject.toml -newer "$so" -type f | head -n1)" ] \
   || ! [ -x "$VENV/bin/pnn-train" ]; then
  echo "[env] building pnn_ext._C (C++ CPU kernels; CUDA kernels when nvcc is present)"
  pip install -q --no-build-isolation --no-deps -e . > build.log 2>&1 || { tail -n 60 build.log; echo "[env] build failed, full log in build.log"; exit 1; }
fi
