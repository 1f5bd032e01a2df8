"""The streaming protocol: a metric's score from statistics accumulated over row chunks.

A metric streams when its module registers it with a ``stream`` class
(:func:`~emms.metrics.registry.register`); ``MetricInfo.streamable`` derives from that. The
executors (:mod:`emms.compute.plans` in this process, :mod:`emms.compute.parallel` on Dask, :mod:`emms.compute.backend`
on a torch device) only run the protocol; what is accumulated and how it becomes a score lives in
the metric's module::

    stream = info.stream(**options)                 # checks the options
    state = None
    for p in range(stream.n_passes):
        merged = merge of stream.chunk(rows, a, b, p, state) over the chunks [a, b)   (any tree)
        state = stream.finish(rows, merged, p, state)   # the next pass's state; a ScoreResult at the end

``merge(other)`` adds ``other``'s rows into self and returns self (executors that must not mutate
an input merge a copy). A stream and its statistics are picklable (Dask ships them to workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np


@dataclass(frozen=True)
class ScoreResult:
    """A streamed score; ``weights`` are EMMS's simplex weights t (K,) (None for other metrics)."""

    score: float
    weights: np.ndarray | None = None


class Rows(Protocol):
    """Rows of one scoring problem, read a chunk [start, stop) at a time by the executor.

    ``kind``: the target kind; ``n_classes``: C for class targets; ``flabel_widths``: L_k of the
    F-label blocks; ``device``: where the statistics are accumulated (None: numpy on this host).
    """

    kind: str
    n_classes: int
    flabel_widths: tuple[int, ...]
    device: str | None

    def raw_features(self, start: int, stop: int) -> Any:
        """Feature rows (n, D) as read (any numeric dtype; on ``device`` if set), not yet validated."""

    def features(self, start: int, stop: int) -> np.ndarray:
        """Validated float64 feature rows (n, D)."""

    def target(self, start: int, stop: int) -> Any:
        """Class codes (n,) in 0..C-1, float64 target columns (n, T), or the K F-label blocks (n, L_k) as read."""

    def probs(self, start: int, stop: int) -> np.ndarray:
        """Validated source-head probabilities (n, C_s)."""


class Mergeable(Protocol):
    """Statistics of some rows that absorb another part's rows."""

    def merge(self, other: Any) -> Any:
        """Add ``other``'s rows into self; returns self."""


class MetricStream:
    """Base of a metric's stream: ``options`` are the metric's keyword options, checked by subclasses.

    ``on_device``: the chunk statistics accept arrays on a torch device (:attr:`Rows.device`).
    """

    n_passes: int = 1
    on_device: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    @classmethod
    def accepts(cls, options: Mapping[str, Any]) -> bool:
        """Whether the metric with these ``options`` is computed from streamed statistics (default: yes)."""
        return True

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: Any) -> Mergeable:
        """Statistics of rows ``start:stop`` in pass ``pass_index`` (``state``: the previous pass's result)."""
        raise NotImplementedError

    def finish(self, rows: Rows, merged: Any, pass_index: int, state: Any) -> Any:
        """The next pass's state from the merged statistics, or the :class:`ScoreResult` after the last pass."""
        raise NotImplementedError


class Sums:
    """Named arrays that add when merged: raw cross products, count tables, sums of logs."""

    def __init__(self, **values: object) -> None:
        self.values = {k: np.asarray(v) for k, v in values.items()}

    def merge(self, other: Sums) -> Sums:
        """Add ``other`` into self; returns self."""
        for k, v in other.values.items():
            self.values[k] = self.values[k] + v
        return self

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]

