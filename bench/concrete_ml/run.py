"""Concrete ML on the exact path's benchmark head, with the same float weights.

Reads w1 (64x384), b1 (1x64), w2 (10x64), b2 (1x10), calib (256x384) and test (1000x384)
written by `cargo bench --bench exact`, builds the same torch MLP, compiles it with
post-training quantization at --bits (default 6, as in docs/BENCHMARKS.md), and measures
on this machine, in one run: key generation, evaluation-key bytes, query and result bytes,
server latency per sample (median of --runs), and argmax agreement with the f64 model.
Prints one JSON object.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer
from concrete.ml.torch.compile import compile_torch_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--bits", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounding", type=int, default=None,
                    help="rounding_threshold_bits (accumulators rounded to this many bits before each TLU)")
    ap.add_argument("--p-error", type=float, default=None,
                    help="per-PBS error probability (Concrete ML default if omitted)")
    a = ap.parse_args()
    ld = lambda n: np.load(a.data / f"{n}.npy")
    w1, b1, w2, b2 = ld("w1"), ld("b1")[0], ld("w2"), ld("b2")[0]
    calib, test = ld("calib").astype(np.float32), ld("test").astype(np.float32)

    model = torch.nn.Sequential(torch.nn.Linear(384, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w1)); model[0].bias.copy_(torch.tensor(b1))
        model[2].weight.copy_(torch.tensor(w2)); model[2].bias.copy_(torch.tensor(b2))
    f64 = np.maximum(test.astype(np.float64) @ w1.T + b1, 0.0) @ w2.T + b2

    t = time.perf_counter()
    kw = {} if a.p_error is None else {"p_error": a.p_error}
    if a.rounding is not None:
        kw["rounding_threshold_bits"] = a.rounding
    q = compile_torch_model(model, calib, n_bits=a.bits, **kw)
    compile_s = time.perf_counter() - t
    clear = q.forward(test, fhe="disable")
    agree = float(np.mean(np.argmax(clear, 1) == np.argmax(f64, 1)))

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        FHEModelDev(path_dir=str(d / "model"), model=q).save()
        client = FHEModelClient(path_dir=str(d / "model"), key_dir=str(d / "keys"))
        t = time.perf_counter()
        client.generate_private_and_evaluation_keys()
        keygen_s = time.perf_counter() - t
        ek = client.get_serialized_evaluation_keys()
        server = FHEModelServer(path_dir=str(d / "model"))
        server.load()
        times, fhe_agree, up, down = [], 0, 0, 0
        for i in range(a.runs):
            x = test[i : i + 1]
            enc = client.quantize_encrypt_serialize(x)
            t = time.perf_counter()
            res = server.run(enc, ek)
            times.append(time.perf_counter() - t)
            out = client.deserialize_decrypt_dequantize(res)
            fhe_agree += int(np.argmax(out) == np.argmax(clear[i]))
            up, down = len(enc), len(res)
    print(json.dumps({
        "concrete_ml": "1.9.0", "bits": a.bits, "p_error": a.p_error, "rounding_threshold_bits": a.rounding,
        "compile_s": compile_s, "keygen_s": keygen_s,
        "eval_key_bytes": len(ek), "query_bytes": up, "result_bytes": down,
        "server_s_median": statistics.median(times), "server_s_all": times,
        "argmax_agreement_clear_vs_f64": agree,
        "fhe_matches_clear": f"{fhe_agree}/{a.runs}",
    }, indent=1))


if __name__ == "__main__":
    main()
