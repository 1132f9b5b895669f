"""Parameter sets: presets, files, and selection from a model (`hepeft.params.select`)."""

from typing import Optional

from ._hepeft import Model, Params, Selection
from ._hepeft import select as _select

__all__ = ["Params", "Selection", "select", "preset"]


def select(
    model: Model,
    precision: int = 16,
    flooding_bits: Optional[int] = None,
    mode: str = "latency",
    security: int = 128,
    samples: Optional[int] = None,
) -> Selection:
    """Chooses the fastest CKKS parameter set for `model` (smallest ring, then the most
    special primes) reaching `precision` bits at the output at `security` bits
    (HomomorphicEncryption.org table), surviving noise flooding at `flooding_bits`
    (None: no flooding) in `mode` ("latency", or "batch" with up to `samples` samples per
    query). Only the model's structure is used, so the public model gives the same answer.

    Returns a `Selection` (`.params`, `.report`, `.to_text()`); raises
    `InvalidParametersError` listing the refused candidates when nothing fits.
    """
    return _select(model, precision, flooding_bits, mode, security, samples)


def preset(name: str) -> Params:
    """A named preset, e.g. "CKKS_N13_QP200_128" (see `Params.presets()`)."""
    return Params.preset(name)
