"""Batched feature extraction through the content-addressed store, resumable chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from emms._allocator import retain_freed_memory
from emms._validation import check_positive_int
from emms.data.taskdata import TaskData
from emms.errors import InputError
from emms.store import Store

#: Rows per cached chunk, in batches: a crash loses at most this many batches of work.
CHUNK_BATCHES = 8


def features_key(extractor, task_data: TaskData) -> str:
    """The store key of ``extractor``'s features for ``task_data``.

    The extractor's ``identity`` carries its spec, weights hash, preprocessing, layer and pooling;
    ``task_data.inputs_fingerprint`` carries the modality and inputs but not the labels, so the same
    inputs under another label set (fm10 and fm4's probe images, captions and questions about the
    same images) share one entry; any change to the model or the inputs gives another key.
    """
    return Store.key(kind="features", model=str(extractor.identity), data=task_data.inputs_fingerprint)


def features_meta(extractor, task_data: TaskData) -> dict:
    """The meta saved with a features entry (shown by ``emms cache ls``)."""
    return {"kind": "features", "model": str(extractor.identity), "data": task_data.name,
            "inputs_fingerprint": task_data.inputs_fingerprint, "modality": task_data.modality, "task": task_data.task}


def chunk_rows_for(batch_size: int, chunk_rows: int | None = None) -> int:
    """Rows per cached chunk: ``chunk_rows``, default ``CHUNK_BATCHES * batch_size``."""
    return chunk_rows or CHUNK_BATCHES * check_positive_int(batch_size, "batch_size")


def check_extractor(extractor, task_data: TaskData) -> None:
    """Raise an InputError unless ``extractor`` is a FeatureExtractor for ``task_data``'s modality."""
    for attribute in ("identity", "modality", "extract"):
        if not hasattr(extractor, attribute):
            raise InputError(f"extractor: expected a FeatureExtractor (identity, modality, extract), "
                             f"got {type(extractor).__name__} without {attribute!r}")
    if extractor.modality not in (task_data.modality, "any"):
        raise InputError(f"extractor: {extractor.identity} takes {extractor.modality} inputs, but the data "
                         f"{task_data.name!r} holds {task_data.modality} inputs")


def extract_chunk(extractor, inputs, start: int, batch_size: int, progress: Callable[[int], None] | None = None,
                  ) -> np.ndarray:
    """Checked float32 features (n, D) of ``inputs``, rows ``start:start + n`` of the data (for messages)."""
    return _checked(extractor.extract(inputs, batch_size=batch_size, progress=progress), start, start + len(inputs))


def extract_features(extractor, task_data: TaskData, store: Store | None = None, batch_size: int = 64,
                     progress: Callable[[int], None] | None = None, *, chunk_rows: int | None = None) -> np.ndarray:
    """Features (N, D) float32 of ``task_data.inputs`` from ``extractor`` (a FeatureExtractor).

    With a ``store``, rows are computed in chunks of ``chunk_rows`` (default
    ``CHUNK_BATCHES * batch_size``), each saved as soon as it is finished, and the whole array is
    cached under :func:`features_key`: a second call reads the cache, and a call after a crash or
    SIGKILL computes only the unfinished chunks. ``progress(n)`` is called with the number of
    rows newly done (computed or read from the cache), summing to N.
    """
    check_extractor(extractor, task_data)
    batch_size = check_positive_int(batch_size, "batch_size")
    n_rows = len(task_data.inputs)
    inputs = task_data.inputs
    if store is None or not getattr(extractor, "cacheable", True):  # e.g. precomputed feature files
        return extract_chunk(extractor, inputs, 0, batch_size, progress)

    reported = [0]  # rows of the current chunk already reported by the extractor's own progress calls

    def on_rows(n: int) -> None:
        reported[0] += n
        if progress is not None:
            progress(n)

    def compute_chunk(start: int, stop: int) -> np.ndarray:
        reported[0] = 0
        return extract_chunk(extractor, inputs[start:stop], start, batch_size, on_rows)

    def on_chunk(n: int) -> None:  # the store reports whole chunks; forward what the extractor did not
        if progress is not None and n > reported[0]:
            progress(n - reported[0])
        reported[0] = 0

    with retain_freed_memory():  # one setting for all chunks: the heap is not trimmed between them
        return store.get_or_compute(features_key(extractor, task_data), n_rows, compute_chunk,
                                    chunk_rows=chunk_rows_for(batch_size, chunk_rows),
                                    meta=features_meta(extractor, task_data), progress=on_chunk)


def extract_features_and_source_probs(extractor, task_data: TaskData, store: Store | None = None,
                                      batch_size: int = 64, progress: Callable[[int], None] | None = None,
                                      ) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and source-head probabilities (N, C) from ONE forward pass per batch.

    ``extractor`` must offer ``extract_with_source_probs`` and ``source_classes`` (the packaged
    classifiers do). Both arrays are cached together as one (N, D + C) store entry
    (:func:`with_source_probs`), with the same chunked resumability as :func:`extract_features`.
    """
    both = extract_features(with_source_probs(extractor), task_data, store, batch_size, progress)
    n_classes = int(extractor.source_classes)
    return both[:, :-n_classes], both[:, -n_classes:]


def with_source_probs(extractor) -> _FeaturesAndProbs:
    """An extractor whose rows are ``[features | source probabilities]`` (its own identity, so its own entry)."""
    if not hasattr(extractor, "extract_with_source_probs"):
        raise InputError(f"extractor: {extractor.identity} has no source head (no extract_with_source_probs)")
    return _FeaturesAndProbs(extractor)


class _FeaturesAndProbs:
    """An extractor whose output rows are [features | source probabilities]."""

    def __init__(self, extractor) -> None:
        self.inner = extractor
        self.identity = f"{extractor.identity}|with-source-probs"
        self.modality = extractor.modality

    def extract(self, inputs, batch_size: int = 64, progress: Callable[[int], None] | None = None) -> np.ndarray:
        features, probs = self.inner.extract_with_source_probs(inputs, batch_size, progress)
        return np.hstack([features, probs])


def _checked(features: object, start: int, stop: int) -> np.ndarray:
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[0] != stop - start or array.dtype.kind != "f":
        raise InputError(f"extractor: returned {array.dtype} shape {array.shape} for inputs {start}:{stop}; "
                         f"expected float features of shape ({stop - start}, D)")
    if not np.all(np.isfinite(array)):
        raise InputError(f"extractor: returned NaN or Inf features for inputs {start}:{stop}")
    return array.astype(np.float32, copy=False)
