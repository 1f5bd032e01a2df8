"""rank(): data -> features -> F-labels -> scores -> Ranking.

The one place where the adapters (datasets, candidate models, text encoders, the store) meet the
metrics. Each stage is timed; every metric sees exactly the same frozen features.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emms._io import atomic_write_text
from emms.errors import InputError
from emms.metrics import get_metric, score_pool
from emms.metrics.emms import EMMS

DEFAULT_METRICS = ("emms",)
# Metrics whose point is the F-labels: they are given the label embeddings even when the task also
# has a native target.
_FLABEL_FIRST = frozenset({"emms", "logme_flabels"})
ProgressCallback = Callable[[str, str, int, int], None]
"""progress(stage, item, done, total): called as stages advance (the CLI draws bars from it)."""


@dataclass
class Ranking:
    """The result of :func:`rank`.

    ``table`` has one row per (model, metric): ``model, metric, score, rank, seconds`` and, for
    EMMS, ``weights`` (the simplex weight of each foundation encoder). ``rank`` is 1 for the best
    model of a metric. ``timings`` has one row per stage (and model where it applies).
    ``correlations`` is set when a ground truth was given.
    """

    table: pd.DataFrame
    timings: pd.DataFrame
    meta: dict = field(default_factory=dict)
    truth: dict[str, float] | None = None
    correlations: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.table["metric"]))

    def best(self, metric: str | None = None) -> str:
        """The top-ranked model of ``metric`` (default: the first metric)."""
        metric = metric or self.metrics[0]
        rows = self.table[self.table["metric"] == metric]
        return str(rows.sort_values("rank").iloc[0]["model"])

    def records(self) -> list[dict]:
        """The table as a list of JSON-ready dicts, sorted by metric order then rank."""
        out = []
        for row in self.table.itertuples(index=False):
            rec = {"model": row.model, "metric": row.metric, "score": _json_float(row.score),
                   "rank": int(row.rank), "seconds": round(float(row.seconds), 6)}
            if isinstance(row.weights, dict):
                rec["weights"] = {k: _json_float(v) for k, v in row.weights.items()}
            out.append(rec)
        return out

    def to_dict(self) -> dict:
        """Everything as JSON-ready values."""
        doc = {"meta": self.meta, "results": self.records(),
               "timings": [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                           for r in self.timings.to_dict("records")],
               "notes": list(self.notes)}
        if self.correlations is not None:
            doc["correlations"] = [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in self.correlations.to_dict("records")]
        return doc

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (and write it atomically to ``path`` if given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """The ranking table as CSV text (weights flattened to ``weight:<encoder>`` columns)."""
        flat = self.table.drop(columns=["weights"]).copy()
        for i, w in enumerate(self.table["weights"]):
            if isinstance(w, dict):
                for enc, val in w.items():
                    flat.loc[flat.index[i], f"weight:{enc}"] = val
        text = flat.to_csv(index=False)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def to_html(self, path: str | Path | None = None) -> str:
        """A self-contained HTML report (see :mod:`emms.report`)."""
        from emms.report import render_html

        text = render_html(self)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text


def rank(data, models: Sequence, task: str | None = None, *, encoders: str | Sequence[str] = "offline",
         metrics: Sequence[str] = DEFAULT_METRICS, max_samples: int | None = None, seed: int = 0,
         cache: str | Path | None = None, device: str = "cpu", batch_size: int = 64,
         image_size: int | None = None, truth: dict[str, float] | None = None,
         metric_options: dict[str, dict] | None = None, progress: ProgressCallback | None = None,
         scheduler: object = None) -> Ranking:
    """Rank candidate ``models`` on ``data`` by every metric in ``metrics``.

    Args:
        data: a :class:`emms.data.TaskData` or a dataset source for :func:`emms.data.load_dataset`
            (``builtin:fashion-mnist``, an image folder, a CSV/JSONL/Parquet manifest, ...).
        models: model specs (``builtin:mnv2_imagenet``, ``hf:ID``, ``st:ID``, ``file:X.npy``, ...)
            or ready feature extractors (objects with ``identity``, ``modality``, ``extract``).
        task: the task kind; inferred from the data when omitted.
        encoders: foundation text encoders for the F-labels: a named set (``offline``, ``paper``)
            or a list of encoder names.
        metrics: registered metric names; pool-relative ones are scored over the whole pool.
        device: where the models and text encoders run (``cpu``, ``cuda``, ``cuda:N``, ``mps``); on a
            GPU, EMMS's statistics and eigen-solve run there too (:mod:`emms.backend`, float64),
            except with ``solver="official"``, which is numpy only.
        image_size: input resolution for the packaged backbones (default: each one's native size).
        truth: ``{model: fine-tuned performance}``; adds rank correlations per metric.
        metric_options: ``{metric: {option: value}}`` passed through to the metric.
        scheduler: None (default: extract and score in this process), ``"local"`` (a Dask
            LocalCluster for the call) or a Dask scheduler address: extraction runs on Dask as one
            task per (model, chunk of rows) writing the store's resumable chunks (the cache directory
            must be shared with the workers), then per-model metrics are scored there, streamable ones
            as one task per (model, chunk) of statistics and a tree reduction (see :mod:`emms.parallel`).
            Features and scores equal the in-process ones.
    """
    from emms.data import TaskData, load_dataset
    from emms.labels import NATIVE_TARGET_KINDS, embed_f_labels, native_target
    from emms.store import Store

    metric_options = metric_options or {}
    infos = [get_metric(m) for m in metrics]
    if not infos:
        raise InputError("metrics: expected at least one metric name")
    if not models:
        raise InputError("models: expected at least one model")
    notify = progress or (lambda *_: None)
    timings: list[dict] = []
    store = Store(cache)

    t0 = time.perf_counter()
    task_data = data if isinstance(data, TaskData) else load_dataset(data, task=task, max_samples=max_samples, seed=seed)
    if task is not None and task != task_data.task:
        raise InputError(f"task: the data holds a {task_data.task!r} task, not {task!r}")
    timings.append({"stage": "load data", "model": "", "seconds": time.perf_counter() - t0})

    extractors, sources = _load_extractors(models, device=device, image_size=image_size)
    _check_modality(extractors, task_data)
    need_probs = any(info.needs_source_probs for info in infos)
    with _dask_target(scheduler) as target:
        features, source_probs = _extract_all(extractors, sources, task_data, store, batch_size=batch_size,
                                              need_probs=need_probs, notify=notify, timings=timings, scheduler=target)
        targets, notes, encoder_labels = {}, [], []
        if any("flabels" in info.targets for info in infos):
            t0 = time.perf_counter()
            flabels = embed_f_labels(task_data.task, task_data.labels, task_data.class_names, encoders=encoders,
                                     store=store, device=device,
                                     progress=lambda done, total: notify("embed labels", "encoders", done, total))
            targets["flabels"] = flabels
            encoder_labels = _encoder_labels(encoders, flabels.encoder_ids)
            timings.append({"stage": "embed labels", "model": "", "seconds": time.perf_counter() - t0})
        native_kind = NATIVE_TARGET_KINDS.get(task_data.task)
        if native_kind is not None:
            targets[native_kind] = native_target(task_data.task, task_data.labels, task_data.class_names)

        rows = []
        for i, info in enumerate(infos):
            kind = _target_kind_for(info, targets)
            if kind is None:
                notes.append(f"{info.name}: skipped — it accepts {sorted(info.targets)} targets and a "
                             f"{task_data.task!r} task provides {sorted(targets) or 'none'}")
                continue
            notify("score", info.name, i, len(infos))
            model_features = features
            if info.needs_source_probs:
                missing = [m for m in features if m not in source_probs]
                if len(missing) == len(features):
                    notes.append(f"{info.name}: skipped — needs source-head probabilities and no model has a source head")
                    continue
                if missing:
                    notes.append(f"{info.name}: scored on the models with a source head only; "
                                 f"{', '.join(missing)} have none")
                    model_features = {m: f for m, f in features.items() if m in source_probs}
            if kind == "flabels" and not np.array_equal(targets[kind].rows, np.arange(len(task_data.labels))):
                # e.g. captioning with one F-label per image: score on the rows the F-labels describe
                model_features = {m: f[targets[kind].rows] for m, f in model_features.items()}
            rows.extend(_score_metric(info, model_features, targets[kind], source_probs, metric_options.get(info.name, {}),
                                      encoder_labels, None if info.pool_relative else target, device=device))
    notify("score", "", len(infos), len(infos))
    if not rows:
        raise InputError(f"metrics: none of {list(metrics)} applies to a {task_data.task!r} task; " + "; ".join(notes))

    table = _with_ranks(pd.DataFrame(rows))
    meta = {"data": task_data.name, "task": task_data.task, "n_samples": int(len(task_data.labels)),
            "models": list(features), "metrics": [r for r in dict.fromkeys(table["metric"])],
            "encoders": encoder_labels if "flabels" in targets else [],
            "encoder_ids": list(targets["flabels"].encoder_ids) if "flabels" in targets else [],
            "feature_dims": {m: int(f.shape[1]) for m, f in features.items()}, "seed": seed}
    result = Ranking(table=table, timings=pd.DataFrame(timings), meta=meta, notes=notes)
    if truth is not None:
        result.truth = _check_truth(truth, list(features))
        result.correlations = correlations_table(result.table, result.truth)
    return result


def correlations_table(table: pd.DataFrame, truth: dict[str, float]) -> pd.DataFrame:
    """Per metric: weighted Kendall tau (both pinned variants), Kendall tau, Pearson, top-1 hit."""
    from emms.evaluate import kendall_tau, pearson, top1_hit, weighted_tau

    out = []
    for metric, rows in table.groupby("metric", sort=False):
        scores = rows["score"].to_numpy(float)
        values = np.array([truth[m] for m in rows["model"]], dtype=float)
        out.append({"metric": metric,
                    "weighted_tau": weighted_tau(scores, values, variant="symmetric"),
                    "weighted_tau_truth": weighted_tau(scores, values, variant="truth_weighted"),
                    "kendall_tau": kendall_tau(scores, values), "pearson": pearson(scores, values),
                    "top1_hit": bool(top1_hit(scores, values))})
    return pd.DataFrame(out)


def _load_extractors(models: Sequence, *, device: str, image_size: int | None) -> tuple[dict, dict]:
    """``{name: extractor}`` and ``{name: ExtractorSpec or None}`` (how Dask workers load it; None: an object)."""
    from emms.parallel import ExtractorSpec

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


def _check_modality(extractors: dict, task_data) -> None:
    for name, extractor in extractors.items():
        modality = getattr(extractor, "modality", None)
        if modality not in (None, "any", task_data.modality):
            raise InputError(f"models: {name!r} takes {modality} inputs but the data {task_data.name!r} holds {task_data.modality}")


@contextlib.contextmanager
def _dask_target(scheduler: object) -> Iterator[object]:
    """None without a scheduler; else one Dask client (or local scheduler name) for the whole call."""
    if scheduler is None:
        yield None
        return
    from emms.parallel import dask_client

    with dask_client(scheduler) as target:
        yield target


def _extract_all(extractors: dict, sources: dict, task_data, store, *, batch_size: int, need_probs: bool,
                 notify: ProgressCallback, timings: list[dict], scheduler: object) -> tuple[dict, dict]:
    """Features (and source probabilities where needed) of every model, through the store.

    With a ``scheduler`` the store is first filled on Dask, one task per (model, chunk)
    (:func:`emms.parallel.extract_on_dask`); the in-process pass then reads the entries back.
    """
    with_probs = {name: need_probs and hasattr(e, "extract_with_source_probs") for name, e in extractors.items()}
    dask_seconds, on_dask = 0.0, []
    if scheduler is not None:
        from emms.parallel import ExtractionJob, extract_on_dask

        t0 = time.perf_counter()
        total, done = _extract_total(task_data), dict.fromkeys(extractors, 0)

        def advance(name: str, n: int) -> None:
            done[name] += n
            notify("extract features", name, done[name], total)

        jobs = {name: ExtractionJob(e, sources[name], with_probs[name]) for name, e in extractors.items()}
        on_dask = extract_on_dask(jobs, task_data, store, scheduler=scheduler, batch_size=batch_size, progress=advance)
        dask_seconds = (time.perf_counter() - t0) / max(len(on_dask), 1)  # wall time shared out over the models
    features, source_probs = {}, {}
    for name, extractor in extractors.items():
        t0 = time.perf_counter()
        quiet = (lambda *_: None) if name in on_dask else notify  # already reported per chunk
        extracted = _extract(extractor, task_data, store, batch_size, name, quiet, with_probs[name])
        if with_probs[name]:
            features[name], source_probs[name] = extracted
        else:
            features[name] = extracted
        seconds = time.perf_counter() - t0 + (dask_seconds if name in on_dask else 0.0)
        timings.append({"stage": "extract features", "model": name, "seconds": seconds})
    return features, source_probs


def _extract_total(task_data) -> int:
    return len(task_data.labels) if task_data.task != "captioning" else len(task_data.inputs)


def _extract(extractor, task_data, store, batch_size: int, name: str, notify: ProgressCallback, with_probs: bool):
    """Features (N, D), or (features, source probabilities) from one pass when ``with_probs``."""
    from emms.extract import extract_features, extract_features_and_source_probs

    total = _extract_total(task_data)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        notify("extract features", name, done[0], total)

    extract = extract_features_and_source_probs if with_probs else extract_features
    return extract(extractor, task_data, store=store, batch_size=batch_size, progress=advance)


def _target_kind_for(info, targets: dict) -> str | None:
    if "flabels" in targets and "flabels" in info.targets and (info.name in _FLABEL_FIRST or not (info.targets & set(targets) - {"flabels"})):
        return "flabels"
    for kind in ("classes", "multilabel", "real"):
        if kind in targets and kind in info.targets:
            return kind
    return None


def _score_metric(info, features: dict, target, source_probs: dict, options: dict, encoder_labels: list[str],
                  scheduler: object = None, *, device: str = "cpu") -> list[dict]:
    target_arrays = getattr(target, "arrays", target)
    if scheduler is not None:  # on Dask (emms.parallel); seconds: the wall time shared out over the models
        from emms.parallel import score_models

        t0 = time.perf_counter()
        probs = {m: source_probs[m] for m in features} if info.needs_source_probs else None
        results = score_models(features, target_arrays, info.name, scheduler=scheduler, source_probs_by_model=probs,
                               **options)
        seconds = (time.perf_counter() - t0) / len(results)
        return [{"model": m, "metric": info.name, "score": r.score, "seconds": seconds,
                 "weights": None if r.weights is None else dict(zip(encoder_labels, map(float, r.weights)))}
                for m, r in results.items()]
    rows = []
    if info.name == "emms":
        on_gpu = str(device) != "cpu" and options.get("solver") != "official"
        for model, feats in features.items():
            t0 = time.perf_counter()
            with _naming(model, info.name):
                if on_gpu:
                    from emms.backend import emms_fit_torch

                    est = emms_fit_torch(feats, target_arrays, device=device, **options)
                else:
                    est = EMMS(**options).fit(feats, target_arrays)
            weights = dict(zip(encoder_labels, (float(w) for w in est.weights_)))
            rows.append({"model": model, "metric": info.name, "score": float(est.score_),
                         "seconds": time.perf_counter() - t0, "weights": weights})
        return rows
    if info.pool_relative:
        t0 = time.perf_counter()
        scores = score_pool(features, target_arrays, info.name, **options)
        seconds = (time.perf_counter() - t0) / len(scores)
        return [{"model": m, "metric": info.name, "score": s, "seconds": seconds, "weights": None}
                for m, s in scores.items()]
    for model, feats in features.items():
        t0 = time.perf_counter()
        probs = {model: source_probs[model]} if info.needs_source_probs else None
        with _naming(model, info.name):
            value = score_pool({model: feats}, target_arrays, info.name, source_probs_by_model=probs, **options)[model]
        rows.append({"model": model, "metric": info.name, "score": value,
                     "seconds": time.perf_counter() - t0, "weights": None})
    return rows


@contextlib.contextmanager
def _naming(model: str, metric: str) -> Iterator[None]:
    """Say which model a metric rejected (e.g. its features are degenerate)."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"models: {metric} cannot score {model!r}: {exc}") from None


def _encoder_labels(encoders, encoder_ids: list[str]) -> list[str]:
    """Short display names of the encoders (the names the user gave, else their identities)."""
    from emms.embedders import encoder_names

    names = encoder_names(encoders) if isinstance(encoders, str) or all(isinstance(e, str) for e in encoders) else []
    return names if len(names) == len(encoder_ids) else list(encoder_ids)


def _with_ranks(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["rank"] = table.groupby("metric", sort=False)["score"].rank(ascending=False, method="min").astype(int)
    order = {m: i for i, m in enumerate(dict.fromkeys(table["metric"]))}
    table["_order"] = table["metric"].map(order)
    table = table.sort_values(["_order", "rank", "model"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return table[["model", "metric", "score", "rank", "seconds", "weights"]]


def _check_truth(truth: dict[str, float], models: list[str]) -> dict[str, float]:
    missing = [m for m in models if m not in truth]
    if missing:
        raise InputError(f"truth: no fine-tuned value for model(s) {', '.join(missing)}; it has {', '.join(truth) or 'none'}")
    values = {m: float(truth[m]) for m in models}
    if not all(np.isfinite(list(values.values()))):
        raise InputError("truth: values must be finite numbers")
    if len(models) < 2:
        raise InputError("truth: rank correlations need at least 2 models")
    return values


def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
