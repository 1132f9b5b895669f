"""A small IMAGE task with no backbone: scikit-learn's bundled 8x8 digits (1,797 images,
10 classes, no download). The client's "features" are the 64 pixel intensities / 16.
Held-out: 300 images (stratified split, seed 0). Adapters: a linear probe and a bottleneck
adapter 64 -> 32 -> 0.25 + 0.5 h + 0.125 h^2 -> 64 + residual -> head, trained with the
polynomial the encrypted model evaluates. Output: assets/real/digits/.
"""
import json
import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import reference_eval
from train_text import (ACT, bottleneck_nodes, fold_standardisation, POLY2, POLY2_INTERVAL, ROOT, acc, bottleneck_forward, f32, fit, init,
                        standardiser, write_card)

OUT = os.environ.get("HEPEFT_DIGITS_OUT", os.path.join(ROOT, "assets", "real", "digits"))


def main():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=300, stratify=y, random_state=0)
    mu, sd = standardiser(xtr)
    std = lambda x: (x - mu) / sd
    k, d, hid = 10, 64, 32

    print("probe", flush=True)
    fwd = lambda p, X: (X["x"] @ p["W"].T + p["b"], lambda gz: {"W": gz.T @ X["x"], "b": gz.sum(0)})
    p = fit(fwd, {"W": np.zeros((k, d)), "b": np.zeros(k)}, {"x": std(xtr)}, ytr, 60, 1e-2, 1e-3)
    W = p["W"] / sd
    write_card("probe", "linear probe on 8x8 digit pixels", [("pixels", d)],
               [{"name": "logits", "op": "linear", "inputs": ["pixels"], "weight": "head.weight", "bias": "head.bias"}],
               {"head.weight": W, "head.bias": p["b"] - W @ mu}, "trained by training/train_digits.py", out=OUT)

    print("bottleneck", flush=True)
    p = {"Wd": init((hid, d), d) * 0.5, "bd": np.zeros(hid), "Wu": np.zeros((d, hid)), "bu": np.zeros(d),
         "Wh": np.zeros((k, d)), "bh": np.zeros(k)}
    p = fit(lambda q, X: bottleneck_forward(q, X, ACT["poly2"], pen=1.0, bound=4.0), p,
            {"x": std(xtr), "xs": std(xtr)}, ytr, 60, 3e-3, 1e-3)
    lo, hi = POLY2_INTERVAL
    write_card("bottleneck", "bottleneck adapter 64-32-poly2-64 + residual + head (8x8 digits)", [("pixels", d)],
               bottleneck_nodes(["pixels"], "pixels", {"interval": [lo, hi], "coeffs": list(POLY2)}),
               fold_standardisation(p, mu, sd, mu, sd),
               "trained with 0.25 + 0.5 h + 0.125 h^2 (the polynomial evaluated encrypted); standardisation folded into the weights", out=OUT)

    feats = os.path.join(OUT, "features")
    os.makedirs(feats, exist_ok=True)
    np.save(os.path.join(feats, "pixels.npy"), f32(xte))
    np.save(os.path.join(feats, "labels.npy"), f32(yte))
    manifest = {
        "task": "digits",
        "description": "scikit-learn load_digits (UCI optical digits, 8x8), 10 classes; no backbone: pixels / 16",
        "backbone": "none (identity on pixels / 16)",
        "classes": [str(i) for i in range(10)],
        "train_samples": int(len(ytr)),
        "test_samples": int(len(yte)),
        "features": {"pixels": "features/pixels.npy"},
        "labels": "features/labels.npy",
        "adapters": {},
    }
    for name in ("probe", "bottleneck"):
        card = os.path.join(OUT, name, "card.toml")
        z_tr, r_tr = reference_eval.evaluate(card, {"pixels": xtr})
        z_te, r_te = reference_eval.evaluate(card, {"pixels": f32(xte).astype(float)})
        entry = {"card": f"{name}/card.toml", "inputs": ["pixels"], "train_accuracy": acc(z_tr, ytr),
                 "test_accuracy": acc(z_te, yte)}
        if r_te:
            entry["preactivation_range_test"], entry["preactivation_range_train"] = r_te, r_tr
        manifest["adapters"][name] = entry
        print(name, json.dumps(entry), flush=True)
    json.dump(manifest, open(os.path.join(OUT, "manifest.json"), "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
