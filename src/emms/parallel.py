"""Execution on Dask: one task per (model, chunk) producing statistics, a tree reduction, the solve.

``scheduler`` everywhere in the API:

* ``None`` (default): no Dask; everything runs in this process (:func:`emms.streaming.run_plan`).
* ``"local"``: a :class:`distributed.LocalCluster` started for the call (one thread per worker,
  dask's default number of worker processes) and closed afterwards.
* ``"synchronous"`` or ``"threads"``: dask's single-machine schedulers, no cluster.
* an address (``tcp://host:8786``, ``host:8786``): a running Dask scheduler; a
  :class:`distributed.Client` is used as it is.

The graph of a streamed metric (:class:`emms.streaming.StreamPlan`) for each model: ``chunk`` tasks
read rows ``start:stop`` on the worker and return their statistics; these are merged along the fixed
binary tree of :func:`emms.streaming.tree_reduce` (merges copy their left input, never mutate it);
``finish`` solves. A second pass (LEEP, official TransRate) depends on the first one's ``finish``.
Because the tree and the chunk boundaries are the same as in-process, the scores are bit-identical
to :func:`emms.streaming.stream_score` with ``scheduler=None``.

Workers must be able to read the sources: a ``.npy``/zarr path must be visible to them (shared
file system); in-memory arrays are shipped once per worker with the plan.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from emms.errors import InputError
from emms.streaming import DEFAULT_CHUNK_ROWS, ScoreResult, StreamPlan, tree_reduce

LOCAL_SCHEDULERS = ("synchronous", "threads")


@contextlib.contextmanager
def dask_client(scheduler: object) -> Iterator[Any]:
    """Yield what ``dask.compute(..., scheduler=...)`` takes for ``scheduler`` (see the module doc).

    A cluster or client created here is closed on exit; a Client passed in is left open.
    """
    if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
        yield scheduler
        return
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise InputError(f"scheduler: expected 'local', 'synchronous', 'threads', a scheduler address "
                         f"(tcp://host:port) or a distributed.Client, got {scheduler!r}")
    if scheduler == "local":
        with LocalCluster(threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"scheduler: cannot reach a Dask scheduler at {address} ({exc})") from None
    with client:
        yield client


def run_plans(plans: Mapping[str, StreamPlan], bounds: Sequence[tuple[int, int]] | Mapping[str, Sequence],
              scheduler: object) -> dict[str, ScoreResult]:
    """Run streamed metric plans on Dask; ``bounds`` the row chunks (one list, or one per model)."""
    import dask

    graph = {}
    for model, plan in plans.items():
        chunks = bounds[model] if isinstance(bounds, Mapping) else bounds
        plan_node = dask.delayed(plan, name=f"plan-{uuid.uuid4().hex}")
        state = None
        for p in range(plan.n_passes):
            parts = [dask.delayed(_chunk)(plan_node, p, state, a, b) for a, b in chunks]
            merged = tree_reduce(parts, lambda left, right: dask.delayed(_merged)(left, right))
            state = dask.delayed(_finish)(plan_node, p, state, merged)
        graph[model] = state
    with dask_client(scheduler) as target:
        (results,) = dask.compute(graph, scheduler=target)
    return results


def map_models(function, items: Mapping[str, Any], scheduler: object) -> dict[str, Any]:
    """``{name: function(item)}`` with one Dask task per item (e.g. a model's whole in-memory score)."""
    import dask

    graph = {name: dask.delayed(function)(item) for name, item in items.items()}
    with dask_client(scheduler) as target:
        (results,) = dask.compute(graph, scheduler=target)
    return results


def _chunk(plan: StreamPlan, pass_index: int, state: object, start: int, stop: int) -> object:
    return plan.chunk(pass_index, state, start, stop)


def _merged(left: Any, right: Any) -> Any:
    """Merge without touching the inputs (Dask may hold them elsewhere); same arithmetic as in place."""
    return copy.deepcopy(left).merge(right)


def _finish(plan: StreamPlan, pass_index: int, state: object, merged: object) -> object:
    return plan.finish(pass_index, state, merged)


def score_models(features_by_model: Mapping[str, Any], target: object, metric: str, *, scheduler: object,
                 source_probs_by_model: Mapping[str, Any] | None = None, target_kind: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, **options) -> dict[str, ScoreResult]:
    """Score every model of a pool with a per-model metric on Dask.

    Streamable metrics: one task per (model, chunk), a tree reduction and the solve (scores equal
    the in-memory ones to ~1e-12). Other metrics: one task per model running the in-memory metric.
    """
    from emms.metrics import get_metric, score
    from emms.streaming import STREAM_METHODS, chunk_bounds, make_plan

    info = get_metric(metric)
    if info.pool_relative:
        raise InputError(f"metric: {metric!r} is pool-relative; it is scored over the whole pool in one process")
    probs = source_probs_by_model or {}
    if info.name in STREAM_METHODS:
        plans = {m: make_plan(f, target, metric, source_probs=probs.get(m), target_kind=target_kind, **options)
                 for m, f in features_by_model.items()}
        return run_plans(plans, {m: chunk_bounds(p.n_rows, chunk_rows) for m, p in plans.items()}, scheduler)
    jobs = {m: (f, probs.get(m)) for m, f in features_by_model.items()}
    scores = map_models(lambda job: score(job[0], target, metric, source_probs=job[1], target_kind=target_kind,
                                          **options), jobs, scheduler)
    return {m: ScoreResult(float(s)) for m, s in scores.items()}
