#!/usr/bin/env bash
# One run, same machine, same weights: the exact path's 384 -> 64 -> ReLU -> 10 head
# (criterion, 1 and 2 threads) then Concrete ML 1.9.0 on the weights that run exported.
#
#   bench/concrete_ml/compare.sh            # logs to target/exact-bench/compare.log
#
# The exact rows: criterion on the default and 4-bit-table heads, then one timed run each
# of the default and the 0.958 variant (`exact-bench: lut6` lines). Concrete ML runs with
# rounding_threshold_bits = 6 and its default p_error (2^-40 per PBS; ours is 2^-128);
# without rounding (run.sh alone) its server time on this head is minutes per sample.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p target/exact-bench
log=target/exact-bench/compare.log
{
    date -u
    uptime
    cargo bench --bench exact -- mlp_384_64_10
    # the 0.958 variant (6-bit tables, J = 3, 2^12 x 3 fine key) against the default, one
    # encrypted run each on 1 and 2 threads, sanitization of the logits included (issue 19)
    cargo bench --bench exact -- lut6 | grep "exact-bench: lut6"
    bench/concrete_ml/run.sh --runs 3 --rounding 6
    uptime
} 2>&1 | tee "$log"
