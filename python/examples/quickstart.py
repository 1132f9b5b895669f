"""The task of `hepeft demo`, through Python: a bottleneck adapter trained on fine-food
review embeddings (all-MiniLM-L6-v2, 384 dims) predicts "great" (5 stars) vs "other" on
held-out reviews, encrypted end to end.

    python python/examples/quickstart.py            # 4 samples, as the CLI demo
    python python/examples/quickstart.py --samples 16

The adapter and the features ship in assets/real/finefoods (the CLI embeds the same files).
"""

import argparse
import pathlib
import time

import numpy as np

import hepeft

REPO = pathlib.Path(__file__).resolve().parents[2]
TASK = REPO / "assets" / "real" / "finefoods"
CLASSES = ["other", "great"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()

    # Server side: the private adapter, and the public structure it gives its clients.
    model = hepeft.Model.load(TASK / "bottleneck" / "card.toml")
    public = hepeft.publish(model)
    params = hepeft.Params.preset("CKKS_N14_QP430_128")
    print(f"model   {model}\nparams  {params.describe()}")
    # Every result is masked, dropped to level 0 and re-randomized. Noise flooding is off
    # as in the CLI demo: 40-bit flooding needs more precision than the presets carry
    # (docs/threat-model.md; hepeft.params.select(model, flooding_bits=40) picks a set
    # that carries it, and Server(..., flooding_bits=40) is the default).
    t = time.perf_counter()
    server = hepeft.Server(model, params, flooding_bits=None)
    print(f"server  {server.key_switches} key switches per query "
          f"(prepared in {time.perf_counter() - t:.2f} s)")

    # Client side: keys from the public structure only; the features of held-out reviews.
    features = np.load(TASK / "features" / "emb.npy")[: args.samples]
    labels = np.load(TASK / "features" / "labels.npy")[: args.samples].astype(int)
    t = time.perf_counter()
    client = hepeft.Client.keygen(public, params)
    eval_keys = client.eval_keys()
    t_keygen = time.perf_counter() - t
    t = time.perf_counter()
    query = client.encrypt(features)
    t_encrypt = time.perf_counter() - t

    # Server: evaluate, then sanitize (mask, level 0, re-randomize; no flooding, see above).
    t = time.perf_counter()
    result = server.evaluate(query, eval_keys)
    t_eval = time.perf_counter() - t

    t = time.perf_counter()
    logits = client.decrypt(result)
    t_decrypt = time.perf_counter() - t

    twin = model.reference(features)  # the plaintext twin
    err = np.max(np.abs(logits - twin))
    bits = -np.log2(err / np.max(np.abs(twin)))
    pred = logits.argmax(axis=1)
    print(f"\nkeygen {t_keygen:.3f} s, encrypt {t_encrypt:.3f} s, evaluate {t_eval:.3f} s, "
          f"decrypt {t_decrypt:.3f} s")
    print(f"bytes: evaluation keys {len(eval_keys.to_bytes()) / 2**20:.2f} MiB, "
          f"query {len(query.to_bytes()) / 2**20:.2f} MiB, "
          f"result {len(result.to_bytes()) / 2**20:.2f} MiB")
    print(f"argmax agreement with the plaintext twin {int((pred == twin.argmax(axis=1)).sum())}"
          f"/{len(pred)}, precision {bits:.1f} bits relative to the largest logit")
    print("predicted  " + " ".join(CLASSES[p] for p in pred))
    print("true       " + " ".join(CLASSES[y] for y in labels))
    print(f"accuracy   {(pred == labels).mean():.3f} on these held-out samples")


if __name__ == "__main__":
    main()
