"""The examples run as documented."""

import subprocess
import sys

from conftest import REPO


def run(*args):
    out = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_peft_head_example():
    out = run(REPO / "python" / "examples" / "peft_head.py", "--samples", "2")
    assert "argmax agreement 2/2" in out


def test_quickstart_example():
    out = run(REPO / "python" / "examples" / "quickstart.py", "--samples", "1")
    assert "argmax agreement with the plaintext twin 1/1" in out


def test_torch_head_example():
    """The PyTorch recipe of docs/python.md against the torch module (skipped without torch,
    which is not a CI dependency)."""
    import pytest

    pytest.importorskip("torch")
    out = run(REPO / "python" / "examples" / "torch_head.py")
    assert "argmax equal True" in out
