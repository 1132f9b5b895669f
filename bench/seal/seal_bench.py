#!/usr/bin/env python3
"""Single-thread CKKS micro-benchmarks of Microsoft SEAL through TenSEAL's `tenseal.sealapi`.

Prints exactly one JSON object on stdout; progress goes to stderr.
Run it through bench/seal/run.sh, which sets up the pinned environment.

Environment knobs (all optional):
  SEAL_BENCH_RUNS     override the number of timed runs for every operation
  SEAL_BENCH_WARMUP   override the number of warm-up runs (default 10)
  SEAL_BENCH_CONFIGS  comma-separated subset of configs to run, e.g. "A"
"""

import os

# Must happen before numpy is imported: keep any BLAS/OpenMP pool single-threaded.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gc
import json
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import tenseal
import tenseal.sealapi as sealapi

CONFIGS = {
    "A": {"poly_modulus_degree": 8192, "coeff_modulus_bits": [60, 40, 40, 60], "scale_bits": 40},
    "B": {"poly_modulus_degree": 16384,
          "coeff_modulus_bits": [60, 40, 40, 40, 40, 40, 40, 60], "scale_bits": 40},
}

# Timed runs per config (after warm-up). Chosen so the whole script stays well under 3 minutes
# on a 2-core shared machine.
RUNS = {"A": 200, "B": 100}
RUNS_MANY = {"A": 60, "B": 30}  # rotate_many_8 is ~8x a rotation
WARMUP = int(os.environ.get("SEAL_BENCH_WARMUP", "10"))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_thread_count():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def bench(fn, runs, warmup=WARMUP, setup=None):
    """Time `fn` individually `runs` times after `warmup` calls; returns stats in ms.

    `setup`, if given, runs before every call and is not timed.
    """
    runs = int(os.environ.get("SEAL_BENCH_RUNS", runs))
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            if setup:
                setup()
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    ms = [s / 1e6 for s in samples]
    return {"median_ms": round(statistics.median(ms), 4), "min_ms": round(min(ms), 4),
            "runs": runs}


def saved_size(obj):
    """Bytes written by SEAL's save() (SEAL's default compression, see `compr_mode`)."""
    fd, path = tempfile.mkstemp(prefix="seal-bench-", suffix=".bin")
    os.close(fd)
    try:
        obj.save(path)
        size = os.path.getsize(path)
        header = sealapi.Serialization.SEALHeader()
        sealapi.Serialization.LoadHeader(path, header, True)
        return size, header
    finally:
        os.unlink(path)


def galois_elt_for_step(step, n):
    # CKKS slot rotation by `step` (left) is the automorphism X -> X^(3^step mod 2N).
    # NB: sealapi's KeyGenerator.create_galois_keys(list) takes Galois *elements*, not steps.
    return pow(3, step, 2 * n)


def run_config(name, cfg):
    n = cfg["poly_modulus_degree"]
    bits = cfg["coeff_modulus_bits"]
    scale = 2.0 ** cfg["scale_bits"]
    runs, runs_many = RUNS[name], RUNS_MANY[name]
    log(f"[{name}] N={n} bits={bits}: key generation")

    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(n, bits))
    ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise RuntimeError(f"SEAL rejected config {name}: {ctx.parameters_error_message()}")

    keygen = sealapi.KeyGenerator(ctx)
    pk = sealapi.PublicKey()
    keygen.create_public_key(pk)
    rk = sealapi.RelinKeys()
    keygen.create_relin_keys(rk)
    gk1 = sealapi.GaloisKeys()
    keygen.create_galois_keys([galois_elt_for_step(1, n)], gk1)
    gk8 = sealapi.GaloisKeys()
    keygen.create_galois_keys([galois_elt_for_step(k, n) for k in range(1, 9)], gk8)

    encoder = sealapi.CKKSEncoder(ctx)
    encryptor = sealapi.Encryptor(ctx, pk)
    decryptor = sealapi.Decryptor(ctx, keygen.secret_key())
    evaluator = sealapi.Evaluator(ctx)
    slots = encoder.slot_count()
    assert slots == n // 2

    rng = np.random.default_rng(12345)
    x = rng.uniform(-1.0, 1.0, slots)
    y = rng.uniform(-1.0, 1.0, slots)
    x_list, y_list = x.tolist(), y.tolist()

    pt_x = sealapi.Plaintext()
    encoder.encode(x_list, scale, pt_x)
    pt_y = sealapi.Plaintext()
    encoder.encode(y_list, scale, pt_y)
    ct_x = sealapi.Ciphertext()
    encryptor.encrypt(pt_x, ct_x)
    ct_y = sealapi.Ciphertext()
    encryptor.encrypt(pt_y, ct_y)

    top = ctx.first_context_data()
    level_primes = len(top.parms().coeff_modulus())  # data primes at the top level (no P)
    assert ct_x.coeff_modulus_size() == level_primes

    def dec(ct):
        p = sealapi.Plaintext()
        decryptor.decrypt(ct, p)
        return np.array(encoder.decode_double(p))

    # ---- correctness checks (so we never time an error path) ----
    out = sealapi.Ciphertext()
    evaluator.multiply_plain(ct_x, pt_y, out)
    evaluator.rescale_to_next_inplace(out)
    err_mp = float(np.max(np.abs(dec(out) - x * y)))
    evaluator.multiply(ct_x, ct_y, out)
    evaluator.relinearize_inplace(out, rk)
    evaluator.rescale_to_next_inplace(out)
    err_mul = float(np.max(np.abs(dec(out) - x * y)))
    evaluator.rotate_vector(ct_x, 1, gk1, out)
    err_rot = float(np.max(np.abs(dec(out) - np.roll(x, -1))))
    for k in range(1, 9):
        evaluator.rotate_vector(ct_x, k, gk8, out)
        err_rot = max(err_rot, float(np.max(np.abs(dec(out) - np.roll(x, -k)))))
    err_fresh = float(np.max(np.abs(dec(ct_x) - x)))
    for label, err in (("fresh", err_fresh), ("mul_plain", err_mp), ("mul", err_mul),
                       ("rotate", err_rot)):
        if not err < 1e-3:
            raise RuntimeError(f"[{name}] correctness check {label} failed: max err {err}")
    log(f"[{name}] correctness ok (max abs err fresh={err_fresh:.2e} mul={err_mul:.2e} "
        f"rot={err_rot:.2e}); timing")

    ops = {}
    pt_tmp = sealapi.Plaintext()
    ct_tmp = sealapi.Ciphertext()

    ops["encode"] = bench(lambda: encoder.encode(x_list, scale, pt_tmp), runs)
    # Part of `encode` is pybind11 converting a Python list of N/2 floats to std::vector.
    # Estimate it: the parms_id overload converts the list, then SEAL throws on a bogus parms_id.
    bogus = [1, 2, 3, 4]

    def conv_only():
        try:
            encoder.encode(x_list, bogus, scale, pt_tmp)
        except ValueError:
            pass
    ops["encode_pylist_conversion_est"] = bench(conv_only, runs)
    ops["encrypt_pk"] = bench(lambda: encryptor.encrypt(pt_x, ct_tmp), runs)
    ops["decrypt"] = bench(lambda: decryptor.decrypt(ct_x, pt_tmp), runs)
    decryptor.decrypt(ct_x, pt_tmp)
    ops["decode"] = bench(lambda: encoder.decode_double(pt_tmp), runs)

    def mul_plain_rescale():
        evaluator.multiply_plain(ct_x, pt_y, ct_tmp)
        evaluator.rescale_to_next_inplace(ct_tmp)
    ops["mul_plain_rescale"] = bench(mul_plain_rescale, runs)

    def mul_relin_rescale():
        evaluator.multiply(ct_x, ct_y, ct_tmp)
        evaluator.relinearize_inplace(ct_tmp, rk)
        evaluator.rescale_to_next_inplace(ct_tmp)
    ops["mul_relin_rescale"] = bench(mul_relin_rescale, runs)

    # Breakdown of mul_relin_rescale (out-of-place so every run sees the same input).
    ct3 = sealapi.Ciphertext()
    evaluator.multiply(ct_x, ct_y, ct3)
    ct_relin = sealapi.Ciphertext()
    evaluator.relinearize(ct3, rk, ct_relin)
    ops["mul_only"] = bench(lambda: evaluator.multiply(ct_x, ct_y, ct_tmp), runs)
    ops["relin_only"] = bench(lambda: evaluator.relinearize(ct3, rk, ct_tmp), runs)
    ops["rescale_only"] = bench(lambda: evaluator.rescale_to_next(ct_relin, ct_tmp), runs)

    ops["rotate"] = bench(lambda: evaluator.rotate_vector(ct_x, 1, gk1, ct_tmp), runs)

    outs = [sealapi.Ciphertext() for _ in range(8)]

    def rotate_many_8():
        for k in range(1, 9):
            evaluator.rotate_vector(ct_x, k, gk8, outs[k - 1])
    ops["rotate_many_8"] = bench(rotate_many_8, runs_many)

    ops["add"] = bench(lambda: evaluator.add(ct_x, ct_y, ct_tmp), runs)

    # NTT: reachable through Evaluator.transform_{to,from}_ntt_inplace on a ciphertext.
    # One call transforms size(=2) polynomials x level_primes RNS limbs of length N.
    ct_ntt = sealapi.Ciphertext()
    encryptor.encrypt(pt_x, ct_ntt)  # sealapi.Ciphertext has no copy constructor

    def to_coeff():
        if ct_ntt.is_ntt_form():
            evaluator.transform_from_ntt_inplace(ct_ntt)

    def to_ntt():
        if not ct_ntt.is_ntt_form():
            evaluator.transform_to_ntt_inplace(ct_ntt)
    ops["ntt_fwd"] = bench(lambda: evaluator.transform_to_ntt_inplace(ct_ntt), runs,
                           setup=to_coeff)
    ops["ntt_inv"] = bench(lambda: evaluator.transform_from_ntt_inplace(ct_ntt), runs,
                           setup=to_ntt)
    limbs = ct_ntt.size() * level_primes
    for key in ("ntt_fwd", "ntt_inv"):
        ops[key]["limbs_per_call"] = limbs
        ops[key]["median_ms_per_limb"] = round(ops[key]["median_ms"] / limbs, 5)

    # ---- sizes ----
    ct_saved, ct_header = saved_size(ct_x)
    gk_saved, _ = saved_size(gk1)
    rk_saved, _ = saved_size(rk)
    word = 8
    ks_raw = level_primes * 2 * (level_primes + 1) * n * word  # dnum=L keys, 2 polys over Q*P
    sizes = {
        "compr_mode": ct_header.compr_mode.name,
        "ciphertext_fresh_saved_bytes": ct_saved,
        "ciphertext_fresh_raw_bytes": ct_x.size() * level_primes * n * word,
        "galois_key_one_step_saved_bytes": gk_saved,
        "galois_key_one_step_raw_bytes": ks_raw,
        "relin_key_saved_bytes": rk_saved,
        "relin_key_raw_bytes": ks_raw,
    }

    return {
        "poly_modulus_degree": n,
        "coeff_modulus_bits": bits,
        "scale_bits": cfg["scale_bits"],
        "slots": slots,
        "data_primes_at_top_level": level_primes,
        "ops": ops,
        "sizes": sizes,
        "max_abs_err": {"fresh": err_fresh, "mul_plain_rescale": err_mp,
                        "mul_relin_rescale": err_mul, "rotate": err_rot},
        "_seal_header": (ct_header.version_major, ct_header.version_minor),
    }


def main():
    wanted = os.environ.get("SEAL_BENCH_CONFIGS", "A,B").split(",")
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    results = {}
    seal_version = None
    for name in wanted:
        name = name.strip()
        res = run_config(name, CONFIGS[name])
        major, minor = res.pop("_seal_header")
        seal_version = f"{major}.{minor}"
        results[name] = res
        log(f"[{name}] done at {time.perf_counter() - t_start:.1f}s")

    out = {
        "library": "Microsoft SEAL via tenseal.sealapi",
        "seal_version": seal_version,
        "seal_version_source": "major.minor from the SEAL serialization header (patch not exposed)",
        "tenseal_version": tenseal.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "threads": 1,
        "os_threads_in_process": os_thread_count(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                      "OPENBLAS_NUM_THREADS")},
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
        "timer": "time.perf_counter_ns per call, gc disabled; median and min over runs "
                 f"after {WARMUP} warm-up calls",
        "not_measured": {
            "hoisted_rotations": "SEAL has no hoisting; rotate_many_8 is 8 plain rotations",
        },
        "notes": [
            "encode/decode include pybind11 list<->std::vector conversion of N/2 Python floats; "
            "encode_pylist_conversion_est estimates that part",
            "ntt_fwd/ntt_inv: Evaluator.transform_to/from_ntt_inplace on a fresh ciphertext "
            "(2 polys x top-level data primes); median_ms_per_limb divides by that count",
            "raw sizes are computed as 8-byte words; saved sizes are SEAL save() output with "
            "its default compression",
            "public-key encryption yields a non-seeded ciphertext (both polys stored)",
        ],
        "total_wall_s": round(time.perf_counter() - t_start, 1),
        "configs": results,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
