"""A precomputed embedding table: text -> vector, read from an ``.npz`` file.

The file holds ``texts`` (a string array, n) and ``embeddings`` (n, L); it is read without
pickle. Use it for embeddings made elsewhere (an API, a model you cannot run here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emms._io import path_fingerprint
from emms.flabels.encoders.base import BatchedEncoder
from emms.errors import InputError


class TableEncoder(BatchedEncoder):
    """Looks texts up in a table; a text that is not in it is an InputError."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"table: file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                texts, embeddings = data["texts"], data["embeddings"]
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"table: {path} must be an .npz with arrays 'texts' (strings) and 'embeddings' "
                             f"(n, L) ({type(exc).__name__}: {exc})") from None
        if texts.dtype.kind != "U" or texts.ndim != 1:
            raise InputError(f"table: {path} 'texts' must be a 1-D string array, got {texts.dtype} {texts.shape}")
        if embeddings.ndim != 2 or embeddings.shape[0] != texts.shape[0] or embeddings.dtype.kind not in "fiu":
            raise InputError(f"table: {path} 'embeddings' must be numeric of shape ({texts.shape[0]}, L), "
                             f"got {embeddings.dtype} {embeddings.shape}")
        if not np.all(np.isfinite(embeddings)):
            raise InputError(f"table: {path} 'embeddings' contains NaN or Inf")
        self.rows = {t: i for i, t in enumerate(texts.tolist())}
        if len(self.rows) != texts.shape[0]:
            raise InputError(f"table: {path} 'texts' has duplicates; expected one row per text")
        self.embeddings = embeddings.astype(np.float32)
        self._dim = int(embeddings.shape[1])
        self.identity = f"table:{path.name}@{path_fingerprint(path)}"

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        missing = [t for t in batch if t not in self.rows]
        if missing:
            raise InputError(f"texts: {len(missing)} text(s) not in the embedding table, e.g. {missing[0]!r}")
        return self.embeddings[[self.rows[t] for t in batch]]
