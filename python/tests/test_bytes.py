"""to_bytes / from_bytes on every object."""

import numpy as np

import hepeft
from conftest import lora_twin, precision_bits


def test_params_roundtrip(params):
    again = hepeft.Params.from_bytes(params.to_bytes())
    assert again == params and again.digest == params.digest
    assert hepeft.Params.from_toml(params.to_toml()) == params


def test_model_roundtrip(model, features):
    again = hepeft.Model.from_bytes(model.to_bytes())
    assert again.input_dims == model.input_dims and again.output_dim == model.output_dim
    np.testing.assert_array_equal(again.reference(features), model.reference(features))
    pub = model.public()
    assert np.all(pub.reference(features) == 0)


def test_model_save_load(tmp_path, model, features):
    model.save(tmp_path / "card.toml", name="lora test")
    again = hepeft.Model.load(tmp_path / "card.toml")
    np.testing.assert_array_equal(again.reference(features), model.reference(features))


def test_protocol_objects_through_bytes(model, weights, params, client, server, features):
    """Every message crosses as bytes: keys, query, result, and the client itself."""
    ek = hepeft.EvalKeys.from_bytes(params, client.eval_keys().to_bytes())
    assert ek.key_set == client.key_set
    query = hepeft.Query.from_bytes(params, client.encrypt(features).to_bytes())
    result_bytes = server.evaluate(query, ek, flooding_bits=None).to_bytes()
    result = hepeft.Result.from_bytes(params, result_bytes)
    assert result.samples == 3 and result.sanitize_report is None
    restored = hepeft.Client.from_bytes(model.public(), client.to_bytes())
    assert restored.key_set == client.key_set and restored.mode == "latency"
    got = restored.decrypt(result)
    assert precision_bits(got, lora_twin(weights, features)) >= 12


def test_cli_files_read_in_python(tmp_path, params, client):
    """The bytes are the CLI's envelopes: what Python writes, `hepeft` reads, and back."""
    b = client.eval_keys().to_bytes()
    (tmp_path / "eval.keys").write_bytes(b)
    assert hepeft.EvalKeys.from_bytes(params, (tmp_path / "eval.keys").read_bytes()).galois_keys >= 1
