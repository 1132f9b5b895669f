#!/usr/bin/env bash
# Concrete ML 1.9.0 on the same 384 -> 64 -> ReLU -> 10 head as `cargo bench --bench exact`.
#
#   cargo bench --bench exact          # writes target/exact-bench/{w1,b1,w2,b2,calib,test}.npy
#   bench/concrete_ml/run.sh           # venv outside the repo, then run.py
#
# Heavy: pulls torch and compiles the circuit (minutes). VENV overrides the venv location.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-/tmp/hepeft-concrete-ml-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "concrete-ml==1.9.0"
fi
exec "$venv/bin/python" "$here/run.py" --data "$root/target/exact-bench" "$@"
