#!/usr/bin/env bash
# One run, same machine, same weights: the exact path's 384 -> 64 -> ReLU -> 10 head
# (criterion, 1 and 2 threads) then Concrete ML 1.9.0 on the weights that run exported.
#
#   bench/concrete_ml/compare.sh            # logs to target/exact-bench/compare.log
#
# Concrete ML runs with rounding_threshold_bits = 6; without rounding (run.sh alone) its
# server time on this head is minutes per sample.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p target/exact-bench
log=target/exact-bench/compare.log
{
    date -u
    uptime
    cargo bench --bench exact -- mlp_384_64_10
    bench/concrete_ml/run.sh --runs 3 --rounding 6
    uptime
} 2>&1 | tee "$log"
