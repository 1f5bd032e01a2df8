"""rank(): data -> features -> F-labels -> scores -> Ranking.

The one place where the adapters (datasets, candidate models, text encoders, the store) meet the
metrics. Each stage is timed; every metric sees exactly the same frozen features.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from emms._io import atomic_write_text
from emms.errors import EmmsWarning, InputError
from emms.metrics import get_metric, score_pool
from emms.metrics.registry import blas_limit
from emms.metrics.emms import EMMS

if TYPE_CHECKING:
    from emms.metrics.registry import MetricInfo
    from emms.models.layers import LayerPlan

DEFAULT_METRICS = ("emms",)
DEFAULT_RESAMPLES = 10
#: Each resample scores a random half of the rows without replacement: for a score that behaves
#: like an average over samples, the spread of half-sample scores around their mean matches the
#: sampling spread of the full-sample score (variance s^2 (1/m - 1/N) = s^2 / N at m = N / 2).
RESAMPLE_FRACTION = 0.5
# F-label warnings about constant embedding columns describe the text encoders, not the user's data.
_OWN_FLABEL_WARNING = r"f_labels\[\d+\]: ignored \d+ constant column"
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
    ``correlations`` is set when a ground truth was given. ``resampled`` has one row per (resample,
    model): the first metric's score on a random half of the samples (columns ``resample, model,
    score``); it measures how stable the top pick is (:mod:`emms.answer`). ``selection`` is the
    ``to_dict()`` of a fine-tuning race over these models, when one ran.
    """

    table: pd.DataFrame
    timings: pd.DataFrame
    meta: dict = field(default_factory=dict)
    truth: dict[str, float] | None = None
    correlations: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    resampled: pd.DataFrame | None = None
    selection: dict | None = None

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.table["metric"]))

    def best(self, metric: str | None = None) -> str:
        """The top-ranked model of ``metric`` (default: the first metric)."""
        metric = metric or self.metrics[0]
        rows = self.table[self.table["metric"] == metric]
        return str(rows.sort_values("rank").iloc[0]["model"])

    def wide(self, values: str = "score") -> pd.DataFrame:
        """A model x metric table of ``values`` (``score`` or ``rank``); NaN where a metric skipped a model.

        Rows are ordered by the first metric's rank (models it skipped last); columns are the metrics
        asked for, in order (one that scored no model is a column of NaN).
        """
        if values not in ("score", "rank"):
            raise InputError(f"values: expected 'score' or 'rank', got {values!r}")
        table = self.table.pivot(index="model", columns="metric", values=values)
        first = self.table[self.table["metric"] == self.metrics[0]].sort_values("rank")["model"].tolist()
        order = first + [m for m in self.meta.get("models", table.index) if m not in first and m in table.index]
        table = table.reindex(index=order, columns=self.meta.get("metrics_asked", self.metrics))
        table.columns.name = None
        return table

    def answer(self) -> dict:
        """The recommendation, how sure it is and what the scores mean (see :func:`emms.answer.answer`)."""
        from emms.answer import answer

        return answer(self)

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
        """Everything as JSON-ready values: meta, answer, results, timings, notes (+ correlations, resampled, selection).

        This is the one result document: ``--out x.json`` writes it, ``--json`` prints it, and
        ``emms evaluate --scores`` reads it back.
        """
        doc = {"meta": self.meta, "answer": self.answer(), "results": self.records(),
               "timings": [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                           for r in self.timings.to_dict("records")],
               "notes": list(self.notes)}
        if self.correlations is not None:
            doc["correlations"] = [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in self.correlations.to_dict("records")]
        if self.resampled is not None:
            doc["resampled"] = [{"resample": int(r.resample), "model": r.model, "score": _json_float(r.score)}
                                for r in self.resampled.itertuples(index=False)]
        if self.selection is not None:
            doc["selection"] = self.selection
        return doc

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (and write it atomically to ``path`` if given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """The ranking table as CSV text (weights flattened to ``weight:<encoder>`` columns); ``emms
        evaluate --scores`` reads it."""
        flat = self.table.drop(columns=["weights"]).copy()
        for i, w in enumerate(self.table["weights"]):
            if isinstance(w, dict):
                for enc, val in w.items():
                    flat.loc[flat.index[i], f"weight:{enc}"] = val
        text = flat.to_csv(index=False)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def write(self, path: str | Path) -> None:
        """Write the result to ``path`` as JSON (``.json``) or CSV (``.csv``), by its extension."""
        writer = {".json": self.to_json, ".csv": self.to_csv}.get(Path(path).suffix.lower())
        if writer is None:
            raise InputError(f"out: expected a file name ending in .json or .csv, got {str(path)!r}")
        writer(path)

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
         image_size: int | None = None, layers: object = None, truth: Mapping[str, float] | None = None,
         metric_options: Mapping[str, Mapping] | None = None, resamples: int = DEFAULT_RESAMPLES,
         label_options: Mapping[str, object] | None = None, text_column: str | None = None,
         label_column: str | None = None, progress: ProgressCallback | None = None, scheduler: object = None) -> Ranking:
    """Rank candidate ``models`` on ``data`` by every metric in ``metrics``.

    Every argument is checked before any feature is extracted (metric names and options, the
    ground truth's model names, ``resamples``, the data, the models, and the text encoders and label
    options, by embedding the F-labels first).

    Args:
        data: a :class:`emms.data.TaskData`, an in-memory ``datasets.Dataset`` or pandas DataFrame
            (columns as in a manifest, see :func:`emms.data.from_table`), or a dataset source for
            :func:`emms.data.load_dataset` (``builtin:fashion-mnist``, an image folder, a
            CSV/JSONL/Parquet manifest, ...).
        models: model specs (``builtin:mnv2_imagenet``, ``hf:ID``, ``st:ID``, ``file:X.npy``, ...)
            or ready feature extractors (objects with ``identity``, ``modality``, ``extract``).
        task: the task kind; inferred from the data when omitted.
        encoders: foundation text encoders for the F-labels: a named set (``offline``, ``paper``)
            or a list of encoder names.
        metrics: registered metric names; pool-relative ones are scored over the whole pool. A
            metric that cannot score a model (e.g. kNN with k above a class size) leaves that cell
            empty with a note; the other metrics are unaffected.
        device: where the models and text encoders run (``cpu``, ``cuda``, ``cuda:N``, ``mps``); on a
            GPU, EMMS's statistics and eigen-solve run there too (:mod:`emms.compute.backend`, float64),
            except with ``solver="official"``, which is numpy only.
        image_size: input resolution for the packaged backbones (default: each one's native size).
        layers: which layers of each model to score (:mod:`emms.models.layers`): ``"best"`` (the
            default, None: each layer scored, the best kept per model and metric;
            ``meta["layer_chosen"]`` says which; with a ``scheduler`` the default is ``"last"``,
            because layer-wise extraction runs in this process), ``"last"`` (the model's own
            features), ``"mean"`` (the mean of the pooled layers),
            ``"all"`` or layer indices such as ``"3,-2"`` (each layer its own candidate
            ``MODEL#layerK``; one index replaces the features). Extracted in this process, one
            forward pass per batch for all layers, cached per layer.
        truth: ``{model: fine-tuned performance}``; adds rank correlations per metric. Names may
            omit the ``builtin:`` prefix; entries for models not ranked are ignored.
        metric_options: ``{metric: {option: value}}`` passed through to the metric (its keyword
            options, e.g. ``{"emms": {"score": "in_sample"}, "knn": {"k": 3}}``).
        label_options: how labels are written as F-label texts, per task (:func:`emms.flabels.f_label_texts`),
            e.g. ``{"template": ["a photo of a {}.", "a {} product photo."]}`` for class names.
        text_column, label_column: the data's input / label column when it is not named ``text`` /
            ``label`` (tables and Hugging Face datasets; see :func:`emms.data.column_overrides`).
        resamples: how many random half-samples of the data the first metric is re-scored on, to
            tell how often each model comes out best (``Ranking.resampled``, :mod:`emms.answer`);
            0 skips it. Costs about ``resamples`` times that metric's scoring at half the rows.
        scheduler: None (default: extract and score in this process), ``"local"`` (a Dask
            LocalCluster for the call) or a Dask scheduler address: extraction runs on Dask as one
            task per (model, chunk of rows) writing the store's resumable chunks (the cache directory
            must be shared with the workers), then per-model metrics are scored there, streamable ones
            as one task per (model, chunk) of statistics and a tree reduction (see :mod:`emms.compute.parallel`).
            Features and scores equal the in-process ones.
    """
    from emms.data import as_task_data
    from emms.evaluate.summary import match_truth, model_key
    from emms.compute.extract import extract_layer_choice
    from emms.flabels import NATIVE_TARGET_KINDS, embed_f_labels, native_target
    from emms.models.layers import check_layer_choice, collapse_resampled, collapse_rows, layer_meta
    from emms.compute.store import Store

    metric_options = dict(metric_options or {})
    infos = check_metrics(metrics, metric_options)
    resamples = _check_resamples(resamples)
    # Layer-wise extraction runs in this process: on Dask the default keeps the model's own features.
    layer_choice = check_layer_choice("last" if layers is None and scheduler is not None else layers,
                                      with_truth=truth is not None)
    if not models:
        raise InputError("models: expected at least one model")
    if truth is not None and all(isinstance(m, str) for m in models):
        match_truth(truth, list(models))  # fail before anything is loaded
    notify = progress or (lambda *_: None)
    timings: list[dict] = []
    store = Store(cache)

    t0 = time.perf_counter()
    task_data = as_task_data(data, task=task, max_samples=max_samples, seed=seed, text_column=text_column,
                             label_column=label_column)
    timings.append({"stage": "load data", "model": "", "seconds": time.perf_counter() - t0})

    from emms.models import parameter_count

    extractors, sources = load_extractors(models, device=device, image_size=image_size)
    truth_values = match_truth(truth, list(extractors)) if truth is not None else None
    _check_modality(extractors, task_data)
    n_params = {name: parameter_count(e) for name, e in extractors.items()}
    for info in infos:  # the size prior reads each model's count (emms.metrics.size)
        if info.needs_n_params:
            metric_options[info.name] = {**metric_options.get(info.name, {}), "n_params": n_params}
    targets, notes, encoder_labels = {}, [], []
    if any("flabels" in info.targets for info in infos):  # before extraction: a bad encoder or option fails fast
        t0 = time.perf_counter()
        flabels = embed_f_labels(task_data.task, task_data.labels, task_data.class_names, encoders=encoders,
                                 store=store, device=device,
                                 progress=lambda done, total: notify("embed labels", "", done, total),
                                 **dict(label_options or {}))
        targets["flabels"] = flabels
        encoder_labels = _encoder_labels(encoders, flabels.encoder_ids)
        timings.append({"stage": "embed labels", "model": "", "seconds": time.perf_counter() - t0})
    native_kind = NATIVE_TARGET_KINDS.get(task_data.task)
    if native_kind is not None:
        targets[native_kind] = native_target(task_data.task, task_data.labels, task_data.class_names)
    with _dask_target(scheduler) as target:
        plan: LayerPlan | None = None
        if layer_choice == "last":
            features, source_probs = _extract_all(extractors, sources, task_data, store, batch_size=batch_size,
                                                  notify=notify, timings=timings, scheduler=target)
        else:
            # source probabilities from the same pass whenever there is a head: one cache whatever the metrics
            with_probs = {name: has_source_head(e) for name, e in extractors.items()}
            features, source_probs, chosen = extract_layer_choice(
                extractors, task_data, layer_choice, store, batch_size, with_probs=with_probs, timings=timings,
                progress=lambda name, done, total: notify("extract features", name, done, total))
            plan = cast("LayerPlan", chosen)
            for info in infos:  # a layer entry (MODEL#layerK) has its model's parameter count
                if info.needs_n_params:
                    by_entry = {entry: n_params[model] for entry, (model, _) in plan.scored.items()}
                    metric_options[info.name] = {**metric_options[info.name], "n_params": by_entry}
        rows, first = [], None
        for i, info in enumerate(infos):
            kind = _target_kind_for(info, targets)
            if kind is None:
                notes.append(f"{info.name}: skipped — it accepts {sorted(info.targets)} targets and a "
                             f"{task_data.task!r} task provides {sorted(targets) or 'none'}")
                continue
            notify("score", info.name, i, len(infos))
            model_features, probs = features, source_probs
            if info.needs_source_probs:
                missing = [m for m in features if m not in source_probs]
                if len(missing) == len(features):
                    notes.append(f"{info.name}: skipped — needs source-head probabilities and no model has a source head")
                    continue
                if missing:
                    without = dict.fromkeys(plan.scored[m][0] if plan is not None else m for m in missing)
                    notes.append(f"{info.name}: scored on the models with a source head only; "
                                 f"{', '.join(without)} have none")
                    model_features = {m: f for m, f in features.items() if m in source_probs}
            scoring_rows = getattr(targets[kind], "rows", None) if kind == "flabels" else None
            if scoring_rows is not None and not np.array_equal(scoring_rows, np.arange(len(task_data.labels))):
                # e.g. captioning with one F-label per image: score on the rows the F-labels describe
                model_features = {m: f[scoring_rows] for m, f in model_features.items()}
                probs = {m: p[scoring_rows] for m, p in probs.items()}
            job = _ScoringJob(info, model_features, getattr(targets[kind], "arrays", targets[kind]),
                              probs if info.needs_source_probs else {}, dict(metric_options.get(info.name, {})),
                              encoder_labels, device, own_flabels=kind == "flabels")
            scored = job.run(notes, None if info.pool_relative else target)
            rows.extend(scored)
            if first is None and scored:
                first = job
    notify("score", "", len(infos), len(infos))
    if plan is not None:
        rows, per_layer = collapse_rows(rows, plan)
    if not rows:
        raise InputError(f"metrics: none of {list(metrics)} could score a model on a {task_data.task!r} task; "
                         + "; ".join(notes))

    resampled = None
    if resamples and first is not None:
        t0 = time.perf_counter()
        strata = targets.get("classes")
        resampled = first.resample(resamples, seed=seed, strata=strata if strata is not None and
                                   len(strata) == _n_rows(first.features) else None, notify=notify)
        timings.append({"stage": f"resample {first.info.name}", "model": "", "seconds": time.perf_counter() - t0})
        if plan is not None:
            resampled = collapse_resampled(resampled, plan)

    table = _with_ranks(pd.DataFrame(rows))
    meta = {"data": task_data.name, "task": task_data.task, "n_samples": int(len(task_data.labels)),
            "models": list(features), "metrics": [r for r in dict.fromkeys(table["metric"])],
            "metrics_asked": [info.name for info in infos],
            "encoders": encoder_labels if "flabels" in targets else [],
            "encoder_ids": list(targets["flabels"].encoder_ids) if "flabels" in targets else [],
            "feature_dims": {m: int(f.shape[1]) for m, f in features.items()}, "seed": seed,
            "resamples": resamples if resampled is not None else 0, "resample_fraction": RESAMPLE_FRACTION}
    if plan is not None:
        meta.update(layer_meta(plan, rows, per_layer))
    meta["n_params"] = n_params
    result = Ranking(table=table, timings=pd.DataFrame(timings), meta=meta, notes=notes, resampled=resampled)
    if truth_values is not None:
        result.truth = truth_values
        result.correlations = correlations_table(result.table, result.truth)
        ranked = {model_key(m) for m in truth_values}
        unused = [str(name) for name in (truth or {}) if model_key(name) not in ranked]
        if unused:
            notes.append(f"truth rows for models not ranked are ignored: {', '.join(unused)}")
    return result


def check_metrics(metrics: Sequence[str] | str, metric_options: Mapping[str, Mapping] | None = None) -> list:
    """The registry entries of ``metrics`` (unique, known) after checking ``metric_options`` against them.

    ``metric_options`` must name metrics among ``metrics`` and only their keyword options.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    infos = [get_metric(m) for m in names]
    if not infos:
        raise InputError("metrics: expected at least one metric name")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise InputError(f"metrics: {', '.join(twice)} listed twice")
    by_name = {info.name: info for info in infos}
    for name, options in (metric_options or {}).items():
        if name not in by_name:
            raise InputError(f"metric_options: {name!r} is not one of the metrics asked for ({', '.join(by_name)})")
        if not isinstance(options, Mapping):
            raise InputError(f"metric_options: expected {{option: value}} for {name!r}, got {options!r}")
        accepted = metric_option_names(by_name[name])
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(f"metric_options: {name} does not take {', '.join(unknown)}; "
                             f"it takes {', '.join(accepted) or 'no options'}")
    return infos


def metric_option_names(info) -> list[str]:
    """The keyword options a user may pass to ``info``'s metric (the data arguments excluded)."""
    parameters = inspect.signature(info.function).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in ("source_probs", "target_kind")]


def correlations_table(table: pd.DataFrame, truth: Mapping[str, float]) -> pd.DataFrame:
    """Per metric, over the models it scored: ``n_models``, weighted Kendall tau (both pinned
    variants), Kendall tau, Pearson and top-1 hit. With fewer than
    :data:`emms.evaluate.correlations.MIN_MODELS` models the correlations are NaN (too few to mean
    anything: with 2 models each of them is +-1)."""
    from emms.evaluate import kendall_tau, pearson, top1_hit, weighted_tau
    from emms.evaluate.correlations import MIN_MODELS

    out = []
    for metric, rows in table.groupby("metric", sort=False):
        scores = rows["score"].to_numpy(float)
        values = np.array([truth[m] for m in rows["model"]], dtype=float)
        enough, nan = len(scores) >= MIN_MODELS, float("nan")
        out.append({"metric": metric, "n_models": len(scores),
                    "weighted_tau": weighted_tau(scores, values, variant="symmetric") if enough else nan,
                    "weighted_tau_truth": weighted_tau(scores, values, variant="truth_weighted") if enough else nan,
                    "kendall_tau": kendall_tau(scores, values) if enough else nan,
                    "pearson": pearson(scores, values) if enough else nan,
                    "top1_hit": bool(top1_hit(scores, values)) if len(scores) >= 2 else None})
    return pd.DataFrame(out)


@dataclass
class _ScoringJob:
    """One metric over the pool, with its inputs aligned row by row (so it can be re-run on a subset)."""

    info: MetricInfo
    features: dict
    target: np.ndarray | list[np.ndarray]  # a native target, or K F-label arrays
    probs: dict
    options: dict
    encoder_labels: list[str]
    device: str
    own_flabels: bool = False

    def run(self, notes: list[str], scheduler: object = None, rows: np.ndarray | None = None) -> list[dict]:
        """Score every model (on ``rows`` only, when given); a model the metric cannot score is left
        out, with a note in ``notes`` for the full-data run."""
        features, target, probs = self.features, self.target, self.probs
        if rows is not None:
            features = {m: f[rows] for m, f in features.items()}
            target = [a[rows] for a in target] if isinstance(target, list) else target[rows]
            probs = {m: p[rows] for m, p in probs.items()}
        failures: list[tuple[str, str]] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self.own_flabels:
                warnings.filterwarnings("ignore", message=_OWN_FLABEL_WARNING, category=EmmsWarning)
            scored = _score_metric(self.info, features, target, probs, self.options, self.encoder_labels, scheduler,
                                   device=self.device, failures=failures)
        if rows is None:  # each distinct warning once, at the caller of rank (a resample repeats the full run's)
            for category, message in dict.fromkeys((w.category, str(w.message)) for w in caught):
                warnings.warn(message, category, stacklevel=3)
        if rows is None and failures:
            reasons = {reason for _, reason in failures}
            if len(failures) == len(self.features) and len(reasons) == 1:
                notes.append(f"{self.info.name}: cannot score any model ({reasons.pop()})")
            else:
                notes.extend(f"{self.info.name}: cannot score {model} ({reason})" for model, reason in failures)
        return scored

    def resample(self, n_resamples: int, *, seed: int, strata: np.ndarray | None,
                 notify: ProgressCallback) -> pd.DataFrame:
        """Scores on ``n_resamples`` seeded random halves of the rows (stratified by ``strata`` when given)."""
        rng = np.random.default_rng((seed, 20231))
        n = _n_rows(self.features)
        groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
        out = []
        for b in range(n_resamples):
            notify("resample", self.info.name, b, n_resamples)
            rows = np.sort(np.concatenate([rng.choice(g, int(np.ceil(RESAMPLE_FRACTION * g.size)), replace=False)
                                           for g in groups]))
            out += [{"resample": b, "model": r["model"], "score": r["score"]} for r in self.run([], rows=rows)]
        notify("resample", self.info.name, n_resamples, n_resamples)
        return pd.DataFrame(out, columns=["resample", "model", "score"])


def _n_rows(features: dict) -> int:
    return int(next(iter(features.values())).shape[0])


def _check_resamples(resamples: object) -> int:
    if isinstance(resamples, (bool, np.bool_)) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise InputError(f"resamples: expected a non-negative integer (0 skips resampling), got {resamples!r}")
    return int(resamples)


def load_extractors(models: Sequence, *, device: str, image_size: int | None) -> tuple[dict, dict]:
    """``{name: extractor}`` and ``{name: ExtractorSpec or None}`` (how Dask workers load it; None: an object).

    ``image_size`` applies to the packaged backbones (``builtin:``) only, as in :func:`rank`.
    """
    from emms.compute.parallel import ExtractorSpec

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
            raise InputError(f"models: {name!r} takes {modality} inputs but the data {task_data.name!r} "
                             f"holds {task_data.modality}")


@contextlib.contextmanager
def _dask_target(scheduler: object) -> Iterator[object]:
    """None without a scheduler; else one Dask client (or local scheduler name) for the whole call."""
    if scheduler is None:
        yield None
        return
    from emms.compute.parallel import dask_client

    with dask_client(scheduler) as target:
        yield target


def _extract_all(extractors: dict, sources: dict, task_data, store, *, batch_size: int,
                 notify: ProgressCallback, timings: list[dict], scheduler: object) -> tuple[dict, dict]:
    """Features of every model, and source probabilities of those with a source head, through the store.

    A model with a source head always gets its features and probabilities from one pass, cached as
    one entry, whichever metrics are asked: a later run with other metrics reads the same entry.
    With a ``scheduler`` the store is first filled on Dask, one task per (model, chunk)
    (:func:`emms.compute.parallel.extract_on_dask`); the in-process pass then reads the entries back.
    """
    with_probs = {name: has_source_head(e) for name, e in extractors.items()}
    dask_seconds, on_dask = 0.0, []
    if scheduler is not None:
        from emms.compute.parallel import ExtractionJob, extract_on_dask

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
        report = None if name in on_dask else (  # on Dask: already reported per chunk
            lambda done, total, name=name: notify("extract features", name, done, total))
        features[name], probs = extract_model(extractor, task_data, store, batch_size, report)
        if probs is not None:
            source_probs[name] = probs
        seconds = time.perf_counter() - t0 + (dask_seconds if name in on_dask else 0.0)
        timings.append({"stage": "extract features", "model": name, "seconds": seconds})
    return features, source_probs


def _extract_total(task_data) -> int:
    return len(task_data.labels) if task_data.task != "captioning" else len(task_data.inputs)


def has_source_head(extractor) -> bool:
    """Whether ``extractor`` gives source-head probabilities (for LEEP, NCE, ...) with its features."""
    return hasattr(extractor, "extract_with_source_probs")


def extract_model(extractor, task_data, store, batch_size: int = 64,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, D) of one model, and its source probabilities (N, C) when it has a source head
    (else None), from one pass cached as one store entry: what :func:`rank` reads, whatever its
    metrics. ``progress(done, total)`` counts rows."""
    from emms.compute.extract import extract_features, extract_features_and_source_probs

    total = _extract_total(task_data)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    if has_source_head(extractor):
        return extract_features_and_source_probs(extractor, task_data, store=store, batch_size=batch_size,
                                                 progress=advance)
    return extract_features(extractor, task_data, store=store, batch_size=batch_size, progress=advance), None


def _target_kind_for(info, targets: dict) -> str | None:
    flabels_only = not (info.targets & set(targets) - {"flabels"})
    if "flabels" in targets and "flabels" in info.targets and (info.name in _FLABEL_FIRST or flabels_only):
        return "flabels"
    for kind in ("classes", "multilabel", "real"):
        if kind in targets and kind in info.targets:
            return kind
    return None


def _score_metric(info, features: dict, target, source_probs: dict, options: dict, encoder_labels: list[str],
                  scheduler: object = None, *, device: str = "cpu",
                  failures: list[tuple[str, str]] | None = None) -> list[dict]:
    """Rows of ``info``'s scores. A model it rejects (InputError, or a score that is not a finite
    number) is left out and listed in ``failures`` as (model, reason) when that is given, else raised."""
    target_arrays = getattr(target, "arrays", target)
    if scheduler is not None:  # on Dask (emms.compute.parallel); seconds: the wall time shared out over the models
        from emms.compute.parallel import score_models

        t0 = time.perf_counter()
        probs = {m: source_probs[m] for m in features} if info.needs_source_probs else None
        try:
            results = score_models(features, target_arrays, info.name, scheduler=scheduler,
                                   source_probs_by_model=probs, **options)
        except InputError as exc:  # on Dask one model's rejection stops the metric: said for every model
            if failures is None:
                raise
            failures.extend((m, _one_line(exc)) for m in features)
            return []
        seconds = (time.perf_counter() - t0) / len(results)
        rows = [{"model": m, "metric": info.name, "score": r.score, "seconds": seconds,
                 "weights": None if r.weights is None else dict(zip(encoder_labels, map(float, r.weights)))}
                for m, r in results.items()]
        return [row for row in rows if _finite_or_noted(row, failures)]
    if info.pool_relative:
        t0 = time.perf_counter()
        try:
            scores = score_pool(features, target_arrays, info.name, **options)
        except InputError as exc:
            if failures is None:
                raise InputError(f"models: {info.name} cannot score the pool: {exc}") from None
            failures.extend((m, _one_line(exc)) for m in features)
            return []
        seconds = (time.perf_counter() - t0) / len(scores)
        rows = [{"model": m, "metric": info.name, "score": s, "seconds": seconds, "weights": None}
                for m, s in scores.items()]
        return [row for row in rows if _finite_or_noted(row, failures)]
    rows = []
    for model, feats in features.items():
        t0 = time.perf_counter()
        try:
            row = _score_one(info, model, feats, target_arrays, source_probs, options, encoder_labels, device)
        except InputError as exc:
            if failures is None:
                raise InputError(f"models: {info.name} cannot score {model!r}: {exc}") from None
            failures.append((model, _one_line(exc)))
            continue
        row["seconds"] = time.perf_counter() - t0
        if _finite_or_noted(row, failures):
            rows.append(row)
    return rows


def _score_one(info, model: str, feats, target_arrays, source_probs: dict, options: dict, encoder_labels: list[str],
               device: str) -> dict:
    """One model's row (without seconds) for a per-model metric. On a GPU device, a metric whose
    statistics accumulate on a device (its stream is ``on_device``) is scored there (:mod:`emms.compute.backend`)."""
    stream = info.stream
    if str(device) != "cpu" and stream is not None and stream.on_device and stream.accepts(options):
        from emms.compute.backend import score_on_device

        result = score_on_device(feats, target_arrays, info.name, device=device, **options)
        weights = None if result.weights is None else dict(zip(encoder_labels, map(float, result.weights)))
        return {"model": model, "metric": info.name, "score": result.score, "weights": weights}
    if info.name == "emms":  # in memory, keeping the fitted encoder weights t; BLAS threads as emms.score caps them
        with blas_limit(feats):
            est = EMMS(**options).fit(feats, target_arrays)
        weights = dict(zip(encoder_labels, (float(w) for w in est.weights_)))
        return {"model": model, "metric": info.name, "score": float(est.score_), "weights": weights}
    probs = {model: source_probs[model]} if info.needs_source_probs else None
    if info.needs_n_params:
        options = {**options, "n_params": options["n_params"].get(model)}
    value = score_pool({model: feats}, target_arrays, info.name, source_probs_by_model=probs, **options)[model]
    return {"model": model, "metric": info.name, "score": float(value), "weights": None}


def _finite_or_noted(row: dict, failures: list[tuple[str, str]] | None) -> bool:
    if np.isfinite(row["score"]):
        return True
    if failures is None:
        raise InputError(f"models: {row['metric']} gives no finite score for {row['model']!r}")
    failures.append((row["model"], "the score is not a finite number"))
    return False


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _encoder_labels(encoders, encoder_ids: list[str]) -> list[str]:
    """Short display names of the encoders (the names the user gave, else their identities)."""
    from emms.flabels import encoder_names

    names = encoder_names(encoders) if isinstance(encoders, str) or all(isinstance(e, str) for e in encoders) else []
    return names if len(names) == len(encoder_ids) else list(encoder_ids)


def _with_ranks(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["rank"] = table.groupby("metric", sort=False)["score"].rank(ascending=False, method="min").astype(int)
    order = {m: i for i, m in enumerate(dict.fromkeys(table["metric"]))}
    table["_order"] = table["metric"].map(order)
    table = table.sort_values(["_order", "rank", "model"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return table[["model", "metric", "score", "rank", "seconds", "weights"]]


def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
