"""Hugging Face PEFT checkpoints as hepeft models (`hepeft.peft.load`)."""

import os
from typing import Mapping, Optional, Sequence, Tuple, Union

from ._hepeft import Model
from ._hepeft import load as _load

__all__ = ["load"]

ArrayLike = object  # numpy.ndarray, or anything numpy.asarray accepts (a CPU torch tensor)


def load(
    path: Union[str, "os.PathLike[str]"],
    base_weights: Union[Mapping[str, ArrayLike], str, "os.PathLike[str]"],
    head: Optional[Sequence[str]] = None,
    activation: Optional[str] = None,
    interval: Optional[Tuple[float, float]] = None,
    degree: int = 7,
    adapter_name: Optional[str] = None,
    allow_unknown: bool = False,
) -> Model:
    """Reads the PEFT checkpoint directory `path` (`adapter_model.safetensors` and
    `adapter_config.json`, as `PeftModel.save_pretrained` writes them) and applies it to the
    base layers' weights `base_weights` (a dict such as `{"classifier.weight": W,
    "classifier.bias": b}`, e.g. from `model.state_dict()`, or a safetensors path), exactly
    as PEFT computes it: LoRA / rsLoRA scaling, rank and alpha patterns, DoRA, KaSA,
    `modules_to_save` and saved biases. LoRA factors stay low-rank (never densified).

    `head` names the base modules forming the head, input first (default: the only 2-D
    weight); between two modules, `activation` ("gelu", "relu", "square", ...) is fitted on
    `interval` as a Chebyshev polynomial of `degree`. `adapter_name` picks one of several
    named adapters saved in subfolders.

    Raises `ModelError` for a checkpoint that does not fit the base weights, naming the
    tensor.
    """
    return _load(
        os.fspath(path),
        base_weights if isinstance(base_weights, Mapping) else os.fspath(base_weights),
        None if head is None else list(head),
        activation,
        None if interval is None else (float(interval[0]), float(interval[1])),
        degree,
        adapter_name,
        allow_unknown,
    )
