#!/usr/bin/env bash
# The per-task table of docs/BENCHMARKS.md (issue #7): every shipped real adapter
# (assets/real/<task>/), accuracy encrypted vs plaintext over the held-out samples, and one
# latency-layout query: client encrypt, server evaluate (1 and 2 threads), client decrypt
# (medians of REPS samples), bytes up/down, evaluation-key bytes, parameters; then the same
# turned into LAN/WAN latency next to CryptPEFT's reported figures. Prints Markdown.
# Usage: bench/real_table.sh [REPS=5]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo run --release --quiet --example real_table -- "${1:-5}"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
