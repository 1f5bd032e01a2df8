"""Extraction stage of :func:`emms.pipeline.rank`: model specs -> extractors, and each model's features
(and source-head probabilities) through the store, in this process or first on Dask."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from emms.errors import InputError

if TYPE_CHECKING:
    from emms.pipeline.scoring import ProgressCallback


def load_extractors(models: Sequence, *, device: str, image_size: int | None) -> tuple[dict, dict]:
    """``{name: extractor}`` and ``{name: ExtractorSpec or None}`` (how Dask workers load it; None: an object).

    ``image_size`` applies to the packaged backbones (``builtin:``) only, as in :func:`rank`.
    """
    from emms.compute.parallel import ExtractorSpec

    out, sources = {}, {}
    for model in models:
        if isinstance(model, str):
            options = {"image_size": image_size} if image_size is not None and model.startswith("builtin:") else {}
            source = ExtractorSpec(model, device, tuple(options.items()))
            extractor, name = source.load(), model
        else:
            extractor, source = model, None
            name = getattr(model, "name", None) or getattr(model, "identity", None) or repr(model)
        if name in out:
            raise InputError(f"models: {name!r} is listed twice")
        out[name], sources[name] = extractor, source
    return out, sources

def check_modality(extractors: dict, task_data) -> None:
    for name, extractor in extractors.items():
        modality = getattr(extractor, "modality", None)
        if modality not in (None, "any", task_data.modality):
            raise InputError(f"models: {name!r} takes {modality} inputs but the data {task_data.name!r} "
                             f"holds {task_data.modality}")

@contextlib.contextmanager
def dask_target(scheduler: object) -> Iterator[object]:
    """None without a scheduler; else one Dask client (or local scheduler name) for the whole call."""
    if scheduler is None:
        yield None
        return
    from emms.compute.parallel import dask_client

    with dask_client(scheduler) as target:
        yield target

def extract_all(extractors: dict, sources: dict, task_data, store, *, batch_size: int,
                 notify: ProgressCallback, timings: list[dict], scheduler: object) -> tuple[dict, dict]:
    """Features of every model, and source probabilities of those with a source head, through the store.

    A model with a source head always gets its features and probabilities from one pass, cached as
    one entry, whichever metrics are asked: a later run with other metrics reads the same entry.
    With a ``scheduler`` the store is first filled on Dask, one task per (model, chunk)
    (:func:`emms.compute.parallel.extract_on_dask`); the in-process pass then reads the entries back.
    """
    with_probs = {name: has_source_head(e) for name, e in extractors.items()}
    dask_seconds, on_dask = 0.0, []
    if scheduler is not None:
        from emms.compute.parallel import ExtractionJob, extract_on_dask

        t0 = time.perf_counter()
        total, done = extract_total(task_data), dict.fromkeys(extractors, 0)

        def advance(name: str, n: int) -> None:
            done[name] += n
            notify("extract features", name, done[name], total)

        jobs = {name: ExtractionJob(e, sources[name], with_probs[name]) for name, e in extractors.items()}
        on_dask = extract_on_dask(jobs, task_data, store, scheduler=scheduler, batch_size=batch_size, progress=advance)
        dask_seconds = (time.perf_counter() - t0) / max(len(on_dask), 1)  # wall time shared out over the models
    features, source_probs = {}, {}
    for name, extractor in extractors.items():
        t0 = time.perf_counter()
        report = None if name in on_dask else (  # on Dask: already reported per chunk
            lambda done, total, name=name: notify("extract features", name, done, total))
        features[name], probs = extract_model(extractor, task_data, store, batch_size, report)
        if probs is not None:
            source_probs[name] = probs
        seconds = time.perf_counter() - t0 + (dask_seconds if name in on_dask else 0.0)
        timings.append({"stage": "extract features", "model": name, "seconds": seconds})
    return features, source_probs

def extract_total(task_data) -> int:
    return len(task_data.labels) if task_data.task != "captioning" else len(task_data.inputs)

def has_source_head(extractor) -> bool:
    """Whether ``extractor`` gives source-head probabilities (for LEEP, NCE, ...) with its features."""
    return hasattr(extractor, "extract_with_source_probs")

def extract_model(extractor, task_data, store, batch_size: int = 64,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, D) of one model, and its source probabilities (N, C) when it has a source head
    (else None), from one pass cached as one store entry: what :func:`rank` reads, whatever its
    metrics. ``progress(done, total)`` counts rows."""
    from emms.compute.extract import extract_features, extract_features_and_source_probs

    total = extract_total(task_data)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    if has_source_head(extractor):
        return extract_features_and_source_probs(extractor, task_data, store=store, batch_size=batch_size,
                                                 progress=advance)
    return extract_features(extractor, task_data, store=store, batch_size=batch_size, progress=advance), None
