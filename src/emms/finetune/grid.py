"""Ground truth by real fine-tuning: every (target, model, lr, seed) of a grid, resumable, in parallel.

The learning rate of each (target, model) is chosen by mean validation score over seeds; the ground
truth is the mean test score over seeds at that lr (:func:`aggregate_truth`). Each finished run is
written atomically to its own record ``<out_dir>/runs/<target>/<model>__lr<lr>__seed<seed>.json``
and never redone; a killed grid loses at most the runs in progress.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emms._io import atomic_write_text
from emms._validation import as_torch_device, check_positive_int, check_seed
from emms.errors import InputError, ResourceError
from emms.finetune.backbones import parse_model
from emms.finetune.data import FinetuneData
from emms.finetune.run import FinetuneProtocol, RunKey, check_lr, finetune_run, load_record, write_record

ProgressCallback = Callable[[RunKey, int, int], None]
RESULT_COLUMNS = ["target", "model", "lr", "seed", "metric", "val_score", "test_score", "final_train_loss",
                  "n_train", "n_val", "n_test", "image_size_used", "seconds", "cpu_seconds", "device"]


@dataclass
class GridResult:
    """What :func:`run_grid` did: every record of the grid, the truth table, and counts."""

    results: pd.DataFrame
    truth: pd.DataFrame
    n_trained: int
    n_reused: int
    failures: list[str] = field(default_factory=list)


def run_grid(data: Sequence[FinetuneData], models: Sequence[str], *, lrs: Sequence[float], seeds: Sequence[int],
             out_dir: str | Path, protocol: FinetuneProtocol = FinetuneProtocol(), device: str = "cpu",
             workers: int = 1, threads: int = 1, on_progress: ProgressCallback | None = None,
             on_record: Callable[[dict, bool], None] | None = None) -> GridResult:
    """Fine-tune every (target, model, lr, seed) not yet recorded under ``out_dir``; aggregate all.

    ``workers`` > 1 runs that many processes (spawned, each ``torch.set_num_threads(threads)``);
    ``workers == 1`` runs in this process (and sets its torch threads to ``threads``).
    ``on_progress(key, steps_done, steps_total)`` reports training steps; ``on_record(record, reused)``
    is called once per grid cell. A failed run is reported in ``failures`` (the others still run)
    and has no record.
    """
    keys, by_name = _grid(data, models, lrs, seeds)
    workers, threads = check_positive_int(workers, "workers"), check_positive_int(threads, "threads")
    as_torch_device(device, kinds=("cpu", "cuda"))
    records, todo = _partition(keys, by_name, Path(out_dir), protocol)
    if on_record is not None:
        for record in records:
            on_record(record, True)
    n_reused = len(records)
    failures: list[str] = []

    def finished(record: dict) -> None:
        records.append(record)
        if on_record is not None:
            on_record(record, False)

    jobs = [(by_name[key.target], key) for key in todo]
    for key, outcome in run_jobs(jobs, protocol, device=device, out_dir=out_dir, workers=workers, threads=threads,
                                 on_progress=on_progress):
        if isinstance(outcome, dict):
            finished(outcome)
        else:
            failures.append(f"{key.label()}: {outcome}")
    results = _results_table(records, keys)
    return GridResult(results=results, truth=aggregate_truth(results), n_trained=len(records) - n_reused,
                      n_reused=n_reused, failures=failures)


def plan_grid(data: Sequence[FinetuneData], models: Sequence[str], *, lrs: Sequence[float], seeds: Sequence[int],
              out_dir: str | Path, protocol: FinetuneProtocol = FinetuneProtocol()) -> tuple[list[RunKey], int]:
    """The runs :func:`run_grid` would train (not yet recorded under ``out_dir``) and how many are done."""
    keys, by_name = _grid(data, models, lrs, seeds)
    records, todo = _partition(keys, by_name, Path(out_dir), protocol)
    return todo, len(records)


def run_jobs(jobs: Sequence[tuple[FinetuneData, RunKey]], protocol: FinetuneProtocol, *, device: str,
             out_dir: str | Path, workers: int = 1, threads: int = 1, until_epoch: int | None = None,
             on_progress: ProgressCallback | None = None):
    """Run ``jobs`` (each continued from its checkpoint up to ``until_epoch``), writing each record;
    yield ``(key, record)`` as each finishes, or ``(key, error message)`` for a run that failed.

    ``workers == 1``: in this process; more: spawned processes with ``threads`` torch threads each.
    """
    if not jobs:
        return
    if workers == 1:
        _set_threads(threads)
        for data, key in jobs:
            try:
                yield key, _run_and_record(data, key, protocol, device, str(out_dir), until_epoch, on_progress)
            except (ResourceError, InputError, RuntimeError) as exc:
                yield key, str(exc)
        return
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                            initializer=_worker_init, initargs=(threads,)) as pool:
        messages = manager.Queue()
        pending = {pool.submit(_worker_run, data, key, protocol, device, str(out_dir), until_epoch, messages): key
                   for data, key in jobs}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(messages, on_progress)
            for future in done:
                key = pending.pop(future)
                try:
                    yield key, future.result()
                except (ResourceError, InputError, RuntimeError) as exc:
                    yield key, str(exc)
        _drain(messages, on_progress)


def aggregate_truth(results: pd.DataFrame) -> pd.DataFrame:
    """Per (target, model): the lr with the best mean validation score over seeds (ties: the
    smaller lr) and the mean test score over seeds at that lr.

    ``results``: columns target, model, lr, seed, val_score, test_score. Returns columns target,
    model, value (mean test score), value_std (over seeds), lr, val_score, n_seeds.
    """
    columns = ["target", "model", "value", "value_std", "lr", "val_score", "n_seeds"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    per_lr = (results.groupby(["target", "model", "lr"], sort=True)
              .agg(val_score=("val_score", "mean"), value=("test_score", "mean"),
                   value_std=("test_score", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")),
                   n_seeds=("seed", "nunique"))
              .reset_index())
    per_lr = per_lr.sort_values(["target", "model", "val_score", "lr"], ascending=[True, True, False, True])
    best = per_lr.groupby(["target", "model"], sort=True).head(1)
    return best[columns].reset_index(drop=True)


def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` as CSV to ``path`` atomically (temporary file, fsync, rename)."""
    atomic_write_text(path, table.to_csv(index=False))


def estimate_steps(data: Sequence[FinetuneData], protocol: FinetuneProtocol) -> dict[str, int]:
    """Optimisation steps of one run per target (for progress totals)."""
    return {item.name: protocol.epochs * protocol.batches_per_epoch(len(item.train[1])) for item in data}


# -- internals -------------------------------------------------------------------------------------

def _grid(data: Sequence[FinetuneData], models: Sequence[str], lrs: Sequence[float],
          seeds: Sequence[int]) -> tuple[list[RunKey], dict[str, FinetuneData]]:
    if not data:
        raise InputError("data: expected at least one target, got none")
    by_name = {}
    for item in data:
        if item.name in by_name:
            raise InputError(f"data: target name {item.name!r} appears twice")
        by_name[item.name] = item
    if not models:
        raise InputError("models: expected at least one backbone name, got none")
    for model in models:
        parse_model(model)
    lr_values = [check_lr(lr, "lrs") for lr in lrs]
    if not lr_values:
        raise InputError("lrs: expected at least one learning rate, got none")
    seed_values = [check_seed(s, "seeds") for s in seeds]
    if not seed_values:
        raise InputError("seeds: expected at least one seed, got none")
    keys = [RunKey(item.name, model, lr, seed) for item in data for model in dict.fromkeys(models)
            for lr in dict.fromkeys(lr_values) for seed in dict.fromkeys(seed_values)]
    return keys, by_name


def _partition(keys: list[RunKey], by_name: dict[str, FinetuneData], out_dir: Path,
               protocol: FinetuneProtocol) -> tuple[list[dict], list[RunKey]]:
    """Split the grid into complete records and the keys still to run (or to finish)."""
    records, todo = [], []
    for key in keys:
        record = load_record(key, out_dir, by_name[key.target].fingerprint, protocol)
        if record is None or not record["complete"]:
            todo.append(key)
        else:
            records.append(record)
    return records, todo


def _run_and_record(data: FinetuneData, key: RunKey, protocol: FinetuneProtocol, device: str, out_dir: str,
                    until_epoch: int | None, on_progress: ProgressCallback | None) -> dict:
    step_callback = None if on_progress is None else (lambda done, total: on_progress(key, done, total))
    record = finetune_run(data, key.model, key.lr, key.seed, protocol, device=device, until_epoch=until_epoch,
                          checkpoint=key.checkpoint_path(out_dir), on_step=step_callback)
    write_record(key, out_dir, record)
    return record


def _worker_init(threads: int) -> None:
    import emms.models.backbones  # noqa: F401  (import torch and the models once, outside the timed runs)

    _set_threads(threads)


def _worker_run(data: FinetuneData, key: RunKey, protocol: FinetuneProtocol, device: str, out_dir: str,
                until_epoch: int | None, messages) -> dict:  # noqa: ANN001 - a multiprocessing queue proxy
    def report(run_key: RunKey, done: int, total: int) -> None:
        if done == total or done % 5 == 0:
            messages.put((run_key, done, total))

    return _run_and_record(data, key, protocol, device, out_dir, until_epoch, report)


def _drain(messages, on_progress: ProgressCallback | None) -> None:  # noqa: ANN001
    while True:
        try:
            key, done, total = messages.get_nowait()
        except queue.Empty:
            return
        if on_progress is not None:
            on_progress(key, done, total)


def _results_table(records: list[dict], keys: list[RunKey]) -> pd.DataFrame:
    order = {(k.target, k.model, k.lr, k.seed): i for i, k in enumerate(keys)}
    rows = sorted(records, key=lambda r: order[(r["target"], r["model"], r["lr"], r["seed"])])
    return pd.DataFrame([{**{c: r.get(c) for c in RESULT_COLUMNS}, "metric": r["primary"]} for r in rows],
                        columns=RESULT_COLUMNS)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
