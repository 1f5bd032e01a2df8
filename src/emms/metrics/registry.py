"""Metric registry: name -> scoring function with its declared capabilities.

Two calling conventions, declared by ``pool_relative``:

* per-model metrics are called as ``fn(features, target, **options) -> float``; those that need
  source-head probabilities (LEEP, NCE) receive them as the keyword ``source_probs`` of shape
  (N, C_source).
* pool-relative metrics (a model's score depends on the other candidates: ETran, NCTI) are called
  as ``fn(features_by_model, target, **options) -> dict[model, float]``.

Target kinds a metric may accept:

``classes``     class labels of shape (N,) (integer, string or bool values; remapped to 0..C-1)
``multilabel``  a 0/1 indicator matrix of shape (N, C)
``real``        real-valued targets of shape (N,) or (N, T)
``flabels``     F-label embeddings: a list of K arrays (N, L_k) or one (N, L, K) array

When ``target_kind`` is not given, the dtype decides, never the values: a 1-D float array is
``real`` (whole-number floats such as ages included), integers, strings and bools are ``classes``.
A float target for a metric that only takes class labels is an InputError naming ``target_kind``
(pass ``target_kind="classes"`` or integer labels).

Scoring runs with BLAS/OpenMP limited to one thread for small problems and on a busy machine
(:func:`blas_limit`): extra threads there cost more in start-up and oversubscription than they
gain (measured in BENCHMARKS.md §2, ``benchmarks/bench_threads.py``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emms.errors import InputError
from emms.metrics.protocol import MetricStream, ScoreResult

TARGET_KINDS = ("classes", "multilabel", "real", "flabels")
#: Feature matrices with N·D² below this are scored on one BLAS/OpenMP thread (BENCHMARKS.md §2).
SMALL_PROBLEM = 1e9


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric and what it can do."""

    name: str
    function: Callable = field(repr=False)
    targets: frozenset[str]
    needs_source_probs: bool = False
    pool_relative: bool = False
    randomised: bool = False
    stream: type[MetricStream] | None = field(default=None, repr=False)  # its streaming protocol, if any
    summary: str = ""
    takes_target_kind: bool = False  # the function has a ``target_kind`` parameter (the kind is passed on)
    needs_n_params: bool = False  # it reads the model's parameter count (``n_params=``), not only arrays
    # A scikit-learn-style class, ``estimator(**options).fit(features, target)``, whose fit holds
    # ``score_`` and what else the metric tells (``weights_``: EMMS's weight of each F-label encoder).
    estimator: type | None = field(default=None, repr=False)

    @property
    def streamable(self) -> bool:
        """Whether the metric's module provides its streaming protocol (:mod:`emms.metrics.protocol`)."""
        return self.stream is not None

    def as_dict(self) -> dict:
        """Capabilities as plain JSON-ready values."""
        return {
            "name": self.name,
            "targets": sorted(self.targets),
            "needs_source_probs": self.needs_source_probs,
            "pool_relative": self.pool_relative,
            "randomised": self.randomised,
            "streamable": self.streamable,
            "needs_n_params": self.needs_n_params,
            "summary": self.summary,
        }


_REGISTRY: dict[str, MetricInfo] = {}

_REGISTER_LINE = re.compile(r'^@register\(\s*"([^"]+)"', re.MULTILINE)


@functools.cache
def builtin_modules() -> dict[str, str]:
    """Where each built-in metric is registered: ``{name: module under emms.metrics}``.

    Read from the ``@register("name", ...)`` lines of the metric modules, without importing them
    (registration is lazy: a module is imported the first time one of its metrics is asked for), so
    the decorators are the one list of built-in metrics. Where the sources are not installed (a
    bytecode-only install), every metric module is imported and its registrations read instead.
    """
    return _builtin_modules_from_sources() or _builtin_modules_by_import()


def _builtin_modules_from_sources() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for name in _REGISTER_LINE.findall(path.read_text(encoding="utf-8")):
            out[name] = path.stem
    return out


def _builtin_modules_by_import() -> dict[str, str]:
    import pkgutil

    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"emms.metrics.{module.name}")
    return {name: info.function.__module__.removeprefix("emms.metrics.") for name, info in _REGISTRY.items()
            if info.function.__module__.startswith("emms.metrics.")}


def _load_builtin(name: str) -> None:
    """Import the module that registers built-in metric ``name`` (no-op for unknown names)."""
    module = builtin_modules().get(name)
    if module is not None and name not in _REGISTRY:
        importlib.import_module(f"emms.metrics.{module}")


def _load_all_builtins() -> None:
    for name in builtin_modules():
        _load_builtin(name)


def register(name: str, *, targets: tuple[str, ...], needs_source_probs: bool = False,
             pool_relative: bool = False, randomised: bool = False,
             stream: type[MetricStream] | None = None, estimator: type | None = None) -> Callable:
    """Decorator adding a scoring function to the registry under ``name`` (returned unchanged).

    ``stream``: the metric's :class:`~emms.metrics.protocol.MetricStream` (it is then streamable).
    ``estimator``: a class fitted as ``estimator(**options).fit(features, target)`` with the same
    score as the function in ``score_`` and, when the metric weighs F-label encoders, ``weights_``
    (:func:`score_result` returns both; per-model metrics without source probabilities only).
    """
    unknown = set(targets) - set(TARGET_KINDS)
    if unknown:
        raise ValueError(f"register({name!r}): unknown target kinds {sorted(unknown)}")
    if estimator is not None and (pool_relative or needs_source_probs):
        raise ValueError(f"register({name!r}): an estimator is for per-model metrics without source probabilities")

    def decorator(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = MetricInfo(name=name, function=fn, targets=frozenset(targets),
                                     needs_source_probs=needs_source_probs, pool_relative=pool_relative,
                                     randomised=randomised, stream=stream, estimator=estimator, summary=summary,
                                     takes_target_kind="target_kind" in inspect.signature(fn).parameters,
                                     needs_n_params="n_params" in inspect.signature(fn).parameters)
        return fn

    return decorator


def get_metric(name: str) -> MetricInfo:
    """Look a metric up by name; unknown names raise an InputError listing the known ones."""
    _load_builtin(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(set(_REGISTRY) | set(builtin_modules()))
        raise InputError(f"metric: unknown metric {name!r}; known metrics: {', '.join(known)}") from None


def available_metrics() -> list[MetricInfo]:
    """Every registered metric, sorted by name."""
    _load_all_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def infer_target_kind(target: object) -> str:
    """Guess the target kind of ``target`` (see the module docstring)."""
    if isinstance(target, (list, tuple)):
        return "flabels"
    arr = np.asarray(target)
    if arr.ndim == 3:
        return "flabels"
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):  # else NaN labels would pass for a real target
        raise InputError("target: contains NaN or Inf values; expected finite class labels or real-valued targets")
    if arr.ndim == 1:
        return "classes" if arr.dtype.kind in "iuUSOb" else "real"  # the dtype decides, not the values
    if arr.ndim == 2:
        if arr.shape[1] > 1 and arr.dtype.kind in "iubf" and np.isin(arr, (0, 1)).all():
            return "multilabel"
        return "real"
    raise InputError(f"target: cannot tell its kind from shape {arr.shape}; pass target_kind= one of {TARGET_KINDS}")


def check_target_kind(info: MetricInfo, target: object, target_kind: str | None) -> str:
    kind = target_kind or infer_target_kind(target)
    if kind not in TARGET_KINDS:
        raise InputError(f"target_kind: expected one of {TARGET_KINDS}, got {kind!r}")
    if kind not in info.targets:
        if target_kind is None and kind == "real" and "classes" in info.targets:
            raise InputError(f"target_kind: metric {info.name!r} accepts {sorted(info.targets)} targets, got 'real' "
                             "(a float target is read as real-valued); pass target_kind='classes' (or integer labels) "
                             "to use its values as class labels")
        raise InputError(f"target: metric {info.name!r} accepts {sorted(info.targets)} targets, got {kind!r}")
    return kind


def blas_limit(*feature_arrays: object) -> contextlib.AbstractContextManager:
    """One BLAS/OpenMP thread while scoring when the largest feature matrix (N, D) has N·D² <
    :data:`SMALL_PROBLEM` or the 1-minute load average exceeds the CPUs less one; else no change."""
    shapes = [tuple(getattr(features, "shape", ())) for features in feature_arrays]  # arrays, memmaps, DataFrames
    sizes = [float(shape[0]) * float(shape[1]) ** 2 for shape in shapes if len(shape) == 2]
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1) - 1
    if sizes and max(sizes) >= SMALL_PROBLEM and not busy:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1)


@functools.cache
def _thread_controller():
    """One threadpoolctl controller (scanning the loaded BLAS/OpenMP libraries costs ~4 ms per call)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def score(features: object, target: object, metric: str = "emms", *, source_probs: object = None,
          target_kind: str | None = None, **options) -> float:
    """Score one model's ``features`` (N, D) against ``target`` with a registered metric.

    Higher is better for every metric. Pool-relative metrics cannot be scored alone: use
    :func:`score_pool`.
    """
    info = get_metric(metric)
    if info.pool_relative:
        raise InputError(f"metric: {metric!r} is pool-relative (a score depends on the other candidates); use score_pool")
    kind = check_target_kind(info, target, target_kind)
    if info.takes_target_kind:
        options = {**options, "target_kind": kind}
    if info.needs_source_probs:
        if source_probs is None:
            raise InputError(f"source_probs: metric {metric!r} needs the source head's probabilities, shape (N, C_source)")
        options = {**options, "source_probs": source_probs}
    elif source_probs is not None:
        raise InputError(f"source_probs: metric {metric!r} does not use source probabilities")
    with blas_limit(features):
        return float(info.function(features, target, **options))


def score_result(features: object, target: object, metric: str = "emms", *, source_probs: object = None,
                 target_kind: str | None = None, **options) -> ScoreResult:
    """:func:`score` with what the metric tells beside its score: a metric registered with an
    ``estimator`` is fitted through it and its ``weights_`` come back too (else ``weights`` is None)."""
    info = get_metric(metric)
    if info.estimator is None:
        return ScoreResult(score(features, target, metric, source_probs=source_probs, target_kind=target_kind, **options))
    check_target_kind(info, target, target_kind)
    if source_probs is not None:
        raise InputError(f"source_probs: metric {metric!r} does not use source probabilities")
    with blas_limit(features):
        fitted = info.estimator(**options).fit(features, target)
    weights = getattr(fitted, "weights_", None)
    return ScoreResult(float(fitted.score_), None if weights is None else np.asarray(weights, dtype=float))


def score_pool(features_by_model: Mapping[str, object], target: object, metric: str = "emms", *,
               source_probs_by_model: Mapping[str, object] | None = None, target_kind: str | None = None,
               **options) -> dict[str, float]:
    """Score every model of a pool; returns ``{model: score}`` in the pool's order."""
    if not features_by_model:
        raise InputError("features_by_model: expected at least one model")
    info = get_metric(metric)
    check_target_kind(info, target, target_kind)
    if info.pool_relative:
        with blas_limit(*features_by_model.values()):
            result = info.function(dict(features_by_model), target, **options)
        return {name: float(result[name]) for name in features_by_model}
    out = {}
    for name, feats in features_by_model.items():
        probs = None
        if info.needs_source_probs:
            if source_probs_by_model is None or name not in source_probs_by_model:
                raise InputError(f"source_probs_by_model: metric {metric!r} needs source probabilities for model {name!r}")
            probs = source_probs_by_model[name]
        out[name] = score(feats, target, metric, source_probs=probs, target_kind=target_kind, **options)
    return out
