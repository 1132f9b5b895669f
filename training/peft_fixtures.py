"""Writes the PEFT checkpoint fixtures of tests/peft_fixtures.rs (issue 21).

Run in a throwaway virtualenv, never in CI:

    python3 -m venv /tmp/venv-peft
    /tmp/venv-peft/bin/pip install -r training/requirements-peft.txt
    /tmp/venv-peft/bin/python training/peft_fixtures.py tests/fixtures/peft

Every fixture is a tiny model, features (16) -> `dense` (8) -> x**2 -> `classifier` (3), the
activation chosen exactly polynomial so that hepeft's f64 twin can match PyTorch to 1e-9.
For each PEFT variant or option the script builds a `peft` model on that base, randomises
every adapter tensor (LoRA factors, magnitudes, diagonals, saved modules, biases: so that
none of them is a no-op), saves it with `save_pretrained` into `<out>/<variant>/`, and
writes beside it:

* `base.safetensors`: the base model's weights (`dense.weight`, `dense.bias`,
  `classifier.weight`, `classifier.bias`), F32, as a user would export them;
* `inputs.npy`: 6 rows of features (f64);
* `logits.npy`: the logits PyTorch computes with the peft model in float64 (f64).

The model runs in float64 so that the stored logits carry no float32 rounding; the base
weights are F32 values (exactly representable in f64). `variants.json` lists what each
fixture exercises and whether hepeft applies or refuses it.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D

import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.config import BdLoraConfig, KasaConfig

IN, HID, OUT = 16, 8, 3
ROWS = 6


class Base(torch.nn.Module):
    def __init__(self, conv1d=False):
        super().__init__()
        if conv1d:
            # GPT-2 style layers: weight stored [in, out] (PEFT's fan_in_fan_out).
            self.dense = Conv1D(HID, IN)
            self.classifier = Conv1D(OUT, HID)
        else:
            self.dense = torch.nn.Linear(IN, HID)
            self.classifier = torch.nn.Linear(HID, OUT)

    def forward(self, x):
        h = self.dense(x)
        return self.classifier(h * h)


def make_base(seed, conv1d=False):
    torch.manual_seed(seed)
    m = Base(conv1d)
    with torch.no_grad():
        for p in m.parameters():
            # F32-representable values, so base.safetensors (F32) is exact in f64.
            p.copy_((torch.randn_like(p) * 0.4).float())
    return m


def randomise_adapter(model, seed):
    """Gives every trainable adapter tensor a random non-zero value (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
                if "lora_magnitude_vector" in name or "lora_diag" in name:
                    p.mul_(1.0 + 0.3 * noise)  # keep the magnitude near its initial norm
                else:
                    p.copy_(0.3 * noise)


def write_fixture(out, name, cfg, seed, conv1d=False, adapter_names=None, safe=True, note=""):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    base = make_base(seed, conv1d)
    save_file({k: v.float().contiguous() for k, v in base.state_dict().items()},
              os.path.join(d, "base.safetensors"))
    torch.manual_seed(seed + 1)
    x = (torch.rand(ROWS, IN, dtype=torch.float64) - 0.5)
    x = x.float().double()
    np.save(os.path.join(d, "inputs.npy"), x.numpy())
    names = adapter_names or ["default"]
    model = get_peft_model(base.double(), cfg, adapter_name=names[0])
    for extra in names[1:]:
        model.add_adapter(extra, cfg)
    for i, n in enumerate(names):
        model.set_adapter(n)
        randomise_adapter(model, seed + 10 + i)
    # Round adapter tensors to F32 values: the checkpoint is saved F32 below.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
    model.set_adapter(names[0])
    model.eval()
    for n in names:
        model.save_pretrained(d, selected_adapters=[n], safe_serialization=safe)
    # The expected logits come from a fresh PeftModel.from_pretrained on a fresh base, as a
    # user would load the checkpoint (this is where PEFT applies KaSA's truncation, DoRA's
    # norm, modules_to_save, biases...).
    fresh = make_base(seed, conv1d).double()
    sub = d if names[0] == "default" else os.path.join(d, names[0])
    if safe:
        loaded = PeftModel.from_pretrained(fresh, sub, adapter_name=names[0]).double().eval()
        with torch.no_grad():
            logits = loaded(x).numpy()
            direct = model(x).numpy()
        assert np.allclose(logits, direct, rtol=1e-12, atol=1e-12), (name, logits, direct)
    else:
        with torch.no_grad():
            logits = model(x).numpy()
    np.save(os.path.join(d, "logits.npy"), logits)
    # Store the adapter weights as F32 as peft users usually do.
    for root, _, files in os.walk(d):
        for f in files:
            if f == "adapter_model.safetensors":
                from safetensors.torch import load_file
                p = os.path.join(root, f)
                t = load_file(p)
                save_file({k: v.float().contiguous() for k, v in t.items()}, p,
                          metadata={"format": "pt"})
    for root, _, files in os.walk(d):
        if "README.md" in files:  # peft's generated model card, not needed
            os.remove(os.path.join(root, "README.md"))
    return {"name": name, "adapters": names, "note": note}


def main(out):
    os.makedirs(out, exist_ok=True)
    lc = dict(r=4, lora_alpha=8, target_modules=["dense", "classifier"], init_lora_weights=True)
    v = []
    v.append(write_fixture(out, "lora", LoraConfig(**lc), 1, note="plain LoRA on both layers"))
    v.append(write_fixture(out, "rslora", LoraConfig(**lc, use_rslora=True), 2, note="use_rslora"))
    v.append(write_fixture(out, "modules_to_save",
                           LoraConfig(r=4, lora_alpha=8, target_modules=["dense"],
                                      modules_to_save=["classifier"]), 3,
                           note="classifier saved in full and replacing the base one"))
    v.append(write_fixture(out, "bias_lora_only", LoraConfig(**lc, bias="lora_only"), 4,
                           note="bias=lora_only: base_layer biases saved"))
    v.append(write_fixture(out, "bias_all",
                           LoraConfig(r=4, lora_alpha=8, target_modules=["dense"], bias="all"), 5,
                           note="bias=all: every bias saved (classifier.bias without LoRA)"))
    v.append(write_fixture(out, "patterns",
                           LoraConfig(**{**lc, "r": 4}, rank_pattern={"classif.*": 2},
                                      alpha_pattern={"^dense$": 32}), 6,
                           note="regex rank_pattern / alpha_pattern keys"))
    v.append(write_fixture(out, "lora_bias", LoraConfig(**lc, lora_bias=True), 7,
                           note="lora_bias: lora_B has a bias"))
    v.append(write_fixture(out, "dora", LoraConfig(**lc, use_dora=True), 8,
                           note="DoRA magnitude vectors"))
    v.append(write_fixture(out, "kasa",
                           LoraConfig(r=2, lora_alpha=4, target_modules=["dense", "classifier"],
                                      kasa_config=KasaConfig()), 9,
                           note="KaSA: lora_diag and the SVD truncation of the base weight"))
    v.append(write_fixture(out, "fan_in_fan_out",
                           LoraConfig(**lc, fan_in_fan_out=True), 10, conv1d=True,
                           note="Conv1D base layers, fan_in_fan_out"))
    v.append(write_fixture(out, "named", LoraConfig(**lc), 11, adapter_names=["task"],
                           note="one adapter saved under a name (subfolder)"))
    v.append(write_fixture(out, "multi", LoraConfig(**lc), 12, adapter_names=["alpha", "beta"],
                           note="two adapters in subfolders; logits are alpha's"))
    v.append(write_fixture(out, "bdlora",
                           LoraConfig(r=4, lora_alpha=8, target_modules=["dense"],
                                      use_bdlora=BdLoraConfig(target_modules_bd_a=["dense"],
                                                              nblocks=2)), 13,
                           note="BD-LoRA: refused"))
    v.append(write_fixture(out, "pickle", LoraConfig(**lc), 14, safe=False,
                           note=".bin checkpoint: refused"))
    with open(os.path.join(out, "variants.json"), "w") as f:
        json.dump({"peft": peft.__version__, "torch": torch.__version__, "fixtures": v}, f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/peft")
