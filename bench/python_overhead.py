"""Python-call overhead of `Server.evaluate` against the same Rust call, on the LoRA head of
`cargo bench --bench head` (W x + b + 2 B (A x), d = 384, r = 8, 10 classes,
CKKS_N13_QP200_128, latency mode, one query).

    python bench/python_overhead.py [--rounds 15] [--calls 5]

Each round times `calls` Python calls of `server.evaluate(query, keys)` (argument
conversion, GIL release, result wrapping included) and `calls` iterations of the same Rust
work in one Rust loop (`hepeft._hepeft._rust_evaluate_seconds`: key check, evaluation,
sanitization, no Python in between), interleaved (alternating which goes first) so machine load hits both alike.
Prints the medians and the overhead. Needs the package installed (`pip install ./python`).
"""

import argparse
import statistics
import time

import numpy as np

import hepeft
from hepeft import _hepeft


def lora_head(rng, d=384, r=8, classes=10):
    b = hepeft.Builder()
    x = b.input("x", d)
    base = b.linear(x, rng.uniform(-0.05, 0.05, (classes, d)), rng.uniform(-0.1, 0.1, classes))
    delta = b.low_rank(x, rng.uniform(-0.05, 0.05, (r, d)), rng.uniform(-0.05, 0.05, (classes, r)), scale=2.0)
    b.add([base, delta])
    return b.build()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    model = lora_head(rng)
    params = hepeft.Params.preset("CKKS_N13_QP200_128")
    client = hepeft.Client.keygen(model.public(), params)
    # The preset cannot carry 40-bit flooding (as in the CLI demo): both sides run without.
    server = hepeft.Server(model, params, flooding_bits=None)
    keys = client.eval_keys()
    x = rng.uniform(-1, 1, (1, 384))
    query = client.encrypt(x)
    # warm-up, and a correctness check against the plaintext twin
    got = client.decrypt(server.evaluate(query, keys))
    err = float(np.max(np.abs(got - model.reference(x))))
    _hepeft._rust_evaluate_seconds(server, query, keys, 1)

    def python_round():
        t = time.perf_counter()
        for _ in range(args.calls):
            server.evaluate(query, keys)
        return (time.perf_counter() - t) / args.calls

    py, rs = [], []
    for i in range(args.rounds):
        # alternate which side goes first, so drifting load does not favour one
        if i % 2 == 0:
            py.append(python_round())
            rs.append(_hepeft._rust_evaluate_seconds(server, query, keys, args.calls))
        else:
            rs.append(_hepeft._rust_evaluate_seconds(server, query, keys, args.calls))
            py.append(python_round())
    p, r = statistics.median(py), statistics.median(rs)
    paired = statistics.median([a / b - 1 for a, b in zip(py, rs)])
    print(f"LoRA head d=384 r=8 10 classes, {params.describe()}")
    print(f"{server.key_switches} key switches per query; max |error| vs twin {err:.2e}")
    print(f"rounds {args.rounds} x {args.calls} calls")
    print(f"Rust loop      median {r * 1e3:8.2f} ms per call (min {min(rs) * 1e3:.2f})")
    print(f"Python call    median {p * 1e3:8.2f} ms per call (min {min(py) * 1e3:.2f})")
    print(f"overhead       {100 * (p / r - 1):+.2f} % of medians, {100 * paired:+.2f} % median of paired rounds, "
          f"{100 * (min(py) / min(rs) - 1):+.2f} % of minima, {(p - r) * 1e6:+.0f} us per call (medians)")


if __name__ == "__main__":
    main()
