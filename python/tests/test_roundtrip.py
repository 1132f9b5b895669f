"""Encrypt -> evaluate -> decrypt against the numpy twin, precision in bits."""

import numpy as np
import pytest

import hepeft
from conftest import lora_twin, precision_bits


def test_lora_head_matches_numpy_twin(model, weights, params, client, server, features):
    query = client.encrypt(features)
    assert query.samples == 3
    result = server.evaluate(query, client.eval_keys())
    got = client.decrypt(result)
    want = lora_twin(weights, features)
    assert got.shape == (3, 3) and got.dtype == np.float64
    bits = precision_bits(got, want)
    print(f"LoRA head, N = 2^{params.log_n}: {bits:.1f} bits of precision")
    assert bits >= 12, bits
    # the library's plaintext twin agrees with numpy to float64 accuracy
    assert precision_bits(model.reference(features), want) > 40
    report = result.sanitize_report
    assert report["output_level"] == 0 and report["flooding"] is None


def test_one_sample_as_vector_and_float32(weights, client, server, features):
    x = features[0].astype(np.float32)
    result = server.evaluate(client.encrypt(x), client.eval_keys())
    got = client.decrypt(result)
    assert got.shape == (1, 3)
    assert precision_bits(got, lora_twin(weights, x.astype(np.float64))) >= 12


def test_mlp_with_activation_and_batch_mode():
    rng = np.random.default_rng(3)
    w1, b1 = rng.uniform(-0.4, 0.4, (6, 8)), rng.uniform(-0.1, 0.1, 6)
    w2 = rng.uniform(-0.4, 0.4, (2, 6))
    b = hepeft.Builder()
    x = b.input("x", 8)
    h = b.linear(x, w1, b1)
    h = b.poly(h, coeffs=[0.0, 0.5, 0.25], interval=(-4, 4))  # 0.5 h + 0.25 h^2
    b.linear(h, w2)
    model = b.build()
    params = hepeft.params.select(model, precision=12, mode="batch", samples=5).params
    client = hepeft.Client.keygen(model.public(), params, mode="batch")
    server = hepeft.Server(model, params, mode="batch", flooding_bits=None)
    feats = rng.uniform(-1, 1, (5, 8))
    query = client.encrypt(feats)
    assert query.samples == 5
    got = client.decrypt(server.evaluate(query, client.eval_keys()))
    hid = feats @ w1.T + b1
    want = (0.5 * hid + 0.25 * hid**2) @ w2.T
    bits = precision_bits(got, want)
    print(f"MLP (batch mode, N = 2^{params.log_n}): {bits:.1f} bits")
    assert bits >= 10, bits


def test_flooding_when_parameters_carry_it(model, weights, features):
    sel = hepeft.params.select(model, precision=6, flooding_bits=40)
    assert sel.report["flooding_bits"] == 40
    params = sel.params
    client = hepeft.Client.keygen(model.public(), params)
    server = hepeft.Server(model, params, flooding_bits=40)
    assert server.predicted_precision_bits() >= 6
    x = features[:1]
    result = server.evaluate(client.encrypt(x), client.eval_keys())
    assert result.sanitize_report["flooding"]["statistical_security"] == 40
    bits = precision_bits(client.decrypt(result), lora_twin(weights, x))
    print(f"with 40-bit flooding, N = 2^{params.log_n}: {bits:.1f} bits")
    assert bits >= 4, bits


def test_selection_report(model):
    sel = hepeft.params.select(model, precision=14)
    r = sel.report
    assert r["log_n"] == sel.params.log_n and r["security_bits"] == 128
    assert r["depth"] >= 1 and "N = 2^" in sel.to_text()


def test_two_inputs_and_plain_lists():
    """A model with two inputs takes a list of arrays; a plain list of numbers is one
    sample of a one-input model."""
    rng = np.random.default_rng(9)
    wa, wb = rng.uniform(-0.5, 0.5, (2, 4)), rng.uniform(-0.5, 0.5, (2, 3))
    b = hepeft.Builder()
    xa, xb = b.input("a", 4), b.input("b", 3)
    b.add([b.linear(xa, wa), b.linear(xb, wb)])
    model = b.build()
    assert model.input_dims == [4, 3]
    params = hepeft.params.select(model, precision=14).params
    client = hepeft.Client.keygen(model.public(), params)
    server = hepeft.Server(model, params, flooding_bits=None)
    a, bb = rng.uniform(-1, 1, (2, 4)), rng.uniform(-1, 1, (2, 3))
    got = client.decrypt(server.evaluate(client.encrypt([a, bb]), client.eval_keys()))
    assert precision_bits(got, a @ wa.T + bb @ wb.T) >= 12
    with pytest.raises(hepeft.DimensionMismatchError):
        client.encrypt(a)  # one input given, two expected


def test_plain_list_is_one_sample(weights, client, server):
    x = [0.1] * 16
    got = client.decrypt(server.evaluate(client.encrypt(x), client.eval_keys()))
    assert precision_bits(got, lora_twin(weights, np.array(x))) >= 12
