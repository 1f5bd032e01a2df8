"""What every text encoder shares: the protocol, batching with progress, devices, identities."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from emms._io import path_fingerprint
from emms._validation import check_positive_int
from emms.errors import InputError, ResourceError

Progress = Callable[[int], None]


@runtime_checkable
class TextEncoder(Protocol):
    """A foundation text encoder: a list of texts -> (n, dim) float32 embeddings.

    ``identity`` names the model and its exact weights (a content hash or hub commit), so cached
    embeddings are keyed by it. ``progress(n)`` is called with the number of texts just finished.
    """

    identity: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None) -> np.ndarray: ...


class BatchedEncoder:
    """Base of the adapters: ``encode`` runs ``_encode_batch`` over batches of ``batch_size`` texts.

    Subclasses set ``identity`` and ``_dim`` and implement ``_encode_batch(list[str]) -> (b, dim)``.
    """

    identity: str
    _dim: int

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        """(n, dim) float32 embeddings of ``texts``; ``progress(n_done)`` after each batch."""
        return encode_in_batches(texts, batch_size, self._encode_batch, progress, self.dim)

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        raise NotImplementedError


def check_texts(texts: object) -> list[str]:
    """``texts`` as a list of strings (InputError otherwise)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"texts: expected a list of strings, got {type(texts).__name__}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"texts: item {bad} is a {type(texts[bad]).__name__}; expected strings")
    return list(texts)


def encode_in_batches(texts: object, batch_size: object, encode_batch: Callable[[list[str]], np.ndarray],
                      progress: Progress | None, dim: int) -> np.ndarray:
    """Run ``encode_batch`` over consecutive batches; return (n, dim) float32, reporting progress."""
    texts = check_texts(texts)
    batch_size = check_positive_int(batch_size, "batch_size")
    out = np.empty((len(texts), dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + int(batch_size)]
        out[start:start + len(batch)] = encode_batch(batch)
        if progress is not None:
            progress(len(batch))
    return out


def masked_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token states (B, T, H) over positions where ``mask`` (B, T) is 1; padding excluded."""
    weights = mask.astype(hidden.dtype)[..., None]
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1)


def model_label(name_or_path: str) -> str:
    """How a model appears in an identity: a hub id as is, a local path by its folder/file name.

    The weights fingerprint carries the content, so identities (and cache keys) do not depend on
    where a model is installed.
    """
    return Path(name_or_path).name if os.path.exists(name_or_path) else name_or_path


def model_fingerprint(name_or_path: str) -> str | None:
    """Weights fingerprint of a local model folder/file, or the commit of a cached hub model; None if unknown.

    A hub id resolves to its snapshot in the local Hugging Face cache (``.../snapshots/<commit>``).
    """
    if os.path.exists(name_or_path):
        return path_fingerprint(name_or_path)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    with contextlib.suppress(Exception):  # an invalid repo id is not an error here: the load reports it
        found = try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(found, str):
            return "commit-" + Path(found).parent.name
    return None


@contextlib.contextmanager
def hub_load_errors(what: str, name_or_path: str) -> Iterator[None]:
    """Turn a failed model load into a one-line ResourceError saying what is needed."""
    try:
        yield
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        if os.path.exists(name_or_path):
            raise ResourceError(f"{what}: cannot load the model at {name_or_path} ({_first_line(exc)})") from None
        raise ResourceError(
            f"{what}: {name_or_path!r} is not a local folder and is not in the local Hugging Face cache; it needs "
            f"hub access (network, HF_HUB_OFFLINE unset) to download it once from https://huggingface.co/{name_or_path}, "
            f"or a local folder saved with save_pretrained ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
