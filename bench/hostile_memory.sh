#!/usr/bin/env bash
# Peak memory of `hepeft` on hostile inputs of any size (issue 20), measured with
# `/usr/bin/time -v` (maximum resident set size), next to the same command on legitimate
# input. Each hostile case must be refused (exit 1) with a bounded footprint. Uses the
# shipped digits probe card and the secure CKKS_N13_QP200_128 preset; sparse files, so the
# 3 GB inputs take no disk space. Usage: bench/hostile_memory.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
cargo build --release --quiet
bin="$PWD/target/release/hepeft"
card="$PWD/assets/real/digits/probe/card.toml"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$work/x.npy" <<'PY'
import struct, sys
rows, cols = 4, 64
hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%dd" % (rows * cols), *[((i * 7) % 17) / 17.0 for i in range(rows * cols)]))
PY
"$bin" --json keygen --params CKKS_N13_QP200_128 --model "$card" --out "$work/keys" >/dev/null
"$bin" --json encrypt --keys "$work/keys" --model "$card" --input "$work/x.npy" --out "$work/q.ct" >/dev/null
"$bin" --json evaluate --no-flooding --model "$card" --eval-keys "$work/keys/eval.keys" \
    --params "$work/keys/params.toml" --input "$work/q.ct" --out "$work/r.ct" >/dev/null

measure() { # label, expected exit, command...
    local label="$1" want="$2"; shift 2
    local log="$work/time.log" rc=0
    /usr/bin/time -v "$@" >/dev/null 2>"$log" || rc=$?
    local kb secs reason
    kb=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
    secs=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}')
    reason=$(grep -E '^error|caused by' "$log" | tail -n1 | sed 's/^ *caused by: //' | cut -c1-120 || true)
    printf '| %s | %s | %s | %.1f | %s |\n' "$label" "$rc" "$secs" "$(echo "$kb / 1024" | bc -l)" "$reason"
    if [ "$rc" != "$want" ]; then echo "unexpected exit $rc (wanted $want) for $label" >&2; fi
}

echo "| case | exit | wall | peak RSS MiB | refusal |"
echo "|---|---:|---:|---:|---|"
measure "legitimate decrypt (4 samples)" 0 \
    "$bin" decrypt --keys "$work/keys" --model "$card" --input "$work/r.ct" --out "$work/l.npy"
cp -r "$work/keys" "$work/k1"
truncate -s 3G "$work/k1/secret.key"
measure "3 GB secret.key (valid header, sparse)" 1 \
    "$bin" decrypt --keys "$work/k1" --model "$card" --input "$work/r.ct" --out "$work/l1.npy"
cp -r "$work/keys" "$work/k2"
truncate -s 3G "$work/k2/params.toml"
measure "3 GB params.toml (sparse)" 1 \
    "$bin" encrypt --keys "$work/k2" --model "$card" --input "$work/x.npy" --out "$work/q2.ct"
cp -r "$work/keys" "$work/k3"
truncate -s 3G "$work/k3/eval.keys"
measure "3 GB eval.keys (sparse)" 1 \
    "$bin" evaluate --no-flooding --model "$card" --eval-keys "$work/k3/eval.keys" \
    --params "$work/k3/params.toml" --input "$work/q.ct" --out "$work/r3.ct"
cp "$work/r.ct" "$work/r4.ct"; cp "$work/r.ct.json" "$work/r4.ct.json"
truncate -s 3G "$work/r4.ct"
measure "3 GB result ciphertext (sparse)" 1 \
    "$bin" decrypt --keys "$work/keys" --model "$card" --input "$work/r4.ct" --out "$work/l4.npy"
measure "weights = /dev/zero" 1 \
    "$bin" evaluate --no-flooding --model "$card" --weights /dev/zero --eval-keys "$work/keys/eval.keys" \
    --params "$work/keys/params.toml" --input "$work/q.ct" --out "$work/r5.ct"
ln -s /dev/urandom "$work/rand.npy"
measure "features symlinked to /dev/urandom" 1 \
    "$bin" encrypt --keys "$work/keys" --model "$card" --input "$work/rand.npy" --out "$work/q6.ct"
truncate -s 3G "$work/big.json"; cp "$work/r.ct" "$work/r7.ct"; mv "$work/big.json" "$work/r7.ct.json"
measure "3 GB result sidecar .json (sparse)" 1 \
    "$bin" decrypt --keys "$work/keys" --model "$card" --input "$work/r7.ct" --out "$work/l7.npy"
measure "--threads 100000" 1 \
    "$bin" --threads 100000 decrypt --keys "$work/keys" --model "$card" --input "$work/r.ct" --out "$work/l8.npy"
