"""The in-process executor of the metric streaming protocol (:mod:`emms.metrics.protocol`).

:class:`StreamPlan` is one metric's score over chunk sources (:mod:`emms.compute.sources`): it reads the
rows a metric's stream asks for (the protocol's ``Rows``) and runs the stream's ``chunk`` and
``finish``; what is accumulated lives in the metric's module. A chunk's statistics are computed on
their own and merged pairwise in a fixed binary tree (:func:`tree_reduce`), so the same chunks give
bit-identical statistics here (:func:`run_plan`) and on Dask workers (:mod:`emms.compute.parallel`).
``device``: where the chunk statistics are accumulated (a torch device, for streams that are
``on_device``, in ``device_dtype``; None: numpy on this host). The torch backend
(:mod:`emms.compute.backend`) is this executor with a device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from emms._validation import as_class_labels, as_float_matrix, as_probability_matrix, as_torch_device
from emms.errors import InputError
from emms.metrics.protocol import ScoreResult
from emms.metrics.registry import check_target_kind, get_metric
from emms.compute.sources import ChunkSource, flabel_sources, open_source

#: Dtypes of the chunk moments on a torch device (the merge and the solve stay float64 on the host).
DEVICE_DTYPES = ("float64", "float32")


def tree_reduce(items: Iterable, merge: Callable[[Any, Any], Any]) -> Any:
    """Combine ``items`` with ``merge(left, right)`` along a fixed balanced binary tree.

    The tree depends only on the number of items (merge two equal-height subtrees as soon as both
    exist, then fold the rest right to left), so the result is the same whether ``merge`` runs here
    or builds a Dask graph. Holds O(log n) partial results.
    """
    stack: list[tuple[int, Any]] = []
    for item in items:
        height, node = 0, item
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            height, node = height + 1, merge(left, node)
        stack.append((height, node))
    if not stack:
        raise InputError("features: expected at least one chunk of rows")
    result = stack.pop()[1]
    while stack:
        result = merge(stack.pop()[1], result)
    return result


class StreamPlan:
    """One metric's streamed score: the rows its stream reads and the passes it runs. Picklable.

    ``chunk(pass_index, state, start, stop)`` returns the statistics of rows start:stop (reading the
    sources itself, so a Dask worker does the reading); ``finish(pass_index, state, merged)`` returns
    the state of the next pass, or the :class:`ScoreResult` after the last one.
    """

    def __init__(self, metric: str, features: ChunkSource, target: object, kind: str, *,
                 source_probs: object = None, options: Mapping[str, object] | None = None,
                 device: str | None = None, device_dtype: str = "float64") -> None:
        info = get_metric(metric)
        if info.stream is None:
            raise InputError(f"metric: {metric!r} is not streamable")
        if device is not None:
            if not info.stream.on_device:
                raise InputError(f"device: metric {metric!r} accumulates its statistics with numpy on this host only")
            if device_dtype not in DEVICE_DTYPES:
                raise InputError(f"dtype: expected one of {DEVICE_DTYPES}, got {device_dtype!r}")
            device = str(as_torch_device(device))  # checks the device exists
        self.metric, self.feature_source, self.kind, self.device = info.name, features, kind, device
        self.device_dtype = device_dtype
        self.stream = info.stream(**dict(options or {}))
        self.n_passes = self.stream.n_passes
        self.n_rows = features.shape[0]
        self.n_classes = 0
        self.flabel_widths: tuple[int, ...] = ()
        self.flabels: list[ChunkSource] = []
        if kind == "flabels":
            self.flabels = flabel_sources(target, self.n_rows)
            self.flabel_widths = tuple(src.shape[1] for src in self.flabels)
        elif kind == "classes":
            self.codes, classes = as_class_labels(target, "target", n_samples=self.n_rows)
            self.n_classes = classes.size
        else:
            arr = np.asarray(target)
            self.columns = as_float_matrix(arr[:, None] if arr.ndim == 1 else arr, "target")
            if self.columns.shape[0] != self.n_rows:
                raise InputError(f"target: has {self.columns.shape[0]} rows but features has {self.n_rows}")
        self.source_probs = None if source_probs is None else open_source(source_probs, "source_probs")
        if self.source_probs is not None and self.source_probs.shape[0] != self.n_rows:
            raise InputError(f"source_probs: has {self.source_probs.shape[0]} rows but features has {self.n_rows}")

    # -- the protocol's Rows ---------------------------------------------------------------------

    def raw_features(self, start: int, stop: int) -> Any:
        rows = self.feature_source.read(start, stop)
        return rows if self.device is None else self._to_device(rows)

    def features(self, start: int, stop: int) -> np.ndarray:
        return as_float_matrix(self.feature_source.read(start, stop), "features", min_rows=1)

    def target(self, start: int, stop: int) -> Any:
        if self.kind == "flabels":
            blocks = [src.read(start, stop) for src in self.flabels]
            return blocks if self.device is None else [self._to_device(b) for b in blocks]
        return self.codes[start:stop] if self.kind == "classes" else self.columns[start:stop]

    def probs(self, start: int, stop: int) -> np.ndarray:
        if self.source_probs is None:
            raise InputError(f"source_probs: metric {self.metric!r} needs the source head's probabilities")
        return as_probability_matrix(self.source_probs.read(start, stop), "source_probs")

    def _to_device(self, rows: object) -> object:
        import torch

        return torch.as_tensor(np.asarray(rows), device=self.device, dtype=getattr(torch, self.device_dtype))

    # -- the executor's steps --------------------------------------------------------------------

    def chunk(self, pass_index: int, state: object, start: int, stop: int) -> object:
        return self.stream.chunk(self, start, stop, pass_index, state)

    def finish(self, pass_index: int, state: object, merged: object) -> object:
        return self.stream.finish(self, merged, pass_index, state)


def make_plan(features: object, target: object, metric: str, *, source_probs: object = None,
              target_kind: str | None = None, device: str | None = None, device_dtype: str = "float64",
              **options) -> StreamPlan:
    """Validate the arguments of a streamed score and return its :class:`StreamPlan`."""
    info = get_metric(metric)
    if not info.streamable:
        from emms.metrics import available_metrics

        names = ", ".join(m.name for m in available_metrics() if m.streamable)
        raise InputError(f"metric: {metric!r} is not streamable; streamable metrics: {names}")
    target = getattr(target, "arrays", target)  # emms.flabels.FLabels
    kind = check_target_kind(info, target, target_kind)
    if info.needs_source_probs and source_probs is None:
        raise InputError(f"source_probs: metric {metric!r} needs the source head's probabilities, shape (N, C_source)")
    if not info.needs_source_probs and source_probs is not None:
        raise InputError(f"source_probs: metric {metric!r} does not use source probabilities")
    return StreamPlan(info.name, open_source(features), target, kind, source_probs=source_probs, options=options,
                      device=device, device_dtype=device_dtype)


def accumulate(plan: StreamPlan, bounds: Sequence[tuple[int, int]], pass_index: int = 0, state: Any = None) -> Any:
    """The merged statistics of one pass of ``plan`` over the chunks ``bounds``, in this process."""
    return tree_reduce((plan.chunk(pass_index, state, a, b) for a, b in bounds), _merge_in_place)


def run_plan(plan: StreamPlan, bounds: Sequence[tuple[int, int]]) -> ScoreResult:
    """Run every pass of ``plan`` in this process, one chunk in memory at a time."""
    state: Any = None
    for p in range(plan.n_passes):
        state = plan.finish(p, state, accumulate(plan, bounds, p, state))
    return state


def _merge_in_place(left: Any, right: Any) -> Any:
    return left.merge(right)
