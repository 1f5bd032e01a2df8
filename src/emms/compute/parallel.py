"""Execution on Dask: extraction and scoring, one task per (model, chunk), a tree reduction, the solve.

``scheduler`` everywhere in the API:

* ``None`` (default): no Dask; everything runs in this process (:func:`emms.compute.plans.run_plan`).
* ``"local"``: a :class:`distributed.LocalCluster` started for the call (one thread per worker,
  dask's default number of worker processes, emms's malloc settings for extraction: see
  :func:`_fast_malloc_workers`) and closed afterwards.
* ``"synchronous"`` or ``"threads"``: dask's single-machine schedulers, no cluster.
* an address (``tcp://host:8786``, ``host:8786``): a running Dask scheduler; a
  :class:`distributed.Client` is used as it is.

**Extraction** (:func:`extract_on_dask`): one task per (model, chunk of rows) computes the chunk's
features on a worker and saves it in the store's resumable partial entry (:meth:`emms.compute.store.Store.chunk`,
the same chunk files and boundaries as in-process extraction, so a rerun or an in-process call after
a crash resumes from them); when a model's chunks are all done this process joins them into the
entry (:meth:`~emms.compute.store.Store.join_chunks`). A worker loads a model from its spec string
(:class:`ExtractorSpec`, loaded once per worker process and checked against this process's identity,
so a worker with other weights fails loudly); an extractor passed as an object is pickled to the
workers (cloudpickle) instead. Same chunks, same batches ⇒ the same float32 features as in-process
(bit-identical with the same torch threads per process; a LocalCluster's worker processes run one
thread each). Progress: per finished chunk with a distributed client, per model otherwise.

**Scoring**: the graph of a streamed metric (:class:`emms.compute.plans.StreamPlan`, running the metric's
streaming protocol, :mod:`emms.metrics.protocol`) for each model:
``chunk`` tasks read rows ``start:stop`` on the worker and return their statistics; these are merged
along the fixed binary tree of :func:`emms.compute.plans.tree_reduce` (merges copy their left input, never
mutate it); ``finish`` solves. A second pass (LEEP, official TransRate) depends on the first one's
``finish``. Because the tree and the chunk boundaries are the same as in-process, the scores are
bit-identical to :func:`emms.compute.streaming.stream_score` with ``scheduler=None``.

Shared file system: extraction workers write into the store directory and this process reads it
back, so the cache directory must be the same path on every worker (a shared file system; one
machine trivially); a chunk this process cannot see is a :class:`~emms.errors.ResourceError`, never
silently recomputed. Scoring workers must likewise be able to read ``.npy``/zarr paths; in-memory
arrays are shipped once per worker with the plan.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emms.errors import InputError, ResourceError
from emms.metrics.protocol import ScoreResult
from emms.metrics.registry import get_metric, score
from emms.compute.plans import StreamPlan, make_plan, tree_reduce
from emms.compute.sources import DEFAULT_CHUNK_ROWS, chunk_bounds

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
        with _fast_malloc_workers(), LocalCluster(threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"scheduler: cannot reach a Dask scheduler at {address} ({exc})") from None
    with client:
        yield client


def _fast_malloc_workers() -> contextlib.AbstractContextManager:
    """Worker processes started in this context get emms's malloc settings during extraction.

    distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker it spawns (to hand freed memory
    back to the OS sooner). That turns off glibc's adaptive mmap threshold, so each large tensor is
    mmapped and page-faulted afresh (``emms rank --scheduler local`` extracted 2.4x slower with it,
    BENCHMARKS.md section 8), and :mod:`emms._allocator` leaves an allocator configured through
    the environment alone. Without the variable, extraction tasks keep freed activations for the next
    batch. The thread limits (``OMP_NUM_THREADS=1``, ...) are kept.
    """
    import dask

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return dask.config.set({"distributed.nanny.pre-spawn-environ":
                            {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}})


@dataclass(frozen=True)
class ExtractorSpec:
    """How a worker loads a model: ``load_extractor(spec, device=device, **dict(options))``."""

    spec: str
    device: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()

    def load(self):
        """A freshly loaded extractor."""
        from emms.models import load_extractor

        return load_extractor(self.spec, device=self.device, **dict(self.options))


@functools.lru_cache(maxsize=4)
def _worker_extractor(spec: ExtractorSpec):
    """A worker loads each model once and reuses it for every chunk (the last 4 models stay loaded)."""
    return spec.load()


@dataclass(frozen=True)
class ExtractionJob:
    """One model to extract: the loaded ``extractor`` (its identity gives the store key), how workers
    get it (``source``: an :class:`ExtractorSpec`, or None to pickle ``extractor`` to them) and whether
    its rows carry the source-head probabilities too (:func:`emms.compute.extract.with_source_probs`)."""

    extractor: Any
    source: ExtractorSpec | None = None
    with_probs: bool = False


def extract_on_dask(jobs: Mapping[str, ExtractionJob], task_data, store, *, scheduler: object, batch_size: int = 64,
                    progress: Callable[[str, int], None] | None = None) -> list[str]:
    """Fill ``store`` with every job's features for ``task_data`` on Dask; return the models extracted there.

    One task per (model, chunk of ``CHUNK_BATCHES * batch_size`` rows) writes its chunk into the
    store; this process joins each model's chunks into its entry (see the module doc). Models whose
    entry is complete already, and extractors that are not cacheable (precomputed feature files),
    are left out: read them with :func:`emms.compute.extract.extract_features` as usual, which also reads
    the entries written here. ``progress(model, rows)`` is called as chunks finish.
    """
    import dask

    from emms.compute.extract import (check_extractor, chunk_rows_for, features_key, features_meta, with_source_probs)

    notify = progress or (lambda *_: None)
    n_rows, chunk_rows = len(task_data.inputs), chunk_rows_for(batch_size)
    bounds = store.chunk_bounds(n_rows, chunk_rows)  # the chunks in-process extraction writes too
    todo = {}  # name: (job, store key, entry meta)
    for name, job in jobs.items():
        check_extractor(job.extractor, task_data)
        extractor = with_source_probs(job.extractor) if job.with_probs else job.extractor
        key = features_key(extractor, task_data)
        if getattr(job.extractor, "cacheable", True) and not store.entry_path(key).is_dir():
            todo[name] = (job, key, features_meta(extractor, task_data))
    if not todo:
        return []
    done = dict.fromkeys(todo, 0)

    def finished(name: str, rows: int) -> None:
        done[name] += rows
        notify(name, rows)
        if done[name] == n_rows:  # the model's last chunk: join its entry here (it checks the file system is shared)
            store.join_chunks(todo[name][1], n_rows, chunk_rows, todo[name][2])

    try:
        with dask_client(scheduler) as target:
            client = None if isinstance(target, str) else target
            # each row range and each extractor object is sent to the cluster once, not once per task
            share = (lambda obj: obj) if client is None else (lambda obj: client.scatter([obj], hash=False)[0])
            rows = [share(task_data.inputs[a:b]) for a, b in bounds]
            tasks = []
            for name, (job, key, meta) in todo.items():
                source = job.source or share(job.extractor)  # meta["model"]: the identity the store key has
                tasks += [dask.delayed(_extract_chunk)(name, source, job.with_probs, meta["model"], part, store, key,
                                                       a, b, batch_size) for part, (a, b) in zip(rows, bounds)]
            if client is None:  # dask's local schedulers: no futures to follow
                for result in dask.compute(*tasks, scheduler=target):
                    finished(*result)
            else:
                from distributed import as_completed

                futures = client.compute(tasks)
                try:
                    for future in as_completed(futures):
                        finished(*future.result())
                finally:
                    client.cancel(futures)  # after an error: stop the chunks still running
    finally:
        _worker_extractor.cache_clear()  # workers that are threads of this process: free their models
    return list(todo)


def _extract_chunk(name: str, source: Any, with_probs: bool, identity: str, inputs: Any, store: Any, key: str,
                   start: int, stop: int, batch_size: int) -> tuple[str, int]:
    """On a worker: rows ``start:stop`` (``inputs``) of one model, saved in the store's partial entry."""
    from emms.compute.extract import extract_chunk, with_source_probs

    extractor = _worker_extractor(source) if isinstance(source, ExtractorSpec) else source
    extractor = with_source_probs(extractor) if with_probs else extractor
    if str(extractor.identity) != identity:
        raise ResourceError(f"models: {name!r} loads as {extractor.identity} on a Dask worker but as {identity} in "
                            "the calling process; workers need the same weights files and package versions")
    store.chunk(key, start, stop, lambda a, b: extract_chunk(extractor, inputs, a, batch_size))
    return name, stop - start


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
            if p < plan.n_passes - 1:
                state = dask.delayed(_finish)(plan_node, p, state, merged)
            else:  # the solve: its warnings come back to the caller
                state = dask.delayed(_recording_warnings)(os.getpid(), _finish, plan_node, p, state, merged)
        graph[model] = state
    with dask_client(scheduler) as target:
        (results,) = dask.compute(graph, scheduler=target)
    return {model: _reissued(result) for model, result in results.items()}


def map_models(function, items: Mapping[str, Any], scheduler: object) -> dict[str, Any]:
    """``{name: function(item)}`` with one Dask task per item (e.g. a model's whole in-memory score)."""
    import dask

    graph = {name: dask.delayed(_recording_warnings)(os.getpid(), function, item) for name, item in items.items()}
    with dask_client(scheduler) as target:
        (results,) = dask.compute(graph, scheduler=target)
    return {name: _reissued(result) for name, result in results.items()}


def _recording_warnings(caller: int, function, *args: Any) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """On a worker process: ``function(*args)`` and the warnings it raised, which the worker would
    otherwise print in Python's raw format on its own stderr; :func:`_reissued` raises them in the
    caller. In the caller's own process (threaded workers, pid ``caller``) warnings already reach
    the caller's handler, and recording them there would race with other threads."""
    if os.getpid() == caller:
        return function(*args), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args)
    return result, [(w.category, str(w.message)) for w in caught]


def _reissued(recorded: tuple[Any, list[tuple[type[Warning], str]]]) -> Any:
    """The result of :func:`_recording_warnings`, its warnings raised again here (the caller's format)."""
    result, caught = recorded
    for category, message in caught:
        warnings.warn(message, category, stacklevel=3)
    return result


def _chunk(plan: StreamPlan, pass_index: int, state: object, start: int, stop: int) -> object:
    return plan.chunk(pass_index, state, start, stop)


def _merged(left: Any, right: Any) -> Any:
    """Merge without touching the inputs (Dask may hold them elsewhere); same arithmetic as in place."""
    return copy.deepcopy(left).merge(right)


def _finish(plan: StreamPlan, pass_index: int, state: object, merged: object) -> object:
    return plan.finish(pass_index, state, merged)


def score_models(features_by_model: Mapping[str, Any], target: object, metric: str, *, scheduler: object,
                 source_probs_by_model: Mapping[str, Any] | None = None, target_kind: str | None = None,
                 chunk_rows: int | Sequence[int] = DEFAULT_CHUNK_ROWS, **options) -> dict[str, ScoreResult]:
    """Score every model of a pool with a per-model metric on Dask.

    Streamable metrics: one task per (model, chunk), a tree reduction and the solve (scores equal
    the in-memory ones to ~1e-12). Other metrics: one task per model running the in-memory metric.
    """
    info = get_metric(metric)
    if info.pool_relative:
        raise InputError(f"metric: {metric!r} is pool-relative; it is scored over the whole pool in one process")
    probs = source_probs_by_model or {}
    if info.streamable:
        plans = {m: make_plan(f, target, metric, source_probs=probs.get(m), target_kind=target_kind, **options)
                 for m, f in features_by_model.items()}
        return run_plans(plans, {m: chunk_bounds(p.n_rows, chunk_rows) for m, p in plans.items()}, scheduler)
    jobs = {m: (f, probs.get(m)) for m, f in features_by_model.items()}
    scores = map_models(lambda job: score(job[0], target, metric, source_probs=job[1], target_kind=target_kind,
                                          **options), jobs, scheduler)
    return {m: ScoreResult(float(s)) for m, s in scores.items()}
