#!/usr/bin/env python3
"""SEAL side of bench/heads_vs_seal.sh: hand-written BSGS diagonal matrix-vector products on
the issue-13 shapes, single thread, N = 2^13, through TenSEAL's `tenseal.sealapi`.

Shapes (the same as `cargo bench --bench head -- head_selected`):
  a_768_64_100  768 -> 64 -> (0.5 t + 0.25 t^2) -> 100, chain 50/35/35/35 + 50 (depth 3)
  b_384_8_10    384 -> 8  -> (0.5 t + 0.25 t^2) -> 10,  same chain
  lora_768_r8   B (A x), A: 8 x 768,  B: 768 x 8,  chain 50/35/35 + 50 (depth 2)
  lora_768_r64  B (A x), A: 64 x 768, B: 768 x 64, same chain

Layout (the one hepeft uses, so both sides do the same key switches): a vector of width n
sits in slots 0..n and repeats with period next_pow2(n). An m x n block uses
k = min(M, P) generalised diagonals (M = next_pow2(m), P the input period), evaluated by
baby-step giant-step (g = smallest power of two with g^2 >= k; diagonals pre-rotated in
plaintext), then rotate-and-sum by M, 2M, ... while the block is wide. The activation
0.5 h + 0.25 h^2 = 0.25 (h + 1)^2 - 0.25 is one square: the 0.25 goes into W2 and the
-0.25 W2 1 into its bias. Galois keys exist for exactly the steps used. SEAL has no hoisted
rotations in its public API, so every rotation is a full key switch.

Prints exactly one JSON object on stdout (progress on stderr).
Knobs: HEADS_SEAL_RUNS (timed runs per shape, default 10).
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
import math
import statistics
import sys
import tempfile
import time

import numpy as np
import tenseal.sealapi as sealapi

N = 8192
SLOTS = N // 2
RUNS = int(os.environ.get("HEADS_SEAL_RUNS", "10"))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def pow2(n):
    p = 1
    while p < n:
        p *= 2
    return p


def baby_step(k):
    g = 1
    while g * g < k:
        g *= 2
    return min(g, max(k, 1))


def saved_size(obj):
    fd, path = tempfile.mkstemp(prefix="heads-seal-", suffix=".bin")
    os.close(fd)
    try:
        obj.save(path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


class Block:
    """An m x n matrix on an input of period `p_in`: its diagonals, BSGS shape and steps."""

    def __init__(self, w, p_in):
        m, n = w.shape
        self.m_out = pow2(m)
        k = min(self.m_out, p_in)
        d = max(self.m_out, p_in)
        s = np.arange(SLOTS)
        t = s % d
        row = t % self.m_out
        self.g = baby_step(k)
        self.h = -(-k // self.g)
        self.diags = {}  # (b, a) -> pre-rotated diagonal
        for kk in range(k):
            col = (t + kk) % p_in
            ok = (row < m) & (col < n)
            diag = np.where(ok, w[np.minimum(row, m - 1), np.minimum(col, n - 1)], 0.0)
            if not diag.any():
                continue
            b, a = divmod(kk, self.g)
            self.diags[(b, a)] = np.roll(diag, b * self.g)  # rot(diag, -g b)
        self.baby = sorted({a for (_, a) in self.diags if a > 0})
        self.giant = sorted({b * self.g for (b, _) in self.diags if b > 0})
        self.row_sum = []
        w_ = self.m_out
        while w_ < p_in:
            self.row_sum.append(w_)
            w_ *= 2

    def steps(self):
        return set(self.baby) | set(self.giant) | set(self.row_sum)

    def rotations(self):
        return len(self.baby) + len(self.giant) + len(self.row_sum)


class Seal:
    def __init__(self, bits, scale_bits):
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(N)
        parms.set_coeff_modulus(sealapi.CoeffModulus.Create(N, bits))
        self.ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
        if not self.ctx.parameters_set():
            raise RuntimeError(self.ctx.parameters_error_message())
        self.scale = 2.0 ** scale_bits
        self.keygen = sealapi.KeyGenerator(self.ctx)
        self.encoder = sealapi.CKKSEncoder(self.ctx)
        self.ev = sealapi.Evaluator(self.ctx)
        self.encryptor = sealapi.Encryptor(self.ctx, self.keygen.secret_key())
        self.decryptor = sealapi.Decryptor(self.ctx, self.keygen.secret_key())

    def keys(self, steps, relin):
        self.gk = sealapi.GaloisKeys()
        self.keygen.create_galois_keys([pow(3, s, 2 * N) for s in sorted(steps)], self.gk)
        size = saved_size(self.gk)
        self.rk = None
        if relin:
            self.rk = sealapi.RelinKeys()
            self.keygen.create_relin_keys(self.rk)
            size += saved_size(self.rk)
        return size

    def encode(self, v, parms_id, scale):
        pt = sealapi.Plaintext()
        self.encoder.encode([float(x) for x in v], parms_id, scale, pt)
        return pt

    def prepare(self, block, parms_id):
        block.pts = {key: self.encode(d, parms_id, self.scale) for key, d in block.diags.items()}

    def matvec(self, block, ct):
        ev = self.ev
        babies = {0: ct}
        for a in block.baby:
            r = sealapi.Ciphertext()
            ev.rotate_vector(ct, a, self.gk, r)
            babies[a] = r
        acc = None
        for b in range(block.h):
            inner = None
            for a in range(block.g):
                pt = block.pts.get((b, a))
                if pt is None:
                    continue
                prod = sealapi.Ciphertext()
                ev.multiply_plain(babies[a], pt, prod)
                if inner is None:
                    inner = prod
                else:
                    ev.add_inplace(inner, prod)
            if inner is None:
                continue
            if b > 0:
                ev.rotate_vector_inplace(inner, b * block.g, self.gk)
            if acc is None:
                acc = inner
            else:
                ev.add_inplace(acc, inner)
        for s in block.row_sum:
            r = sealapi.Ciphertext()
            ev.rotate_vector(acc, s, self.gk, r)
            ev.add_inplace(acc, r)
        ev.rescale_to_next_inplace(acc)
        return acc

    def decode(self, ct, n):
        pt = sealapi.Plaintext()
        self.decryptor.decrypt(ct, pt)
        return np.array(self.encoder.decode_double(pt)[:n])


def pack(x):
    p = pow2(len(x))
    v = np.zeros(SLOTS)
    for s in range(SLOTS):
        i = s % p
        if i < len(x):
            v[s] = x[i]
    return v


def bits(got, want):
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)
    return -math.log2(max(err, 1e-300))


def timed(fn):
    fn()  # warm-up
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return round(statistics.median(samples), 3), round(min(samples), 3)


def head(name, d, hidden, classes, rng):
    w1 = rng.uniform(-1, 1, (hidden, d)) / math.sqrt(d)
    w2 = rng.uniform(-1, 1, (classes, hidden)) / math.sqrt(hidden)
    x = rng.uniform(-1, 1, d)
    h = w1 @ x
    want = w2 @ (0.5 * h + 0.25 * h * h)
    s = Seal([50, 35, 35, 35, 50], 35)
    b1 = Block(w1, pow2(d))
    b2 = Block(0.25 * w2, b1.m_out)
    key_bytes = s.keys(b1.steps() | b2.steps(), True)
    ctx = s.ctx
    top = ctx.first_parms_id()
    l1 = ctx.get_context_data(top).next_context_data().parms_id()
    l2 = ctx.get_context_data(l1).next_context_data().parms_id()
    s.prepare(b1, top)
    s.prepare(b2, l2)
    ct = sealapi.Ciphertext()
    s.encryptor.encrypt_symmetric(s.encode(pack(x), top, s.scale), ct)
    bias = -0.25 * w2.sum(axis=1)
    ev = s.ev

    def run():
        y = s.matvec(b1, ct)
        one = s.encode(np.ones(SLOTS), y.parms_id(), y.scale)
        ev.add_plain_inplace(y, one)
        sq = sealapi.Ciphertext()
        ev.square(y, sq)
        ev.relinearize_inplace(sq, s.rk)
        ev.rescale_to_next_inplace(sq)
        z = s.matvec(b2, sq)
        ev.add_plain_inplace(z, s.encode(pack(bias), z.parms_id(), z.scale))
        return z

    z = run()
    got = s.decode(z, classes)
    med, mn = timed(run)
    rot = b1.rotations() + b2.rotations()
    log(f"[seal] {name}: median {med} ms, {rot} rotations + 1 relin, {bits(got, want):.1f} bits")
    return {"name": name, "median_ms": med, "min_ms": mn, "runs": RUNS,
            "rotations": rot, "key_switches": rot + 1, "rotation_keys": len(b1.steps() | b2.steps()),
            "bits": round(bits(got, want), 2), "query_bytes": saved_size(ct),
            "result_bytes": saved_size(z), "key_bytes": key_bytes}


def lora(name, d, r, rng):
    a = rng.uniform(-1, 1, (r, d)) / math.sqrt(d)
    bm = rng.uniform(-1, 1, (d, r)) / math.sqrt(r)
    x = rng.uniform(-1, 1, d)
    want = bm @ (a @ x)
    s = Seal([50, 35, 35, 50], 35)
    ba = Block(a, pow2(d))
    bb = Block(bm, ba.m_out)
    key_bytes = s.keys(ba.steps() | bb.steps(), False)
    ctx = s.ctx
    top = ctx.first_parms_id()
    l1 = ctx.get_context_data(top).next_context_data().parms_id()
    s.prepare(ba, top)
    s.prepare(bb, l1)
    ct = sealapi.Ciphertext()
    s.encryptor.encrypt_symmetric(s.encode(pack(x), top, s.scale), ct)

    def run():
        return s.matvec(bb, s.matvec(ba, ct))

    z = run()
    got = s.decode(z, d)
    med, mn = timed(run)
    rot = ba.rotations() + bb.rotations()
    log(f"[seal] {name}: median {med} ms, {rot} rotations, {bits(got, want):.1f} bits")
    return {"name": name, "median_ms": med, "min_ms": mn, "runs": RUNS,
            "rotations": rot, "key_switches": rot, "rotation_keys": len(ba.steps() | bb.steps()),
            "bits": round(bits(got, want), 2), "query_bytes": saved_size(ct),
            "result_bytes": saved_size(z), "key_bytes": key_bytes}


def main():
    rng = np.random.default_rng(13)
    results = [
        head("a_768_64_100", 768, 64, 100, rng),
        head("b_384_8_10", 384, 8, 10, rng),
        lora("lora_768_r8", 768, 8, rng),
        lora("lora_768_r64", 768, 64, rng),
    ]
    print(json.dumps({"N": N, "threads": 1, "results": results}))


if __name__ == "__main__":
    main()
