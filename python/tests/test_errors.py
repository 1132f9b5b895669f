"""Library errors arrive as hepeft exception classes with the library's messages."""

import numpy as np
import pytest

import hepeft


def test_error_classes_form_a_hierarchy():
    for name in [
        "InvalidParametersError",
        "DimensionMismatchError",
        "MismatchError",
        "FormatError",
        "ModelError",
        "RemoteError",
    ]:
        assert issubclass(getattr(hepeft, name), hepeft.HepeftError)
    assert issubclass(hepeft.RemoteError, hepeft.HepeftIOError)


def test_unknown_preset():
    with pytest.raises(hepeft.InvalidParametersError, match="preset"):
        hepeft.Params.preset("CKKS_N99")


def test_wrong_width(client):
    with pytest.raises(hepeft.DimensionMismatchError, match="dimension mismatch"):
        client.encrypt(np.zeros((1, 5)))


def test_nan_input(client):
    x = np.zeros((1, 16))
    x[0, 3] = np.nan
    with pytest.raises(hepeft.InvalidValueError, match="NaN"):
        client.encrypt(x)


def test_shape_error_in_builder():
    b = hepeft.Builder()
    x = b.input("x", 4)
    with pytest.raises(hepeft.DimensionMismatchError):
        b.linear(x, np.zeros((3, 5)))
    with pytest.raises(hepeft.ModelError, match="duplicate"):
        b.input("x", 2)


def test_builder_poly_needs_one_form():
    b = hepeft.Builder()
    x = b.input("x", 4)
    with pytest.raises(hepeft.ModelError, match="exactly one"):
        b.poly(x)
    with pytest.raises(hepeft.ModelError, match="unknown"):
        b.poly(x, func="no-such-fn")


def test_keys_of_another_client(model, params, server, client, features):
    other = hepeft.Client.keygen(model.public(), params)
    query = client.encrypt(features[:1])
    with pytest.raises(hepeft.MismatchError, match="key set"):
        server.evaluate(query, other.eval_keys())
    result = server.evaluate(query, client.eval_keys())
    with pytest.raises(hepeft.MismatchError):
        other.decrypt(result)


def test_flooding_that_leaves_no_precision(model, params):
    with pytest.raises(hepeft.InvalidValueError, match="flooding"):
        hepeft.Server(model, params, flooding_bits=40)


def test_unchecked_parameters_refused_by_server(model, params):
    text = params.to_toml()
    assert 'security = "128"' in text
    unchecked = hepeft.Params.from_toml(text.replace('security = "128"', 'security = "unchecked"'))
    with pytest.raises(hepeft.RefusedError, match="unchecked"):
        hepeft.Server(model, unchecked, flooding_bits=None)


def test_garbage_bytes(model, params, client):
    with pytest.raises(hepeft.FormatError):
        hepeft.Query.from_bytes(params, b"not a query")
    with pytest.raises(hepeft.FormatError, match="hepeft.Model"):
        hepeft.Model.from_bytes(b"junk")
    with pytest.raises(hepeft.FormatError, match="hepeft.Client"):
        hepeft.Client.from_bytes(model.public(), b"junk")
    # a query is not a result
    q = client.encrypt(np.zeros(16)).to_bytes()
    with pytest.raises(hepeft.MismatchError, match="role"):
        hepeft.Result.from_bytes(params, q)
