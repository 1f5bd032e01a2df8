"""Every agreement statistic for a table of scores against a table of ground truth.

Scores: the JSON document ``emms rank --out x.json`` writes, its CSV, or any CSV in long format
(columns ``model, metric, score``) or wide (``model`` plus one numeric column per metric). Truth:
columns ``model`` and a value column (``value`` unless named). Both may carry a ``target`` column
to evaluate several targets at once; then a ``mean`` row per metric averages the statistic over
targets, with a bootstrap interval that resamples models inside every target. Model names match
with or without their ``builtin:`` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.evaluate.correlations import (
    MIN_MODELS,
    MIN_MODELS_INTERVAL,
    bootstrap_draws,
    kendall_tau,
    pearson,
    regret_at_k,
    rel_at_k,
    spearman,
    percentile_interval,
    top1_hit,
    weighted_tau,
    weighted_tau_batch,
)

MEAN_TARGET = "mean"
DEFAULT_TARGET = "target"
#: The "metric" name under which a selection's predicted fine-tuned scores are evaluated.
SELECTION_PREDICTED = "race_predicted"


#: Rank correlations: NaN below :data:`MIN_MODELS` models (with 2 models each of them is +-1).
CORRELATIONS = ("weighted_tau_symmetric", "weighted_tau_truth_weighted", "kendall_tau", "spearman", "pearson")


def _statistics(ks: tuple[int, ...]) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    table: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "weighted_tau_symmetric": lambda s, t: weighted_tau(s, t, variant="symmetric"),
        "weighted_tau_truth_weighted": lambda s, t: weighted_tau(s, t, variant="truth_weighted"),
        "kendall_tau": kendall_tau,
        "spearman": spearman,
        "pearson": pearson,
        "top1_hit": lambda s, t: float(top1_hit(s, t)),
    }
    for k in ks:
        table[f"rel@{k}"] = lambda s, t, k=k: rel_at_k(s, t, k) if np.all(t > 0) and k <= len(s) else float("nan")
        table[f"regret@{k}"] = lambda s, t, k=k: regret_at_k(s, t, k) if k <= len(s) else float("nan")
    return table


# Statistics that get a bootstrap interval (the headline rank correlations), with their
# vectorised form for the resamples.
CI_STATISTICS = {
    "weighted_tau_symmetric": partial(weighted_tau_batch, variant="symmetric"),
    "weighted_tau_truth_weighted": partial(weighted_tau_batch, variant="truth_weighted"),
}


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read scores into long format (columns target, model, metric, score): the JSON document rank
    writes (its ``results``), the one ``emms select --out`` writes (each frozen score a metric, the
    race's predicted fine-tuned score the metric :data:`SELECTION_PREDICTED`), or a CSV in long or
    wide format. Rows without a score are dropped."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        table = _read_json_results(path)
    else:
        table = _read_csv(path, "scores")
    if "model" not in table.columns:
        raise InputError(f"scores: {path} has no 'model' column; expected columns model, metric, score "
                         "or model plus one column per metric")
    if {"metric", "score"} <= set(table.columns):
        long = table[[c for c in ("target", "model", "metric", "score") if c in table.columns]].copy()
    else:
        id_columns = [c for c in ("target", "model") if c in table.columns]
        metric_columns = [c for c in table.columns if c not in id_columns]
        if not metric_columns:
            raise InputError(f"scores: {path} has no metric columns besides {', '.join(id_columns)}")
        long = table.melt(id_vars=id_columns, value_vars=metric_columns, var_name="metric", value_name="score")
    if "target" not in long.columns:
        long.insert(0, "target", DEFAULT_TARGET)
    long["score"] = _numeric(long["score"], "scores", path)
    long = long[long["score"].notna()].reset_index(drop=True)
    return long.astype({"target": str, "model": str, "metric": str})


def read_truth(path: str | Path, value_column: str = "value", target: str | None = None) -> pd.DataFrame:
    """Read a ground-truth CSV -> columns target, model, value.

    ``value_column`` names the column holding the fine-tuned performance (e.g. ``accuracy``);
    ``target`` keeps only that target's rows of a table with a ``target`` column.
    """
    table = _read_csv(path, "truth")
    missing = [c for c in ("model", value_column) if c not in table.columns]
    if missing:
        hint = "" if value_column != "value" else " (name another value column with --truth-column)"
        raise InputError(f"truth: {path} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, table.columns))}"
                         f"{hint}")
    truth = table[[c for c in ("target", "model") if c in table.columns]].copy()
    truth["value"] = _numeric(table[value_column], "truth", path)
    if truth["value"].isna().any():
        bad = truth.loc[truth["value"].isna(), "model"].iloc[0]
        raise InputError(f"truth: {path} has no {value_column} for model {bad!r}")
    if "target" not in truth.columns:
        if target is not None:
            raise InputError(f"truth: {path} has no 'target' column to pick target {target!r} from")
        truth.insert(0, "target", DEFAULT_TARGET)
    truth = truth.astype({"target": str, "model": str})
    if target is not None:
        if target not in set(truth.target):
            raise InputError(f"truth: {path} has no rows for target {target!r}; it has {', '.join(sorted(set(truth.target)))}")
        truth = truth[truth.target == target].reset_index(drop=True)
    return truth


def model_key(name: str) -> str:
    """A model's name without its ``builtin:`` prefix: how scores and truth tables are matched."""
    return str(name).removeprefix("builtin:")


def match_truth(truth: Mapping[str, float], models: Sequence[str]) -> dict[str, float]:
    """``{model: value}`` for every name in ``models``, looked up in ``truth`` with or without the
    ``builtin:`` prefix; extra entries are ignored. A model with no value, a name given twice or a
    value that is not a finite number is an InputError."""
    by_key: dict[str, tuple[str, object]] = {}
    for name, value in truth.items():
        key = model_key(name)
        if key in by_key:
            raise InputError(f"truth: {by_key[key][0]!r} and {name!r} name the same model")
        by_key[key] = (str(name), value)
    missing = [m for m in models if model_key(m) not in by_key]
    if missing:
        raise InputError(f"truth: no fine-tuned value for model(s) {', '.join(missing)}; "
                         f"it has {', '.join(truth) or 'none'}")
    values = {}
    for model in models:
        name, value = by_key[model_key(model)]
        try:
            values[model] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"truth: value {value!r} for model {name!r} is not a number") from None
        if not np.isfinite(values[model]):
            raise InputError(f"truth: value for model {name!r} is not a finite number")
    if len(models) < 2:
        raise InputError("truth: rank correlations need at least 2 models")
    return values


def reconcile(scores: pd.DataFrame, truth: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``truth`` with its model names and target labels matched to ``scores``'.

    Names match with or without the ``builtin:`` prefix; truth rows of models no metric scored are
    dropped (noted in ``notes``). Scores without a target column take the truth's only target;
    with several, name one (``target=`` of :func:`read_truth`).
    """
    truth = truth.copy()
    by_key = {model_key(m): m for m in scores.model.unique()}
    truth["model"] = [by_key.get(model_key(m), m) for m in truth.model]
    score_targets, truth_targets = set(scores.target), sorted(set(truth.target))
    if score_targets == {DEFAULT_TARGET} and truth_targets != [DEFAULT_TARGET]:
        if len(truth_targets) > 1:
            raise InputError(f"truth: holds targets {', '.join(truth_targets)} and the scores name none; "
                             "pick the one they were computed for (--target NAME)")
        truth["target"] = DEFAULT_TARGET
    unscored = sorted(set(truth.model) - set(scores.model))
    if unscored:
        notes.append(f"truth rows for model(s) no metric scored are ignored: {', '.join(unscored)}")
        truth = truth[truth.model.isin(set(scores.model))].reset_index(drop=True)
    return truth


def evaluate_scores(scores: pd.DataFrame, truth: pd.DataFrame, *, ks: tuple[int, ...] = (1, 3),
                    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                    notes: list[str] | None = None) -> pd.DataFrame:
    """All statistics per (metric, target), plus per-metric means when there are several targets.

    Bootstrap: target g (in sorted order among the metric's targets) is resampled with stream g
    (see :func:`emms.evaluate.correlations.bootstrap_draws`); the mean row's interval comes from
    the mean of the targets' draws, so it equals ``bootstrap_ci(statistic, groups, seed=seed)``.

    ``scores``: columns target, model, metric, score; ``truth``: target, model, value (as returned
    by :func:`read_scores` / :func:`read_truth`). Returns a long table with columns metric, target,
    n_models (the fewest models of any target averaged), statistic, value, ci_low, ci_high
    (intervals for :data:`CI_STATISTICS`, else NaN). ``top1_hit`` averages to a hit rate.

    Too few models: the rank correlations (:data:`CORRELATIONS`) are NaN below :data:`MIN_MODELS`
    models and the intervals below :data:`MIN_MODELS_INTERVAL` (a bootstrap over 3 models mostly
    redraws one model). A metric that did not score some models with ground truth (e.g. LEEP without a
    source head) is evaluated on the others. Each such case appends a sentence to ``notes``.
    """
    notes = [] if notes is None else notes
    _check_unique(scores, ["target", "model", "metric"], "scores")
    _check_unique(truth, ["target", "model"], "truth")
    statistics = _statistics(tuple(ks))
    rows = []
    targets = sorted(scores.target.unique())
    for metric in sorted(scores.metric.unique()):
        groups = {}
        for target in targets:
            chosen = scores[(scores.metric == metric) & (scores.target == target)]
            if chosen.empty:
                continue
            aligned = _align(chosen, truth[truth.target == target], metric, target, notes)
            if aligned is not None:
                groups[target] = aligned
        if not groups:
            continue
        pairs = list(groups.values())
        fewest = min(len(s) for s, _ in pairs)
        where = f"{metric}" + ("" if list(groups) == [DEFAULT_TARGET] else " (on some target)")
        if fewest < MIN_MODELS:
            notes.append(f"{where}: {fewest} models are too few for a rank correlation (needs {MIN_MODELS}); "
                         "shown as n/a")
        elif fewest < MIN_MODELS_INTERVAL:
            notes.append(f"{where}: {fewest} models are too few for a bootstrap interval over models "
                         f"(needs {MIN_MODELS_INTERVAL}); none shown for it or for the mean")
        for name, statistic in statistics.items():
            values = [statistic(s, t) if name not in CORRELATIONS or len(s) >= MIN_MODELS else float("nan")
                      for s, t in pairs]
            draws = [bootstrap_draws(statistic, s, t, n_resamples=n_resamples, seed=seed, stream=g,
                                     batched=CI_STATISTICS[name])
                     if name in CI_STATISTICS and len(s) >= MIN_MODELS_INTERVAL else None
                     for g, (s, t) in enumerate(pairs)]  # per target: a small target costs only its own interval
            cells = list(zip(groups, values, draws))
            if len(pairs) > 1:
                cells.append((MEAN_TARGET, float(np.mean(values)),
                              None if any(d is None for d in draws) else np.mean(draws, axis=0)))
            for target, value, target_draws in cells:
                low, high = (np.nan, np.nan) if target_draws is None else percentile_interval(target_draws, confidence)
                n_models = min(len(s) for s, _ in pairs) if target == MEAN_TARGET else len(groups[target][0])
                rows.append({"metric": metric, "target": target, "n_models": n_models, "statistic": name,
                             "value": float(value), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["metric", "target", "n_models", "statistic", "value", "ci_low", "ci_high"])


def _align(scores: pd.DataFrame, truth: pd.DataFrame, metric: str, target: str,
           notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores, truth) of the models ``metric`` scored on ``target``; None (noted) with fewer than 2."""
    where = f"metric {metric!r}" + ("" if target == DEFAULT_TARGET else f", target {target!r}")
    missing = sorted(set(scores.model) - set(truth.model))
    if missing:
        raise InputError(f"truth: no ground truth for model(s) {', '.join(missing)} scored by {where}")
    unscored = sorted(set(truth.model) - set(scores.model))
    on_target = "" if target == DEFAULT_TARGET else f" on target {target}"
    merged = scores.merge(truth, on="model", how="inner")
    if len(merged) < 2:
        notes.append(f"{metric}: scored {len(merged)} of the {len(truth)} models with ground truth{on_target}; "
                     "too few to compare, left out")
        return None
    if unscored:
        notes.append(f"{metric}: no score for {', '.join(unscored)}{on_target}; evaluated on the other {len(merged)} models")
    return merged.score.to_numpy(dtype=np.float64), merged.value.to_numpy(dtype=np.float64)


def _read_json_results(path: Path) -> pd.DataFrame:
    """The ``results`` records of a result document (rank's JSON) as a table."""
    if not path.is_file():
        raise InputError(f"scores: file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"scores: cannot read {path} as JSON ({exc})") from None
    records = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"scores: {path} is not a result document; expected the JSON that `emms rank --out` writes "
                         "(a 'results' list of model, metric, score records)")
    table = pd.DataFrame(records)
    if {"model", "metric", "score"} <= set(table.columns):
        return table
    frozen = [c for c in table.columns if str(c).startswith("frozen:")]
    if "model" in table.columns and (frozen or "predicted" in table.columns):  # a selection (emms select --out)
        columns = {c: c.removeprefix("frozen:") for c in frozen}
        if "predicted" in table.columns:
            columns["predicted"] = SELECTION_PREDICTED
        wide = table[["model", *columns]].rename(columns=columns)
        return wide.melt(id_vars=["model"], var_name="metric", value_name="score")
    raise InputError(f"scores: the results in {path} lack model, metric or score fields")


def _read_csv(path: str | Path, name: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name}: file not found: {path}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: cannot read {path} as CSV ({exc})") from None


def _numeric(column: pd.Series, name: str, path: str | Path) -> pd.Series:
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() & column.notna()
    if bad.any():
        raise InputError(f"{name}: {path} has non-numeric value(s) such as {column[bad].iloc[0]!r}; expected numbers")
    return converted.astype(np.float64)


def _check_unique(table: pd.DataFrame, keys: list[str], name: str) -> None:
    duplicated = table.duplicated(keys, keep=False)
    if duplicated.any():
        first = table.loc[duplicated, keys].iloc[0].to_dict()
        raise InputError(f"{name}: more than one row for {first}; expected one row per {', '.join(keys)}")
