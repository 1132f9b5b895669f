#!/usr/bin/env bash
# Run the Microsoft SEAL (via TenSEAL's sealapi) side of the hepeft benchmark comparison.
# Usage: bench/seal/run.sh [VENV_DIR] > seal.json
#   VENV_DIR defaults to ${TMPDIR:-/tmp}/hepeft-seal-venv and must lie outside the repository.
# stdout: exactly one JSON object; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=venv.sh
source "$here/venv.sh"
seal_venv run.sh "$repo" "${1:-}"

# Single-threaded: SEAL runs each call on the calling thread; keep any BLAS/OpenMP pools at 1 too.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1
exec "$venv/bin/python" "$here/seal_bench.py"
