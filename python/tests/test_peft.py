"""A PEFT checkpoint in PEFT's naming: the repository's real fixtures (written by peft
0.21.2) and one written here with the safetensors package."""

import json

import numpy as np
import pytest

import hepeft
from conftest import REPO, precision_bits

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIXTURES = REPO / "tests" / "fixtures" / "peft"


@pytest.mark.parametrize("name", ["lora", "rslora", "dora", "modules_to_save", "bias_all"])
def test_real_peft_fixture_matches_torch(name):
    d = FIXTURES / name
    base = {k: v for k, v in safetensors_numpy.load_file(str(d / "base.safetensors")).items()}
    model = hepeft.peft.load(
        d, base, head=["dense", "classifier"], activation="square", interval=(-16, 16), degree=2
    )
    x = np.load(d / "inputs.npy")
    want = np.load(d / "logits.npy")  # PyTorch's output of the PEFT model
    got = model.reference(x)
    # the checkpoint is float32: agreement to float32 accuracy
    assert precision_bits(got, want) > 18, name


def test_peft_checkpoint_written_here_encrypted(tmp_path):
    rng = np.random.default_rng(5)
    d, r, classes, alpha = 12, 4, 3, 8
    w = rng.uniform(-0.3, 0.3, (classes, d)).astype(np.float32)
    bias = rng.uniform(-0.1, 0.1, classes).astype(np.float32)
    a = rng.uniform(-0.3, 0.3, (r, d)).astype(np.float32)
    bm = rng.uniform(-0.3, 0.3, (classes, r)).astype(np.float32)
    ckpt = tmp_path / "adapter"
    ckpt.mkdir()
    safetensors_numpy.save_file(
        {
            "base_model.model.classifier.lora_A.weight": a,
            "base_model.model.classifier.lora_B.weight": bm,
        },
        str(ckpt / "adapter_model.safetensors"),
    )
    (ckpt / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": r,
                "lora_alpha": alpha,
                "target_modules": ["classifier"],
                "bias": "none",
                "fan_in_fan_out": False,
                "use_rslora": False,
            }
        )
    )
    model = hepeft.peft.load(ckpt, {"classifier.weight": w, "classifier.bias": bias})
    x = rng.uniform(-1, 1, (2, d))
    f64 = lambda t: t.astype(np.float64)  # noqa: E731
    want = x @ f64(w).T + f64(bias) + (alpha / r) * (x @ f64(a).T) @ f64(bm).T
    assert precision_bits(model.reference(x), want) > 40
    params = hepeft.params.select(model, precision=14).params
    client = hepeft.Client.keygen(hepeft.publish(model), params)
    server = hepeft.Server(model, params, flooding_bits=None)
    got = client.decrypt(server.evaluate(client.encrypt(x), client.eval_keys()))
    assert precision_bits(got, want) >= 12


def test_checkpoint_that_does_not_fit(tmp_path):
    d = FIXTURES / "lora"
    base = safetensors_numpy.load_file(str(d / "base.safetensors"))
    del base["dense.weight"]
    with pytest.raises(hepeft.ModelError):
        hepeft.peft.load(d, base, head=["dense", "classifier"], activation="square", interval=(-16, 16), degree=2)
