"""Scoring stage of :func:`emms.pipeline.rank`: metrics checked against their options, each one run
over the pool (in process, on a torch device or on Dask), generically through the registry's
capabilities; rank correlations against a ground truth.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emms.errors import EmmsWarning, InputError
from emms.metrics import get_metric, score_pool
from emms.metrics.registry import MetricInfo, score_result

#: Each resample scores a random half of the rows without replacement: for a score that behaves
#: like an average over samples, the spread of half-sample scores around their mean matches the
#: sampling spread of the full-sample score (variance s^2 (1/m - 1/N) = s^2 / N at m = N / 2).
RESAMPLE_FRACTION = 0.5
# F-label warnings about constant embedding columns describe the text encoders, not the user's data.
_OWN_FLABEL_WARNING = r"f_labels\[\d+\]: ignored \d+ constant column"
ProgressCallback = Callable[[str, str, int, int], None]
"""progress(stage, item, done, total): called as stages advance (the CLI draws bars from it)."""


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
class ScoringJob:
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
            scored = score_metric(self.info, features, target, probs, self.options, self.encoder_labels, scheduler,
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
        n = n_rows(self.features)
        groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
        out = []
        for b in range(n_resamples):
            notify("resample", self.info.name, b, n_resamples)
            rows = np.sort(np.concatenate([rng.choice(g, int(np.ceil(RESAMPLE_FRACTION * g.size)), replace=False)
                                           for g in groups]))
            out += [{"resample": b, "model": r["model"], "score": r["score"]} for r in self.run([], rows=rows)]
        notify("resample", self.info.name, n_resamples, n_resamples)
        return pd.DataFrame(out, columns=["resample", "model", "score"])

def n_rows(features: dict) -> int:
    return int(next(iter(features.values())).shape[0])

def target_kind_for(info: MetricInfo, targets: dict) -> str | None:
    """Which of the task's ``targets`` ``info`` scores: the F-labels when it takes no other target the
    task has, else the first native kind it accepts; None when it accepts none of them."""
    if "flabels" in targets and "flabels" in info.targets and not info.targets & (set(targets) - {"flabels"}):
        return "flabels"
    for kind in ("classes", "multilabel", "real"):
        if kind in targets and kind in info.targets:
            return kind
    return None


def score_metric(info, features: dict, target, source_probs: dict, options: dict, encoder_labels: list[str],
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

def _score_one(info: MetricInfo, model: str, feats, target_arrays, source_probs: dict, options: dict,
               encoder_labels: list[str], device: str) -> dict:
    """One model's row (without seconds) for a per-model metric, with the encoder weights when the
    metric reports them (:func:`emms.metrics.registry.score_result`). On a GPU device, a metric whose
    statistics accumulate on a device (its stream is ``on_device``) is scored there (:mod:`emms.compute.backend`)."""
    if info.needs_n_params:
        options = {**options, "n_params": options["n_params"].get(model)}
    stream = info.stream
    if str(device) != "cpu" and stream is not None and stream.on_device and stream.accepts(options):
        from emms.compute.backend import score_on_device

        result = score_on_device(feats, target_arrays, info.name, device=device, **options)
    else:
        probs = source_probs[model] if info.needs_source_probs else None
        result = score_result(feats, target_arrays, info.name, source_probs=probs, **options)
    weights = None if result.weights is None else dict(zip(encoder_labels, map(float, result.weights)))
    return {"model": model, "metric": info.name, "score": float(result.score), "weights": weights}


def _finite_or_noted(row: dict, failures: list[tuple[str, str]] | None) -> bool:
    if np.isfinite(row["score"]):
        return True
    if failures is None:
        raise InputError(f"models: {row['metric']} gives no finite score for {row['model']!r}")
    failures.append((row["model"], "the score is not a finite number"))
    return False

def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
