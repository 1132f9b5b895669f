#!/usr/bin/env bash
# The per-task table of docs/BENCHMARKS.md (issue #7): every shipped real adapter
# (assets/real/<task>/), accuracy encrypted vs plaintext over the held-out samples, and one
# latency-layout query: client encrypt, server evaluate (1 and 2 threads), client decrypt
# (medians of REPS samples), bytes up/down, evaluation-key bytes, parameters; then the same
# turned into LAN/WAN latency next to CryptPEFT's reported figures. Prints Markdown.
# With TOKENS=N (issue 15) it then adds the token-level rows: the shipped CryptPEFT OWC
# adapters of assets/real/finefoods/token (s = 1, 2; H = 1, 2) on N held-out samples each,
# at 128-bit parameters, 1 and 2 threads (examples/real_token.rs). Slow: minutes per sample
# and thread count (docs/BENCHMARKS.md, "Token-level adapters").
# Usage: [TOKENS=1] bench/real_table.sh [REPS=5]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo run --release --quiet --example real_table -- "${1:-5}"
if [ "${TOKENS:-0}" != 0 ]; then
  echo
  echo "== token-level rows, load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  cargo run --release --quiet --example real_token -- all "$TOKENS" 1,2
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
