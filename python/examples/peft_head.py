"""A Hugging Face PEFT LoRA checkpoint on a two-layer head, run encrypted.

The head is `classifier(square(dense(x)))` with LoRA (r = 4, alpha = 8) on both layers, as
PEFT's `get_peft_model(model, LoraConfig(target_modules=["dense", "classifier"]))` adapts
it. Without torch here, the checkpoint is written with the safetensors package in PEFT's
naming (`base_model.model.<module>.lora_A.weight`, `adapter_config.json`), which is what
`PeftModel.save_pretrained` writes; pass a real one instead with

    python python/examples/peft_head.py --checkpoint tests/fixtures/peft/lora \
        --base tests/fixtures/peft/lora/base.safetensors

(the base weights: `{k: v.numpy() for k, v in base_model.state_dict().items()}` works too).
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

import hepeft

D_IN, D_HID, CLASSES, R, ALPHA = 16, 8, 3, 4, 8


def write_checkpoint(directory: pathlib.Path, rng) -> dict:
    """A base head and a LoRA checkpoint in PEFT's layout; returns the base weights."""
    f32 = np.float32
    base = {
        "dense.weight": rng.normal(0, 0.3, (D_HID, D_IN)).astype(f32),
        "dense.bias": rng.normal(0, 0.1, D_HID).astype(f32),
        "classifier.weight": rng.normal(0, 0.3, (CLASSES, D_HID)).astype(f32),
        "classifier.bias": rng.normal(0, 0.1, CLASSES).astype(f32),
    }
    lora = {}
    for module, (d_out, d_in) in {"dense": (D_HID, D_IN), "classifier": (CLASSES, D_HID)}.items():
        lora[f"base_model.model.{module}.lora_A.weight"] = rng.normal(0, 0.3, (R, d_in)).astype(f32)
        lora[f"base_model.model.{module}.lora_B.weight"] = rng.normal(0, 0.1, (d_out, R)).astype(f32)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(lora, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "r": R,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": ["dense", "classifier"],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return base


def numpy_twin(directory: pathlib.Path, base: dict, x: np.ndarray) -> np.ndarray:
    """What PEFT computes: each adapted layer is `W x + b + (alpha / r) B (A x)`."""
    lora = {k: v.astype(np.float64) for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}
    cfg = json.loads((directory / "adapter_config.json").read_text())
    s = cfg["lora_alpha"] / cfg["r"]

    def layer(m, h):
        w, b = base[f"{m}.weight"].astype(np.float64), base[f"{m}.bias"].astype(np.float64)
        a, bb = lora[f"base_model.model.{m}.lora_A.weight"], lora[f"base_model.model.{m}.lora_B.weight"]
        return h @ w.T + b + s * (h @ a.T) @ bb.T

    h = layer("dense", x)
    return layer("classifier", h * h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=pathlib.Path, help="a PEFT checkpoint directory")
    ap.add_argument("--base", type=pathlib.Path, help="the base head's weights (safetensors)")
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    rng = np.random.default_rng(2026)

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            ckpt, base = args.checkpoint, load_file(str(args.base))
        else:
            ckpt = pathlib.Path(tmp) / "adapter"
            base = write_checkpoint(ckpt, rng)
        # The square activation between the layers is exact as a degree-2 polynomial; the
        # interval is where the hidden values stay (checked by the plaintext twin).
        model = hepeft.peft.load(
            ckpt, base, head=["dense", "classifier"], activation="square", interval=(-16, 16), degree=2
        )
        d_in = model.input_dims[0]
        x = rng.uniform(-1, 1, (args.samples, d_in))
        want = numpy_twin(ckpt, base, x)

    print(model.summary())
    sel = hepeft.params.select(model, precision=20)
    params = sel.params
    print(f"selected {params.describe()}")
    client = hepeft.Client.keygen(hepeft.publish(model), params)
    server = hepeft.Server(model, params, flooding_bits=None)  # see quickstart.py
    result = server.evaluate(client.encrypt(x), client.eval_keys())
    got = client.decrypt(result)
    bits = -np.log2(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    print(f"decrypted logits vs PEFT's formula in numpy: {bits:.1f} bits of precision")
    print(f"argmax agreement {(got.argmax(1) == want.argmax(1)).sum()}/{len(x)}")


if __name__ == "__main__":
    main()
