"""rank(): data -> features -> F-labels -> scores -> :class:`~emms.pipeline.result.Ranking`.

The stages, in order: check every argument, load the data and the models, embed the F-labels
(:mod:`emms.flabels`), extract features (:mod:`emms.pipeline.extraction`), score each metric
(:mod:`emms.pipeline.scoring`), resample the first one, rank. Each stage is timed; every metric
sees exactly the same frozen features.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.pipeline.extraction import check_modality, dask_target, extract_all, has_source_head, load_extractors
from emms.pipeline.result import Ranking, with_ranks
from emms.pipeline.scoring import (RESAMPLE_FRACTION, ProgressCallback, ScoringJob, check_metrics, correlations_table,
                                   n_rows, target_kind_for)

if TYPE_CHECKING:
    from emms.models.layers import LayerPlan

DEFAULT_METRICS = ("emms",)
DEFAULT_RESAMPLES = 10


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
    check_modality(extractors, task_data)
    n_params = {name: parameter_count(e) for name, e in extractors.items()}
    for info in infos:  # the size prior reads each model's count (emms.metrics.size)
        if info.needs_n_params:
            metric_options[info.name] = {**metric_options.get(info.name, {}), "n_params": n_params}
    targets: dict[str, Any] = {}  # target kind -> FLabels or a native target array
    notes: list[str] = []
    encoder_labels: list[str] = []
    if any("flabels" in info.targets for info in infos):  # before extraction: a bad encoder or option fails fast
        t0 = time.perf_counter()
        text_options: dict[str, Any] = dict(label_options or {})  # checked by f_label_texts
        flabels = embed_f_labels(task_data.task, task_data.labels, task_data.class_names, encoders=encoders,
                                 store=store, device=device,
                                 progress=lambda done, total: notify("embed labels", "", done, total),
                                 **text_options)
        targets["flabels"] = flabels
        encoder_labels = _encoder_labels(encoders, flabels.encoder_ids)
        timings.append({"stage": "embed labels", "model": "", "seconds": time.perf_counter() - t0})
    native_kind = NATIVE_TARGET_KINDS.get(task_data.task)
    if native_kind is not None:
        targets[native_kind] = native_target(task_data.task, task_data.labels, task_data.class_names)
    with dask_target(scheduler) as target:
        plan: LayerPlan | None = None
        if layer_choice == "last":
            features, source_probs = extract_all(extractors, sources, task_data, store, batch_size=batch_size,
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
            kind = target_kind_for(info, targets)
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
            job = ScoringJob(info, model_features, getattr(targets[kind], "arrays", targets[kind]),
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
                                   len(strata) == n_rows(first.features) else None, notify=notify)
        timings.append({"stage": f"resample {first.info.name}", "model": "", "seconds": time.perf_counter() - t0})
        if plan is not None:
            resampled = collapse_resampled(resampled, plan)

    table = with_ranks(pd.DataFrame(rows))
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

def _check_resamples(resamples: object) -> int:
    if isinstance(resamples, (bool, np.bool_)) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise InputError(f"resamples: expected a non-negative integer (0 skips resampling), got {resamples!r}")
    return int(resamples)

def _encoder_labels(encoders, encoder_ids: list[str]) -> list[str]:
    """Short display names of the encoders (the names the user gave, else their identities)."""
    from emms.flabels import encoder_names

    names = encoder_names(encoders) if isinstance(encoders, str) or all(isinstance(e, str) for e in encoders) else []
    return names if len(names) == len(encoder_ids) else list(encoder_ids)
