"""The HTTP client against a `hepeft serve` started here on loopback."""

import subprocess

import numpy as np
import pytest

import hepeft
from conftest import lora_twin, precision_bits

TOKEN = "query-token-0123456789abcdef"


@pytest.fixture(scope="module")
def served(tmp_path_factory, hepeft_bin, model, params):
    d = tmp_path_factory.mktemp("serve")
    model.save(d / "card.toml")
    (d / "params.toml").write_text(params.to_toml())
    (d / "tokens.txt").write_text("# one token per line\n" + TOKEN + "\n")
    proc = subprocess.Popen(
        [
            str(hepeft_bin),
            "serve",
            "--model",
            str(d / "card.toml"),
            "--params",
            str(d / "params.toml"),
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "2",
            # N = 2^12 test parameters cannot carry 40-bit flooding
            "--no-flooding",
            "--token-file",
            str(d / "tokens.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
                break
        if url is None:
            pytest.fail("hepeft serve did not start:\n" + "".join(seen))
        if not url.startswith("http"):
            url = "http://" + url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_query_round_trip(served, weights, params, features):
    http = hepeft.HttpClient(served, token=TOKEN)
    http.health()
    desc = http.model()
    assert desc["input_dims"] == [16] and desc["output_dim"] == 3
    assert http.params() == params
    pub = http.public_model()
    assert pub.input_dims == [16]
    client = http.keygen()
    got = http.query(client, features)
    bits = precision_bits(got, lora_twin(weights, features))
    print(f"over HTTP: {bits:.1f} bits")
    assert bits >= 12, bits
    # keys are registered once, by content
    key_id = http.register_keys(client.eval_keys())
    assert len(key_id) == 64


def test_server_errors_become_remote_error(served):
    http = hepeft.HttpClient(served)  # no token: the server answers 401
    with pytest.raises(hepeft.RemoteError, match="401") as e:
        http.public_model()
    assert e.value.status == 401


def test_wrong_params_digest_refused(served):
    http = hepeft.HttpClient(served, token=TOKEN, params_digest="00000000")
    with pytest.raises(hepeft.ParameterMismatchError):
        http.public_model()


def test_unreachable_server():
    http = hepeft.HttpClient("http://127.0.0.1:9", timeout=5)
    with pytest.raises(hepeft.HepeftIOError, match="127.0.0.1:9"):
        http.health()
