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
    result_bytes = server.evaluate(query, ek).to_bytes()
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


def test_key_directory_shared_with_the_cli(tmp_path, hepeft_bin, model, weights, params, client, server, features):
    """A key directory saved from Python is one `hepeft encrypt` reads; its query is
    evaluated and decrypted in Python."""
    import subprocess

    client.save(tmp_path / "keys")
    assert (tmp_path / "keys" / "secret.key").stat().st_mode & 0o077 == 0
    model.public().save(tmp_path / "public.toml")
    np.save(tmp_path / "x.npy", features)
    out = subprocess.run(
        [str(hepeft_bin), "encrypt", "--keys", str(tmp_path / "keys"), "--model", str(tmp_path / "public.toml"),
         "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "query.ct")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    query = hepeft.Query.from_bytes(params, (tmp_path / "query.ct").read_bytes())
    again = hepeft.Client.load(tmp_path / "keys", model.public())
    got = again.decrypt(server.evaluate(query, again.eval_keys()))
    assert precision_bits(got, lora_twin(weights, features)) >= 12
