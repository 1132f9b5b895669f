#!/usr/bin/env bash
# The per-task table of docs/BENCHMARKS.md (issue #7): every shipped real adapter
# (assets/real/<task>/), accuracy encrypted vs plaintext over the held-out samples, and one
# latency-layout query: client encrypt, server evaluate (1 and 2 threads), client decrypt
# (medians of REPS samples), bytes up/down, evaluation-key bytes, parameters; then the same
# turned into LAN/WAN latency next to CryptPEFT's reported figures. Prints Markdown.
# With TOKENS=N (issue 15) it then adds the token-level rows: the shipped CryptPEFT OWC
# adapters of assets/real/finefoods/token (s = 1, 2; H = 1, 2) on N held-out samples each,
# at 128-bit parameters, 1 and 2 threads (examples/real_token.rs). Slow: about a minute
# (s = 1) to several minutes (s = 2) of CPU per sample and thread count, keys up to 1.5 GB
# (docs/BENCHMARKS.md, "Token-level adapters"). TOKEN_ADAPTERS (default all: s1_h1_r32
# s1_h2_r32 s2_h1_r32 s2_h2_r32, space-separated) and TOKEN_THREADS (default 1,2) narrow it.
# Usage: [TOKENS=1 [TOKEN_ADAPTERS="s1_h2_r32 s2_h2_r32"] [TOKEN_THREADS=1,2]] \
#        bench/real_table.sh [REPS=5]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo run --release --quiet --example real_table -- "${1:-5}"
if [ "${TOKENS:-0}" != 0 ]; then
  echo
  echo "== token-level rows, load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for a in ${TOKEN_ADAPTERS:-all}; do
    echo "== token adapter $a, load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    cargo run --release --quiet --example real_token -- "$a" "$TOKENS" "${TOKEN_THREADS:-1,2}"
  done
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
