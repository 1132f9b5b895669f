#!/usr/bin/env bash
# Side-by-side: hepeft's CKKS primitives (criterion, single thread) and Microsoft SEAL (via
# TenSEAL's sealapi, single thread), measured back to back in one run, then a markdown table.
# Usage: bench/compare.sh [OUT_DIR]   (default: target/bench-compare)
# Needs network access to PyPI on the first run only (SEAL goes into a throwaway virtualenv
# outside the repository, see bench/seal/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/target/bench-compare}"
mkdir -p "$out"
cd "$repo"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "== hepeft (criterion, benches/ckks.rs)" >&2
# HEPEFT_CARGO_FLAGS adds cargo flags to the hepeft build, as in heads_vs_seal.sh: on an
# AVX-512 machine, HEPEFT_CARGO_FLAGS="--no-default-features --features cli" measures the
# AVX2 kernels.
# shellcheck disable=SC2086 # word splitting of the flags is intended
cargo bench ${HEPEFT_CARGO_FLAGS:-} --bench ckks -- --noplot >"$out/hepeft-criterion.txt" 2>&1
echo "== SEAL (bench/seal/run.sh)" >&2
bash "$here/seal/run.sh" >"$out/seal.json"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# criterion writes under cargo's target directory, which CARGO_TARGET_DIR may move
target="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
python3 "$here/compare_table.py" "$target/criterion" "$out/seal.json" | tee "$out/table.md"
