"""Wall-clock timing shared by the benchmark scripts (imported as ``from _timing import ...``: a script's
own folder is on ``sys.path`` when it runs as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed_runs(fn: Callable[[], Any], repeats: int, *, sync: Callable[[], None] | None = None,
               stop_after_s: float | None = None) -> tuple[list[float], Any]:
    """Call ``fn`` ``repeats`` times; return each call's seconds (``time.perf_counter``) and the last result.

    ``sync`` runs before starting and before stopping the clock (e.g. ``torch.cuda.synchronize``, so
    queued GPU work is counted). ``stop_after_s``: stop after the first call if it took at least this long.
    """
    times, result = [], None
    for _ in range(repeats):
        if sync is not None:
            sync()
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
        if stop_after_s is not None and times[0] >= stop_after_s:
            break
    return times, result


def median_seconds_and_result(fn: Callable[[], Any], repeats: int, *,
                              sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls of ``fn`` and the last call's result."""
    times, result = timed_runs(fn, repeats, sync=sync)
    return statistics.median(times), result


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``."""
    return median_seconds_and_result(fn, repeats)[0]


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each of ``fns`` over ``repeats`` rounds, each round calling every function
    once in turn (so a change of machine load hits all of them alike), and each one's last result."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results
