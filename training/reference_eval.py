"""A small numpy evaluator of hepeft model cards (the ops the shipped cards use), so that the
manifest's plaintext accuracies come from the exported files, not from the training graph."""
import os
import tomllib

import numpy as np
from numpy.polynomial import chebyshev as C
from safetensors.numpy import load_file


def _card(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def input_names(path):
    return [i["name"] for i in _card(path)["inputs"]]


def evaluate(path, feats):
    """Returns (logits [n, out], {poly node: [min, max] of its input})."""
    card = _card(path)
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(os.path.dirname(path), card["weights"])).items()}
    v = {i["name"]: np.asarray(feats[i["name"]], np.float64) for i in card["inputs"]}
    ranges = {}
    for n in card["nodes"]:
        xs = [v[i] for i in n["inputs"]]
        op = n["op"]
        if op == "linear":
            y = xs[0] @ w[n["weight"]].T + (w[n["bias"]] if "bias" in n else 0.0)
        elif op == "low_rank":
            a, b = w[n["a"]], w[n["b"]]
            s = n["scale"] if "scale" in n else n["alpha"] / a.shape[0]
            y = s * (xs[0] @ a.T) @ b.T + (w[n["bias"]] if "bias" in n else 0.0)
        elif op == "affine":
            y = xs[0] * w[n["mul"]] + w[n["add"]]
        elif op == "add":
            y = sum(xs)
        elif op == "concat":
            y = np.concatenate(xs, 1)
        elif op == "poly":
            lo, hi = n["interval"]
            x = xs[0]
            ranges[n["name"]] = [float(x.min()), float(x.max())]
            if "coeffs" in n:
                y = np.polynomial.polynomial.polyval(x, n["coeffs"])
            else:
                y = C.chebval((2 * x - lo - hi) / (hi - lo), n["cheb"])
        else:
            raise ValueError(f"op {op} not handled here")
        v[n["name"]] = y
    return v[card["nodes"][-1]["name"]], ranges
