"""Out-of-core scoring: metrics computed from statistics accumulated over row chunks on disk.

Most metrics are functions of sufficient statistics (``shared/DESIGN.md``), so they need one pass
over the features in chunks, never the whole (N, D) array in memory. How a metric streams is its
own module's business: its :class:`~emms.metrics.protocol.MetricStream` (e.g.
:class:`emms.metrics.hscore.HScoreStream`), and ``MetricInfo.streamable`` says whether it has one
(``emms metrics`` lists them). This module runs them: in this process (:func:`emms.compute.plans.run_plan`) or on Dask
(:func:`emms.compute.parallel.run_plans`), over the chunk sources of :mod:`emms.compute.sources` (a ``.npy``
path, a zarr array or folder, a store entry, any array-like, :class:`IndexedRows`). Targets (class
labels, real values) and source probabilities are small next to the features and are held in
memory; F-labels may be sources.

The other metrics (NLEEP, kNN, PARC, SFDA, PACTran, linear probe need the rows together; NCTI and
ETran are pool-relative) are scored on a seeded stratified subsample of ``max_rows`` rows
(classes keep their proportions, at least one row each), read in one pass; exact when
N <= ``max_rows``.

Equality: streamed scores equal the in-memory functions' to ~1e-12 relative (tested at 1e-9 with
uneven chunks), because both call the same from-statistics function of each metric module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from emms._validation import as_class_labels, check_seed
from emms.errors import EmmsWarning, InputError
from emms.metrics._common import stratified_subsample
from emms.metrics.protocol import ScoreResult
from emms.metrics.registry import check_target_kind, get_metric, score, score_pool
from emms.compute.parallel import run_plans, score_models
from emms.compute.plans import make_plan, run_plan
from emms.compute.sources import (DEFAULT_CHUNK_ROWS, ChunkSource, IndexedRows, chunk_bounds, open_source, read_rows,
                          store_source)

__all__ = ["DEFAULT_CHUNK_ROWS", "DEFAULT_MAX_ROWS", "IndexedRows", "ScoreResult", "open_source", "store_source",
           "stream_fit", "stream_score", "stream_score_pool", "subsample_rows"]

DEFAULT_MAX_ROWS = 10_000


def stream_score(features: object, target: object, metric: str = "emms", *, chunk_rows: int | Sequence[int] =
                 DEFAULT_CHUNK_ROWS, source_probs: object = None, target_kind: str | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None, **options) -> float:
    """Score ``features`` (a .npy/zarr path, a source or an (N, D) array) chunk by chunk.

    ``target``: class labels (N,), real/multi-label targets, or F-labels (K arrays, paths or sources
    (N, L_k), or one (N, L, K) array). ``chunk_rows``: rows per chunk, or explicit chunk sizes.
    Streamable metrics (``MetricInfo.streamable``) equal the in-memory score; the others are scored on a
    seeded stratified subsample of ``max_rows`` rows (``seed``), with an :class:`EmmsWarning` when
    N > ``max_rows``. ``scheduler``: None (this process) or a Dask scheduler (see
    :func:`emms.compute.parallel.dask_client`). ``options`` go to the metric.
    """
    return stream_fit(features, target, metric, chunk_rows=chunk_rows, source_probs=source_probs,
                      target_kind=target_kind, max_rows=max_rows, seed=seed, scheduler=scheduler, **options).score


def stream_fit(features: object, target: object, metric: str = "emms", *, chunk_rows: int | Sequence[int] =
               DEFAULT_CHUNK_ROWS, source_probs: object = None, target_kind: str | None = None,
               max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None,
               **options) -> ScoreResult:
    """:func:`stream_score` returning a :class:`ScoreResult` (with EMMS's weights)."""
    info = get_metric(metric)
    if info.pool_relative:
        raise InputError(f"metric: {metric!r} is pool-relative; use stream_score_pool")
    if not info.streamable:
        source = open_source(features)
        value = _score_subsample({"model": source}, target, info.name, source_probs_by_model={"model": source_probs}
                                 if source_probs is not None else None, target_kind=target_kind, max_rows=max_rows,
                                 seed=seed, options=options)["model"]
        return ScoreResult(value)
    plan = make_plan(features, target, metric, source_probs=source_probs, target_kind=target_kind, **options)
    bounds = chunk_bounds(plan.n_rows, chunk_rows)
    if scheduler is None:
        return run_plan(plan, bounds)
    return run_plans({"model": plan}, bounds, scheduler)["model"]


def stream_score_pool(features_by_model: Mapping[str, object], target: object, metric: str = "emms", *,
                      chunk_rows: int | Sequence[int] = DEFAULT_CHUNK_ROWS,
                      source_probs_by_model: Mapping[str, object] | None = None, target_kind: str | None = None,
                      max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None,
                      **options) -> dict[str, float]:
    """:func:`stream_score` for every model of a pool (pool-relative metrics: on a shared subsample)."""
    if not features_by_model:
        raise InputError("features_by_model: expected at least one model")
    info = get_metric(metric)
    if info.pool_relative:
        sources = {m: open_source(f, f"features[{m!r}]") for m, f in features_by_model.items()}
        return _score_subsample(sources, target, info.name, source_probs_by_model=None, target_kind=target_kind,
                                max_rows=max_rows, seed=seed, options=options)
    probs = source_probs_by_model or {}
    if info.needs_source_probs and set(features_by_model) - set(probs):
        missing = sorted(set(features_by_model) - set(probs))
        raise InputError(f"source_probs_by_model: metric {metric!r} needs source probabilities for {', '.join(missing)}")
    if scheduler is not None and info.streamable:
        results = score_models(features_by_model, target, metric, scheduler=scheduler, source_probs_by_model=probs,
                               target_kind=target_kind, chunk_rows=chunk_rows, **options)
        return {m: r.score for m, r in results.items()}
    return {m: stream_score(f, target, metric, chunk_rows=chunk_rows, source_probs=probs.get(m),
                            target_kind=target_kind, max_rows=max_rows, seed=seed, **options)
            for m, f in features_by_model.items()}


def subsample_rows(target: object, n_rows: int, max_rows: int, seed: int, *, stratify: bool) -> np.ndarray:
    """Sorted row indices of the seeded subsample used for non-streamable metrics.

    Class targets (``stratify``): :func:`emms.metrics._common.stratified_subsample`; others: a uniform
    draw without replacement. All rows when n_rows <= max_rows.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 2:
        raise InputError(f"max_rows: expected an integer >= 2, got {max_rows!r}")
    seed = check_seed(seed)
    if stratify:
        codes, _ = as_class_labels(target, "target", n_samples=n_rows)
        return stratified_subsample(codes, int(max_rows), seed)
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=int(max_rows), replace=False))


def _score_subsample(sources: Mapping[str, ChunkSource], target: object, metric: str, *,
                     source_probs_by_model: Mapping[str, object] | None, target_kind: str | None, max_rows: int,
                     seed: int, options: Mapping[str, object]) -> dict[str, float]:
    info = get_metric(metric)
    n_rows = {s.shape[0] for s in sources.values()}
    if len(n_rows) != 1:
        raise InputError(f"features_by_model: every model must have the same number of rows, got {sorted(n_rows)}")
    n = n_rows.pop()
    kind = check_target_kind(info, target, target_kind)
    rows = subsample_rows(target, n, max_rows, seed, stratify=kind == "classes")
    if rows.size < n:
        warnings.warn(f"{metric}: not streamable; scored on a seeded stratified subsample of {rows.size} of {n} rows "
                      f"(max_rows={max_rows}, seed={seed})", EmmsWarning, stacklevel=3)
    features = {m: read_rows(s, rows) for m, s in sources.items()}
    target_rows = np.asarray(target)[rows]
    if info.pool_relative:
        return score_pool(features, target_rows, metric, target_kind=target_kind, **options)
    out = {}
    for m, feats in features.items():
        probs = None
        if source_probs_by_model is not None:
            probs = read_rows(open_source(source_probs_by_model[m], "source_probs"), rows)
        out[m] = score(feats, target_rows, metric, source_probs=probs, target_kind=target_kind, **options)
    return out
