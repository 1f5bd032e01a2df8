"""Batched feature extraction through the content-addressed store, resumable chunk by chunk.

:func:`extract_features` caches an extractor's own features; :func:`extract_layer_features` the
pooled features of several of its layers, from one forward pass, one store entry per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from emms._allocator import retain_freed_memory
from emms._validation import check_positive_int
from emms.data.taskdata import TaskData
from emms.errors import InputError
from emms.compute.store import Store

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


#: The output name of the source-head probabilities among layer outputs (their own store entry).
SOURCE_PROBS = "source-probs"


def layer_key(extractor, task_data: TaskData, layer: str) -> str:
    """The store key of one layer's pooled features (or of :data:`SOURCE_PROBS`) for ``task_data``.

    Keyed on the layer's name (a module path or ``hidden_states.K``), not its position, beside the
    extractor's identity (weights, preprocessing, pooling) and the inputs' fingerprint.
    """
    return Store.key(kind="layer-features", model=str(extractor.identity), data=task_data.inputs_fingerprint,
                     layer=layer)


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


def extract_layer_features(extractor, task_data: TaskData, layers: Sequence[int], store: Store | None = None,
                           batch_size: int = 64, progress: Callable[[int], None] | None = None, *,
                           with_source_probs: bool = False, chunk_rows: int | None = None) -> dict[str, np.ndarray]:
    """Pooled features of several layers of ``extractor``: ``{layer name: (N, D_k) float32}``.

    ``layers`` index the extractor's ``layer_names`` (negative from the end). The layers not in the
    store are computed together, ONE forward pass per batch (``extractor.extract_layers``); with
    ``with_source_probs`` the source head's probabilities come from the same pass, under
    :data:`SOURCE_PROBS`. Each output has its own entry (:func:`layer_key`), written chunk by chunk
    as :func:`extract_features` does, so a later call asking for more layers computes only the
    missing ones and a call after a crash only the unfinished chunks. An extractor without layer
    access (``layer_names`` absent) has one layer, ``"output"``: its :func:`extract_features` entry.
    """
    from emms.models.layers import layer_index, layer_names

    check_extractor(extractor, task_data)
    batch_size = check_positive_int(batch_size, "batch_size")
    names = layer_names(extractor)
    index = list(dict.fromkeys(layer_index(int(k), len(names), str(extractor.identity)) for k in layers))
    if not index:
        raise InputError("layers: expected at least one layer index")
    if not hasattr(extractor, "extract_layers"):
        if with_source_probs:
            features, probs = extract_features_and_source_probs(extractor, task_data, store, batch_size, progress)
            return {names[0]: features, SOURCE_PROBS: probs}
        return {names[0]: extract_features(extractor, task_data, store, batch_size, progress)}
    if with_source_probs and not hasattr(extractor, "extract_layers_with_source_probs"):
        raise InputError(f"extractor: {extractor.identity} has no source head (no extract_layers_with_source_probs)")
    wanted = [names[k] for k in index] + ([SOURCE_PROBS] if with_source_probs else [])
    inputs, n_rows = task_data.inputs, len(task_data.inputs)

    def compute(rows: slice, todo: list[str], report: Callable[[int], None] | None) -> dict[str, np.ndarray]:
        """The outputs ``todo`` for ``inputs[rows]``, one pass per batch, checked."""
        chosen = [names.index(name) for name in todo if name != SOURCE_PROBS]
        if SOURCE_PROBS in todo and not chosen:  # the layers were cached by a run without the probabilities
            arrays = [extractor.source_probs(inputs[rows], batch_size, report)]
        elif SOURCE_PROBS in todo:
            arrays = extractor.extract_layers_with_source_probs(inputs[rows], chosen, batch_size, report)
        else:
            arrays = extractor.extract_layers(inputs[rows], chosen, batch_size, report)
        order = [name for name in todo if name != SOURCE_PROBS] + ([SOURCE_PROBS] if SOURCE_PROBS in todo else [])
        start = rows.start or 0
        return {name: _checked(array, start, start + len(inputs[rows])) for name, array in zip(order, arrays)}

    if store is None:
        return compute(slice(0, n_rows), wanted, progress)
    keys = {name: layer_key(extractor, task_data, name) for name in wanted}
    done: dict[str, np.ndarray] = {}
    for name, key in keys.items():
        cached = store.get(key)
        if cached is not None and cached.shape[0] == n_rows:
            done[name] = cached
    todo = [name for name in wanted if name not in done]
    if not todo:
        if progress is not None:
            progress(n_rows)
        return {name: done[name] for name in wanted}
    chunk_rows = chunk_rows_for(batch_size, chunk_rows)
    bounds = store.chunk_bounds(n_rows, chunk_rows)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in todo}
    with retain_freed_memory():
        for start, stop in bounds:
            computed: dict[str, np.ndarray] = {}
            reported = [0]

            def on_rows(n: int) -> None:
                reported[0] += n
                if progress is not None:
                    progress(n)

            def one(name: str) -> Callable[[int, int], np.ndarray]:
                def chunk(first: int, last: int) -> np.ndarray:
                    if not computed:  # the first output of this chunk missing from the store: compute them all at once
                        computed.update(compute(slice(first, last), todo, on_rows))
                    return computed[name]
                return chunk

            for name in todo:
                chunks[name].append(store.chunk(keys[name], start, stop, one(name)))
            if progress is not None and stop - start > reported[0]:
                progress(stop - start - reported[0])
        meta = features_meta(extractor, task_data)
        for name in todo:
            done[name] = store.join_chunks(keys[name], n_rows, chunk_rows, {**meta, "kind": "layer-features",
                                                                             "layer": name}, chunks=chunks[name])
    return {name: done[name] for name in wanted}


def extract_layer_choice(extractors: Mapping[str, object], task_data: TaskData, choice, store: Store | None = None,
                         batch_size: int = 64, *, with_probs: Mapping[str, bool] | None = None,
                         progress: Callable[[str, int, int], None] | None = None,
                         timings: list[dict] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], object]:
    """What :func:`emms.pipeline.rank` scores for a layer ``choice`` (:mod:`emms.models.layers`).

    Returns ``(features, source_probs, plan)``: features per scored entry (a model, ``MODEL#layerK``,
    or a model's layer mean), the source probabilities of the models in ``with_probs`` under each of
    their entries, and the :class:`~emms.models.layers.LayerPlan` that maps entries back to models.
    Each model's layers come from :func:`extract_layer_features` (one pass, cached per layer).
    ``progress(model, done, total)`` reports rows done per model; ``timings`` gets one "extract features" row per model.
    """
    import time

    from emms.models.layers import layer_names, mean_features, pick_layers, plan_layers

    by_model: dict[str, dict[int, np.ndarray]] = {}
    probs: dict[str, np.ndarray] = {}
    for name, extractor in extractors.items():
        t0 = time.perf_counter()
        names = layer_names(extractor)
        picked = pick_layers(choice, len(names), name)
        done = [0]

        def report(n: int, name: str = name, done: list[int] = done) -> None:
            done[0] += n
            if progress is not None:
                progress(name, done[0], len(task_data.inputs))

        out = extract_layer_features(extractor, task_data, picked, store, batch_size, report,
                                     with_source_probs=bool((with_probs or {}).get(name)))
        if SOURCE_PROBS in out:
            probs[name] = out.pop(SOURCE_PROBS)
        by_model[name] = {names.index(layer): array for layer, array in out.items()}
        if timings is not None:
            timings.append({"stage": "extract features", "model": name, "seconds": time.perf_counter() - t0})
    plan = plan_layers(choice, {m: {k: a.shape[1] for k, a in layers.items()} for m, layers in by_model.items()})
    features, source_probs = {}, {}
    for entry, (model, layer) in plan.scored.items():
        layers = by_model[model]
        features[entry] = layers[layer] if isinstance(layer, int) else mean_features(list(layers.values()))
        if model in probs:
            source_probs[entry] = probs[model]
    return features, source_probs, plan
