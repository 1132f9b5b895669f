#!/usr/bin/env bash
# Issue 13: hepeft against a hand-written SEAL BSGS on the same shapes, back to back in one
# run, single-threaded: heads (a) 768 -> 64 -> (0.5t + 0.25t^2) -> 100 and (b) 384 -> 8 ->
# same -> 10, and the LoRA maps B(Ax) for d = 768, r = 8 and r = 64.
#   hepeft: `cargo bench --bench head -- head_selected` (parameters of `params select
#           --precision 16 --no-flooding`), medians from criterion's estimates.json; heads
#           (a) and (b) also as NAME/flood40: the parameters selected for the default
#           40-bit flooding, timed as evaluate + sanitize (issue 14), against the same
#           unflooded SEAL figure;
#   SEAL:   bench/seal/heads_bsgs.py through tenseal.sealapi at N = 2^13 in a throwaway
#           virtualenv outside the repository (created as bench/seal/run.sh does).
# Prints the CPU's AVX-512 flags, the load average before and after, medians, SEAL/hepeft
# ratios, measured precision and bytes. Usage: bench/heads_vs_seal.sh [VENV_DIR]
# HEPEFT_CARGO_FLAGS adds cargo flags to the hepeft build: on an AVX-512 machine,
#   HEPEFT_CARGO_FLAGS="--no-default-features --features cli" bash bench/heads_vs_seal.sh
# measures tfhe-ntt's AVX2 kernels (the `avx512` cargo feature off; see Cargo.toml).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=seal/venv.sh
source "$here/seal/venv.sh"
seal_venv heads_vs_seal.sh "$repo" "${1:-}"

export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
  NUMEXPR_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1
work="$(mktemp -d "${TMPDIR:-/tmp}/heads-vs-seal.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "avx512 flags: $(grep -o 'avx512[a-z]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

cd "$repo"
# shellcheck disable=SC2086 # word splitting of the flags is intended
cargo bench ${HEPEFT_CARGO_FLAGS:-} --bench head --no-run >&2
target="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
rm -rf "$target/criterion/head_selected"
# shellcheck disable=SC2086
cargo bench ${HEPEFT_CARGO_FLAGS:-} --bench head -- head_selected 2> "$work/hepeft.err" | grep -E '^head_selected|time:' >&2 || true
grep '^head_selected/' "$work/hepeft.err" > "$work/hepeft.info" || { cat "$work/hepeft.err" >&2; exit 1; }
"$venv/bin/python" "$here/seal/heads_bsgs.py" > "$work/seal.json"
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "hepeft plans (per stage: rotations, key switches, limb NTTs):"
grep -E '^(head_selected/|plan \(|  [A-Za-z0-9_.]+ +(linear|affine|poly|square|add|concat) )' "$work/hepeft.err" || true

"$venv/bin/python" - "$target/criterion/head_selected" "$work/hepeft.info" "$work/seal.json" <<'PY'
import json, os, sys
crit, info_path, seal_path = sys.argv[1:4]
info = {}
for line in open(info_path):
    head, *kv = line.split()
    info[head.split("/", 1)[1]] = dict(x.split("=", 1) for x in kv)
seal = {r["name"]: r for r in json.load(open(seal_path))["results"]}
def median_ms(name):
    name = name.replace("/", "_")
    for d in sorted(os.listdir(crit)):
        if d.startswith(name + "_"):
            est = json.load(open(os.path.join(crit, d, "new", "estimates.json")))
            return est["median"]["point_estimate"] / 1e6
    return float("nan")
kib = lambda b: f"{int(b) / 1024:.0f}"
print()
print("hepeft NTT path:", "; ".join(sorted({i.get("ntt_path", "?").replace("_", " ") for i in info.values() if "ntt_path" in i})))
print("layouts: auto = the compiler's choice (CLI default); rep = replicated input; preG = client pre-rotated input, up to G copies per segment")
print()
print("| shape / layout | hepeft N | hepeft ms | hepeft KS | hepeft limb NTTs | hepeft bits | SEAL N=2^13 ms | SEAL KS | SEAL bits | SEAL/hepeft |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, i in info.items():
    h = median_ms(name)
    s = seal.get(name.split("/")[0], {})
    sm = s.get("median_ms", float("nan"))
    print(f"| {name} | 2^{i['logn']} | {h:.1f} | {i['key_switches']} | {i.get('ntts', '-')} | {float(i['bits']):.1f} | "
          f"{sm:.1f} | {s.get('key_switches', '-')} | {s.get('bits', '-')} | {sm / h:.2f}x |")
print()
print("| shape | hepeft query / result / keys KiB | SEAL query / result / keys KiB |")
print("|---|---|---|")
for name, i in info.items():
    s = seal.get(name.split("/")[0], {})
    print(f"| {name} | {kib(i['query_bytes'])} / {kib(i['result_bytes'])} / {kib(i['key_bytes'])} | "
          f"{kib(s.get('query_bytes', 0))} / {kib(s.get('result_bytes', 0))} / {kib(s.get('key_bytes', 0))} |")
PY
