"""Trains CryptPEFT-style token-level (OWC) adapters in jax on MiniLM token states of the
fine-food reviews (training/extract_token.py) and exports them as hepeft token cards
(docs/model-card.md, "Token model cards") under assets/real/finefoods/token/.

Architecture (src/model/token.rs, `owc_adapter`; CryptPEFT's adapter block), for the top s
layers of MiniLM-L6, with h_i the T x 384 token states entering tapped layer i:
  in_1 = h_1,  in_i = out_{i-1} + h_i,  out_i = A_i(in_i) + in_i
  A(x): x1 = lora_A x (384 -> r); n1 = affine(x1); x2 = x1 + LinAtten(n1);
        n2 = affine(x2); x3 = x2 + fc2(p(fc1(n2))); A = 0.5 * lora_B x3 (r -> 384)
  LinAtten(n): qkv (no bias), per head S = (q / sqrt(dh)) k^T, S' = S M^T + 1 m^T (the
        learned T x T mixing replacing the softmax), S' v, concat heads, proj (+ bias)
  logits = head(mean_pool(affine(h_final + out_s)))
p is a degree-7 Chebyshev interpolant of ReLU on [-ACT_B, ACT_B], the very polynomial that
the encrypted model evaluates (the network is trained with it; a penalty keeps its inputs
inside the interval). The "LayerNorms" are per-feature affine maps (CryptPEFT's MPC
benchmark uses such inference-time affine norms), initialised from data statistics.

Taps: s = 1: h_1 = layer-5 output (enters layer 6); s = 2: h_1 = layer-4 output, h_2 =
layer-5 output; h_final = layer-6 output (the last hidden state). T = 32, padding rows zero
(see extract_token.py).

Exports, per configuration NAME = s{s}_h{H}_r{r}: token/NAME/card.toml + adapter.safetensors;
held-out token states token/features/l{4,5,6}.npy (the first N_HELD test samples, f32),
labels, and the logits of the exported weights on them (token/NAME/logits.npy, float64
numpy twin) for tests/real_token.rs; accuracies go into the manifest.
"""
import json
import os
import sys
import time

import numpy as np
from numpy.polynomial import chebyshev as C

import jax
import jax.numpy as jnp
import optax
from safetensors.numpy import save_file

from extract_text import cache_dir
from extract_token import T

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.environ.get("HEPEFT_ASSETS_OUT", os.path.join(ROOT, "assets", "real", "finefoods"))
N_HELD = int(os.environ.get("N_HELD", 16))
EPOCHS = int(os.environ.get("EPOCHS", 20))
N_VAL = 200
D = 384
ACT_B = float(os.environ.get("ACT_B", 10.0))
ACT_DEG = 7
UP_SCALE = 0.5
LR = float(os.environ.get("LR", 3e-4))
WD = float(os.environ.get("WD", 0.1))
DROP = float(os.environ.get("DROP", 0.25))  # training only: real token rows dropped (zeroed) at random
PEN = float(os.environ.get("PEN", 10.0))  # weight of the penalty keeping activation inputs inside 0.7 ACT_B
CONFIGS = [tuple(int(v) for v in c.split(",")) for c in os.environ.get("CONFIGS", "1,1,32;1,2,32;2,1,32;2,2,32").split(";")]


def relu(x):
    return np.maximum(x, 0.0)


ACT_CHEB = C.chebinterpolate(lambda t: relu(t * ACT_B), ACT_DEG)  # coefficients in t = x / B


def poly_jnp(x):
    # Clenshaw in t = x / B, as hepeft's Activation::eval
    t = x / ACT_B
    b1 = jnp.zeros_like(t)
    b2 = jnp.zeros_like(t)
    for c in ACT_CHEB[1:][::-1]:
        b1, b2 = c + 2.0 * t * b1 - b2, b1
    return ACT_CHEB[0] + t * b1 - b2


def load(split):
    import glob

    f = sorted(glob.glob(os.path.join(cache_dir(), f"finefoods_tokens_{split}_*_{T}.npz")))
    if not f:
        sys.exit(f"no cached token states for {split}: run extract_token.py first")
    z = np.load(f[-1])
    return {k: z[k] for k in z.files}


def taps_of(data, s):
    """The inputs in card order: h_1 .. h_s, h_final."""
    names = {1: ["l5"], 2: ["l4", "l5"]}[s] + ["l6"]
    return [data[n] for n in names], names


# ---- the model --------------------------------------------------------------------------
def block_forward(p, x, heads):
    r = p["Wd"].shape[0]
    dh = r // heads
    x1 = x @ p["Wd"].T + p["bd"]
    n1 = x1 * p["g1"] + p["b1"]
    qkv = n1 @ p["Wqkv"].T
    outs = []
    for h in range(heads):
        q = qkv[:, h * dh : (h + 1) * dh] / np.sqrt(dh)
        k = qkv[:, r + h * dh : r + (h + 1) * dh]
        v = qkv[:, 2 * r + h * dh : 2 * r + (h + 1) * dh]
        s = q @ k.T
        s = s @ p["M"].T + p["m"]
        outs.append(s @ v)
    att = jnp.concatenate(outs, axis=1) @ p["P"].T + p["pb"]
    x2 = x1 + att
    n2 = x2 * p["g2"] + p["b2"]
    f1 = n2 @ p["W1"].T + p["c1"]
    a = poly_jnp(f1)
    x3 = x2 + a @ p["W2"].T + p["c2"]
    up = UP_SCALE * (x3 @ p["Wu"].T + p["bu"])
    return up + x, f1


def forward(params, hs, heads):
    """One sample: hs = [h_1 .. h_s, h_final] (T x D each). Returns (logits, activation inputs)."""
    out = None
    acts = []
    for i, bp in enumerate(params["blocks"]):
        inp = hs[i] if out is None else out + hs[i]
        out, f1 = block_forward(bp, inp, heads)
        acts.append(f1)
    z = (hs[-1] + out) * params["gf"] + params["bf"]
    pooled = z.mean(0)
    return params["Wh"] @ pooled + params["bh"], jnp.stack(acts)


def init(key, s, r, x_tr):
    ks = iter(jax.random.split(key, 16 * s + 4))
    u = lambda shape, fan: jax.random.uniform(next(ks), shape, minval=-1, maxval=1) / np.sqrt(fan)
    blocks = []
    for i in range(s):
        blocks.append(dict(
            Wd=u((r, D), D), bd=jnp.zeros(r), g1=jnp.ones(r), b1=jnp.zeros(r),
            Wqkv=u((3 * r, r), r), M=0.1 * u((T, T), T), m=jnp.zeros(T), P=u((r, r), r), pb=jnp.zeros(r),
            g2=jnp.ones(r), b2=jnp.zeros(r), W1=u((r, r), r), c1=jnp.zeros(r), W2=u((r, r), r), c2=jnp.zeros(r),
            Wu=jnp.zeros((D, r)), bu=jnp.zeros(D)))
    # data-calibrated affine norms: standardise lora_A's output and the final residual stream
    xs = [np.asarray(x[:512], np.float32) for x in x_tr]
    out = None
    for i, b in enumerate(blocks):
        inp = xs[i] if out is None else out + xs[i]
        x1 = inp @ np.asarray(b["Wd"]).T
        mu, sd = x1.reshape(-1, r).mean(0), x1.reshape(-1, r).std(0) + 1e-3
        b["g1"], b["b1"], b["g2"], b["b2"] = 1 / sd, -mu / sd, 1 / sd, -mu / sd
        out = inp  # lora_B starts at zero: out_i = in_i
    fin = (xs[-1] + out).reshape(-1, D)
    mu, sd = fin.mean(0), fin.std(0) + 1e-3
    return {"blocks": blocks, "gf": jnp.asarray(1 / sd), "bf": jnp.asarray(-mu / sd),
            "Wh": jnp.zeros((2, D)), "bh": jnp.zeros(2)}


def train(s, heads, r, tr, seed=0):
    xs, _ = taps_of(tr, s)
    xs = [jnp.asarray(x, jnp.float32) for x in xs]
    y = jnp.asarray(tr["y"])
    n = len(y) - N_VAL
    params = init(jax.random.PRNGKey(seed), s, r, [x[:n] for x in xs])
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(optax.cosine_decay_schedule(LR, EPOCHS * (n // 64)), weight_decay=WD))
    state = opt.init(params)
    fwd = jax.vmap(lambda p, *h: forward(p, list(h), heads), in_axes=(None,) + (0,) * len(xs))

    def loss_fn(p, batch, yb, key):
        keep = jax.random.bernoulli(key, 1.0 - DROP, batch[0].shape[:2])[..., None]
        z, acts = fwd(p, *[x * keep for x in batch])
        ce = optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()
        # per-sample largest |activation input| over taps, tokens and features: the encrypted
        # polynomial is meaningless outside [-ACT_B, ACT_B], so outliers are what matter
        peak = jnp.abs(acts).reshape(acts.shape[0], -1).max(1)
        pen = jnp.mean(jax.nn.relu(peak - 0.7 * ACT_B) ** 2)
        return ce + PEN * pen

    @jax.jit
    def step(p, st, batch, yb, key):
        l, g = jax.value_and_grad(loss_fn)(p, batch, yb, key)
        u, st = opt.update(g, st, p)
        return optax.apply_updates(p, u), st, l

    @jax.jit
    def predict(p, batch):
        return fwd(p, *batch)

    def accuracy(p, lo, hi):
        z, a = predict(p, [x[lo:hi] for x in xs])
        return float((jnp.argmax(z, 1) == y[lo:hi]).mean()), float(jnp.abs(a).max())

    rng = np.random.default_rng(seed)
    best = (-1.0, params, 0)
    t0 = time.time()
    for ep in range(EPOCHS):
        perm = rng.permutation(n)
        for b in range(0, n - 63, 64):
            idx = perm[b : b + 64]
            params, state, l = step(params, state, [x[idx] for x in xs], y[idx], jax.random.PRNGKey(seed * 100003 + ep * 1000 + b))
        va, amax = accuracy(params, n, len(y))
        if va > best[0] and amax < 0.9 * ACT_B:
            best = (va, params, ep)
        if ep % 5 == 4 or ep == EPOCHS - 1 or os.environ.get("VERBOSE"):
            print(f"  s={s} H={heads} r={r} epoch {ep + 1}: loss {float(l):.3f} val {va:.3f} |act| {amax:.2f} ({time.time() - t0:.0f} s)", flush=True)
    print(f"  best val {best[0]:.3f} at epoch {best[2] + 1}", flush=True)
    return jax.tree_util.tree_map(np.asarray, best[1]), best[0]


# ---- export (card + safetensors) and the float64 numpy twin of the exported weights -------
def f32(a):
    return np.ascontiguousarray(np.asarray(a, np.float32))


def export(name, s, heads, r, p, title):
    d = os.path.join(OUT, "token", name)
    os.makedirs(d, exist_ok=True)
    ins = [f"h{i + 1}" for i in range(s)] + ["h_final"]
    tensors, nodes = {}, []

    def lin(nm, inputs, w, b):
        tensors[nm + ".weight"], tensors[nm + ".bias"] = w, b
        nodes.append(dict(name=nm, op="linear", inputs=inputs, weight=nm + ".weight", bias=nm + ".bias"))

    def aff(nm, inputs, g, b):
        tensors[nm + ".mul"], tensors[nm + ".add"] = g, b
        nodes.append(dict(name=nm, op="affine", inputs=inputs, mul=nm + ".mul", add=nm + ".add"))

    prev = None
    for i, b in enumerate(p["blocks"]):
        a = f"a{i + 1}"
        inp = ins[i]
        if prev is not None:
            nodes.append(dict(name=f"{a}.in", op="add", inputs=[prev, ins[i]]))
            inp = f"{a}.in"
        lin(f"{a}.down", [inp], b["Wd"], b["bd"])
        aff(f"{a}.norm1", [f"{a}.down"], b["g1"], b["b1"])
        at = f"{a}.attn"
        tensors.update({at + ".qkv": b["Wqkv"], at + ".mix": b["M"], at + ".mix_bias": b["m"], at + ".proj": b["P"], at + ".proj_bias": b["pb"]})
        nodes.append(dict(name=at, op="linear_attention", inputs=[f"{a}.norm1"], heads=heads, scale=1 / np.sqrt(r // heads),
                          qkv=at + ".qkv", mix=at + ".mix", mix_bias=at + ".mix_bias", proj=at + ".proj", proj_bias=at + ".proj_bias"))
        nodes.append(dict(name=f"{a}.res1", op="add", inputs=[f"{a}.down", at]))
        aff(f"{a}.norm2", [f"{a}.res1"], b["g2"], b["b2"])
        lin(f"{a}.fc1", [f"{a}.norm2"], b["W1"], b["c1"])
        nodes.append(dict(name=f"{a}.act", op="poly", inputs=[f"{a}.fc1"], interval=[-ACT_B, ACT_B], cheb=list(ACT_CHEB)))
        lin(f"{a}.fc2", [f"{a}.act"], b["W2"], b["c2"])
        nodes.append(dict(name=f"{a}.res2", op="add", inputs=[f"{a}.res1", f"{a}.fc2"]))
        lin(f"{a}.up", [f"{a}.res2"], UP_SCALE * b["Wu"], UP_SCALE * b["bu"])  # the 0.5 scaler folded in
        nodes.append(dict(name=f"{a}.out", op="add", inputs=[f"{a}.up", inp]))
        prev = f"{a}.out"
    nodes.append(dict(name="final.res", op="add", inputs=["h_final", prev]))
    aff("final.norm", ["final.res"], p["gf"], p["bf"])
    nodes.append(dict(name="pool", op="pool", inputs=["final.norm"], pooling="mean"))
    lin("head", ["pool"], p["Wh"], p["bh"])
    save_file({k: f32(v) for k, v in tensors.items()}, os.path.join(d, "adapter.safetensors"))
    lines = [f"# trained by training/train_token.py; activation: degree-{ACT_DEG} Chebyshev interpolant of ReLU on [-{ACT_B:g}, {ACT_B:g}] (trained with it); lora_B's 0.5 scaler folded into a*.up",
             "version = 1", 'kind = "token"', f'name = "{title}"', f"tokens = {T}", 'weights = "adapter.safetensors"', ""]
    for n in ins:
        lines += ["[[inputs]]", f'name = "{n}"', f"dim = {D}", ""]
    for node in nodes:
        lines.append("[[nodes]]")
        for k, v in node.items():
            if isinstance(v, str):
                lines.append(f'{k} = "{v}"')
            elif isinstance(v, list):
                lines.append(f"{k} = [" + ", ".join(json.dumps(x) if isinstance(x, str) else repr(float(x)) for x in v) + "]")
            elif isinstance(v, int):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {float(v)!r}")
        lines.append("")
    open(os.path.join(d, "card.toml"), "w").write("\n".join(lines))
    # the exported (f32-rounded) parameters, for the float64 twin
    q = jax.tree_util.tree_map(lambda a: np.asarray(f32(a), np.float64), p)
    return q


def twin64(p, hs, heads):
    """float64 numpy forward of many samples (hs: list of [n, T, D])."""
    with jax.default_device(jax.devices("cpu")[0]):
        pass
    n = hs[0].shape[0]
    out = []
    acts = []
    for j in range(n):
        cur = None
        amax = 0.0
        for i, b in enumerate(p["blocks"]):
            x = hs[i][j] if cur is None else cur + hs[i][j]
            r = b["Wd"].shape[0]
            dh = r // heads
            x1 = x @ b["Wd"].T + b["bd"]
            n1 = x1 * b["g1"] + b["b1"]
            qkv = n1 @ b["Wqkv"].T
            o = []
            for h in range(heads):
                qq = qkv[:, h * dh : (h + 1) * dh] * (1 / np.sqrt(dh))
                kk = qkv[:, r + h * dh : r + (h + 1) * dh]
                vv = qkv[:, 2 * r + h * dh : 2 * r + (h + 1) * dh]
                o.append((qq @ kk.T @ b["M"].T + b["m"]) @ vv)
            x2 = x1 + np.concatenate(o, 1) @ b["P"].T + b["pb"]
            f1 = (x2 * b["g2"] + b["b2"]) @ b["W1"].T + b["c1"]
            amax = max(amax, np.abs(f1).max())
            x3 = x2 + C.chebval(f1 / ACT_B, ACT_CHEB) @ b["W2"].T + b["c2"]
            cur = (UP_SCALE * b["Wu"]) @ x3.T
            cur = cur.T + UP_SCALE * b["bu"] + x
        z = (hs[-1][j] + cur) * p["gf"] + p["bf"]
        out.append(p["Wh"] @ z.mean(0) + p["bh"])
        acts.append(amax)
    return np.array(out), np.array(acts)


def main():
    tr, te = load("train"), load("test")
    print(f"train {len(tr['y'])} (last {N_VAL} for validation), test {len(te['y'])}, T = {T}", flush=True)
    feats = os.path.join(OUT, "token", "features")
    os.makedirs(feats, exist_ok=True)
    for l in ("l4", "l5", "l6"):
        np.save(os.path.join(feats, f"{l}.npy"), f32(te[l][:N_HELD]))
    np.save(os.path.join(feats, "labels.npy"), f32(te["y"][:N_HELD]))
    np.save(os.path.join(feats, "mask.npy"), te["mask"][:N_HELD].astype(np.uint8))
    mpath = os.path.join(OUT, "manifest.json")
    manifest = json.load(open(mpath))
    tok = manifest.setdefault("token_adapters", {})
    for s, heads, r in CONFIGS:
        name = f"s{s}_h{heads}_r{r}"
        print(name, flush=True)
        t0 = time.time()
        p, val = train(s, heads, r, tr)
        title = f"CryptPEFT OWC adapter on MiniLM-L6 token states, s={s} taps, H={heads}, r={r}, T={T} (fine-food reviews)"
        q = export(name, s, heads, r, p, title)
        xs_te, names = taps_of(te, s)
        z_te, a_te = twin64(q, [x.astype(np.float64) for x in xs_te], heads)
        xs_tr, _ = taps_of(tr, s)
        z_tr, a_tr = twin64(q, [x.astype(np.float64) for x in xs_tr], heads)
        np.save(os.path.join(OUT, "token", name, "logits.npy"), z_te[:N_HELD])
        ytr, yte = tr["y"], te["y"]
        nparams = sum(np.size(v) for v in jax.tree_util.tree_leaves(p))
        tok[name] = {
            "card": f"token/{name}/card.toml",
            "inputs": dict(zip([f"h{i + 1}" for i in range(s)] + ["h_final"], [f"token/features/{n}.npy" for n in names])),
            "taps": s, "heads": heads, "r": r, "tokens": T, "parameters": int(nparams),
            "train_accuracy": float((z_tr[: len(ytr) - N_VAL].argmax(1) == ytr[: len(ytr) - N_VAL]).mean()),
            "val_accuracy": float((z_tr[len(ytr) - N_VAL :].argmax(1) == ytr[len(ytr) - N_VAL :]).mean()),
            "test_accuracy": float((z_te.argmax(1) == yte).mean()),
            "held_out_accuracy": float((z_te[:N_HELD].argmax(1) == yte[:N_HELD]).mean()),
            "activation_input_max_abs": {"train": float(a_tr.max()), "test": float(a_te.max()), "interval": ACT_B},
            "train_seconds": round(time.time() - t0, 1),
        }
        print(name, json.dumps(tok[name]), flush=True)
        manifest["token_features"] = {
            "held_out_samples": N_HELD, "tokens": T, "labels": "token/features/labels.npy", "mask": "token/features/mask.npy",
            "layers": {"l4": "MiniLM layer-4 output (enters layer 5)", "l5": "layer-5 output (enters layer 6)", "l6": "layer-6 output (last hidden state)"},
            "convention": "T = 32 tokens ([CLS] ... [SEP], truncated or padded with [PAD]); padding rows are zero in every layer; the first held_out_samples test reviews",
            "train_samples_used": int(len(tr["y"]) - N_VAL), "validation_samples": N_VAL,
        }
        json.dump(manifest, open(mpath, "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
