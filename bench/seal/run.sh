#!/usr/bin/env bash
# Run the Microsoft SEAL (via TenSEAL's sealapi) side of the hepeft benchmark comparison.
# Usage: bench/seal/run.sh [VENV_DIR] > seal.json
#   VENV_DIR defaults to ${TMPDIR:-/tmp}/hepeft-seal-venv and must lie outside the repository.
# stdout: exactly one JSON object; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-${TMPDIR:-/tmp}/hepeft-seal-venv}"

mkdir -p "$venv"
venv="$(cd "$venv" && pwd)"
case "$venv/" in
  "$repo"/*) echo "run.sh: refusing to put the virtualenv inside the repository ($venv)" >&2; exit 2 ;;
esac

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
[ -n "$py" ] || { echo "run.sh: no python3 found" >&2; exit 2; }

if [ ! -x "$venv/bin/python" ]; then
  echo "run.sh: creating virtualenv in $venv with $py" >&2
  "$py" -m venv "$venv" >&2
fi
# Already-satisfied exact pins do not touch the network.
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt" >&2

# Single-threaded: SEAL runs each call on the calling thread; keep any BLAS/OpenMP pools at 1 too.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1
exec "$venv/bin/python" "$here/seal_bench.py"
