#!/usr/bin/env python3
"""Builds the hepeft-vs-SEAL table from criterion's estimates and SEAL's JSON.

Usage: compare_table.py CRITERION_DIR SEAL_JSON
"""
import json
import os
import sys

crit, seal_path = sys.argv[1], sys.argv[2]
seal = json.load(open(seal_path))


def median_ms(group, bench):
    path = os.path.join(crit, group, bench, "new", "estimates.json")
    if not os.path.exists(path):
        # parameterised ids live one directory deeper
        base = os.path.join(crit, group, bench)
        if os.path.isdir(base):
            for sub in sorted(os.listdir(base)):
                p = os.path.join(base, sub, "new", "estimates.json")
                if os.path.exists(p):
                    path = p
                    break
    if not os.path.exists(path):
        return None
    return json.load(open(path))["median"]["point_estimate"] / 1e6


OPS = [
    ("encode", "encode", "encode"),
    ("encrypt (public key)", "encrypt_pk", "encrypt_pk"),
    ("decrypt", "decrypt", "decrypt"),
    ("decode", "decode", "decode"),
    ("add", "add", "add"),
    ("mul_plain + rescale", "mul_plain_rescale", "mul_plain_rescale"),
    ("mul + relin + rescale", "mul_relin_rescale", "mul_relin_rescale"),
    ("rotate", "rotate", "rotate"),
    ("8 rotations, hoisted (SEAL: 8 plain)", "rotate_hoisted_8", "rotate_many_8"),
]

for label, group, seal_cfg in [
    ("N = 2^13, Q = 60/40/40, P = 60", "N13_seal_chain", "A"),
    ("N = 2^14, Q = 60/40x6, P = 60", "N14_seal_chain", "B"),
]:
    ops = seal["configs"][seal_cfg]["ops"]
    print(f"\n### {label} (single thread, medians)\n")
    print("| operation | hepeft ms | SEAL 4.3 ms | SEAL / hepeft |")
    print("|---|---:|---:|---:|")
    for name, ours, theirs in OPS:
        h = median_ms(group, ours)
        s = ops.get(theirs, {}).get("median_ms")
        ratio = f"{s / h:.2f}x" if h and s else "-"
        hs = f"{h:.3f}" if h is not None else "-"
        ss = f"{s:.3f}" if s is not None else "-"
        print(f"| {name} | {hs} | {ss} | {ratio} |")
    ntt_seal = ops.get("ntt_fwd", {}).get("median_ms_per_limb")
    for bench in ["ntt_fwd_q0", "ntt_fwd_q1"]:
        h = median_ms(group, bench)
        if h is not None:
            print(f"| forward NTT, one prime ({bench[-2:]}) | {h * 1000:.1f} us | {ntt_seal * 1000 if ntt_seal else float('nan'):.1f} us (per limb) | - |")

for label, group in [("N = 2^13, fast preset CKKS_N13_QP212_128 (all primes < 2^50)", "N13_fast_QP212"),
                     ("N = 2^14, preset CKKS_N14_QP430_128 (all primes < 2^50)", "N14_fast_QP430")]:
    print(f"\n### {label} (hepeft only, single thread, medians)\n")
    print("| operation | hepeft ms |")
    print("|---|---:|")
    for name, ours, _ in OPS:
        h = median_ms(group, ours)
        if h is not None:
            print(f"| {name} | {h:.3f} |")
