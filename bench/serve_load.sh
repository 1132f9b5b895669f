#!/usr/bin/env bash
# Bounded load test of the HTTP service on loopback (127.0.0.1 only): CLIENTS threads send
# one-sample latency queries (LoRA head d=128, r=8, 10 classes, CKKS_N13_QP200_128) for
# SECS seconds, each answer decrypted and checked against the plaintext twin. Prints
# throughput, p50/p99 latency (client side: encrypt + upload + evaluate + download +
# decrypt), failed and wrong answers. The test itself is tests/serve_http.rs::load.
# Usage: bench/serve_load.sh [SECS=20] [CLIENTS=4]   (SECS at most 300, CLIENTS at most 64)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
SERVE_LOAD_SECS="${1:-20}" SERVE_LOAD_CLIENTS="${2:-4}" \
    cargo test --release --test serve_http -- --ignored --nocapture --exact load 2>&1 |
    grep -E '^(load:|server:|test result)'
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
