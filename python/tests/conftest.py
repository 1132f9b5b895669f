"""Shared fixtures: a small LoRA head, parameters selected for it (N = 2^12), keys.

Small rings keep the suite fast; full sizes are in examples/ and bench/.
"""

import math
import os
import pathlib

import numpy as np
import pytest

import hepeft

REPO = pathlib.Path(__file__).resolve().parents[2]


def precision_bits(got, want):
    """-log2 of the largest absolute error relative to the largest |logit| (as the CLI
    demo reports precision)."""
    got, want = np.asarray(got), np.asarray(want)
    err = float(np.max(np.abs(got - want)))
    scale = max(float(np.max(np.abs(want))), 1e-300)
    return math.inf if err == 0 else -math.log2(err / scale)


def lora_weights(seed=7, d=16, r=2, classes=3):
    rng = np.random.default_rng(seed)
    return {
        "W": rng.uniform(-0.3, 0.3, (classes, d)),
        "b": rng.uniform(-0.1, 0.1, classes),
        "A": rng.uniform(-0.3, 0.3, (r, d)),
        "B": rng.uniform(-0.3, 0.3, (classes, r)),
        "scale": 2.0,
    }


def lora_head(w):
    """`y = W x + b + scale * B (A x)`: a frozen classifier plus its LoRA update."""
    b = hepeft.Builder()
    x = b.input("x", w["W"].shape[1])
    base = b.linear(x, w["W"], w["b"], name="classifier")
    lora = b.low_rank(x, w["A"], w["B"], scale=w["scale"], name="lora")
    b.add([base, lora], name="logits")
    return b.build()


def lora_twin(w, x):
    """The numpy twin of `lora_head`."""
    x = np.atleast_2d(x)
    return x @ w["W"].T + w["b"] + w["scale"] * (x @ w["A"].T) @ w["B"].T


@pytest.fixture(scope="session")
def weights():
    return lora_weights()


@pytest.fixture(scope="session")
def model(weights):
    return lora_head(weights)


@pytest.fixture(scope="session")
def params(model):
    # Without flooding: N = 2^12 (the test ring); flooding needs larger scales.
    return hepeft.params.select(model, precision=14).params


@pytest.fixture(scope="session")
def client(model, params):
    return hepeft.Client.keygen(hepeft.publish(model), params)


@pytest.fixture(scope="session")
def server(model, params):
    # N = 2^12 cannot carry 40-bit flooding: off here, on in test_flooding_*
    return hepeft.Server(model, params, flooding_bits=None)


@pytest.fixture(scope="session")
def features():
    return np.random.default_rng(11).uniform(-1, 1, (3, 16))


@pytest.fixture(scope="session")
def hepeft_bin():
    """The `hepeft` binary (HEPEFT_BIN, else target/release/hepeft of the repository)."""
    path = pathlib.Path(os.environ.get("HEPEFT_BIN", REPO / "target" / "release" / "hepeft"))
    if not path.is_file():
        pytest.fail(
            f"no hepeft binary at {path}: build it with `cargo build --release` "
            "or set HEPEFT_BIN"
        )
    return path
