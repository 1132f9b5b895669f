"""hepeft: private inference of PEFT adapters (LoRA, bottleneck adapters, classifier
heads) under RNS-CKKS homomorphic encryption, from Python.

The client runs the backbone and encrypts the features; the server evaluates its private
adapter on the ciphertexts; the client decrypts the logits. Everything is computed by the
Rust library; this package is a thin front end with numpy arrays in and out.

>>> import hepeft, numpy as np
>>> b = hepeft.Builder(); x = b.input("x", 8)
>>> _ = b.low_rank(x, np.ones((2, 8)), np.ones((3, 2)), scale=0.5)
>>> model = b.build()
>>> params = hepeft.params.select(model, precision=12).params
>>> client = hepeft.Client.keygen(hepeft.publish(model), params)
>>> server = hepeft.Server(model, params, flooding_bits=None)  # N = 2^12: see docs
>>> query = client.encrypt(np.full(8, 0.1))
>>> result = server.evaluate(query, client.eval_keys())
>>> np.round(client.decrypt(result), 2)
array([[0.8, 0.8, 0.8]])

Errors raise subclasses of `HepeftError` with the library's messages.
"""

from . import _hepeft
from ._hepeft import (
    Builder,
    Client,
    DimensionMismatchError,
    EvalKeys,
    FormatError,
    HepeftError,
    HepeftIOError,
    HttpClient,
    InsecureParametersError,
    InvalidLevelError,
    InvalidParametersError,
    InvalidValueError,
    LevelExhaustedError,
    MismatchError,
    MissingKeyError,
    Model,
    ModelError,
    Node,
    OutOfIntervalError,
    RefusedError,
    ParameterMismatchError,
    Params,
    Query,
    RemoteError,
    Result,
    ScaleMismatchError,
    Selection,
    Server,
    TooLargeError,
    publish,
)
from . import params, peft

__version__ = _hepeft.__version__

__all__ = [
    "Builder",
    "Client",
    "DimensionMismatchError",
    "EvalKeys",
    "FormatError",
    "HepeftError",
    "HepeftIOError",
    "HttpClient",
    "InsecureParametersError",
    "InvalidLevelError",
    "InvalidParametersError",
    "InvalidValueError",
    "LevelExhaustedError",
    "MismatchError",
    "MissingKeyError",
    "Model",
    "ModelError",
    "Node",
    "OutOfIntervalError",
    "RefusedError",
    "ParameterMismatchError",
    "Params",
    "Query",
    "RemoteError",
    "Result",
    "ScaleMismatchError",
    "Selection",
    "Server",
    "TooLargeError",
    "params",
    "peft",
    "publish",
]
