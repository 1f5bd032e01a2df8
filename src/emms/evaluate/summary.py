"""Every agreement statistic for a table of scores against a table of ground truth.

Scores: long format (columns ``model, metric, score``) or wide (``model`` plus one numeric column
per metric). Truth: columns ``model, value``. Both may carry a ``target`` column to evaluate
several targets at once; then a ``mean`` row per metric averages the statistic over targets, with a
bootstrap interval that resamples models inside every target.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.evaluate.correlations import (
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
    """Read a scores CSV (long or wide) into long format: columns target, model, metric, score."""
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
    return long.astype({"target": str, "model": str, "metric": str})


def read_truth(path: str | Path) -> pd.DataFrame:
    """Read a ground-truth CSV: columns model, value (+ optional target) -> target, model, value."""
    table = _read_csv(path, "truth")
    missing = {"model", "value"} - set(table.columns)
    if missing:
        raise InputError(f"truth: {path} lacks column(s) {', '.join(sorted(missing))}; expected model, value (+ optional target)")
    truth = table[[c for c in ("target", "model", "value") if c in table.columns]].copy()
    if "target" not in truth.columns:
        truth.insert(0, "target", DEFAULT_TARGET)
    truth["value"] = _numeric(truth["value"], "truth", path)
    return truth.astype({"target": str, "model": str})


def evaluate_scores(scores: pd.DataFrame, truth: pd.DataFrame, *, ks: tuple[int, ...] = (1, 3),
                    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """All statistics per (metric, target), plus per-metric means when there are several targets.

    Bootstrap: target g (in sorted order among the metric's targets) is resampled with stream g
    (see :func:`emms.evaluate.correlations.bootstrap_draws`); the mean row's interval comes from
    the mean of the targets' draws, so it equals ``bootstrap_ci(statistic, groups, seed=seed)``.

    ``scores``: columns target, model, metric, score; ``truth``: target, model, value (as returned
    by :func:`read_scores` / :func:`read_truth`). Returns a long table with columns metric, target,
    n_models (the fewest models of any target averaged), statistic, value, ci_low, ci_high
    (intervals for :data:`CI_STATISTICS`, else NaN). ``top1_hit`` averages to a hit rate.
    """
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
            groups[target] = _align(chosen, truth[truth.target == target], metric, target)
        pairs = list(groups.values())
        for name, statistic in statistics.items():
            values = [statistic(s, t) for s, t in pairs]
            draws = ([bootstrap_draws(statistic, s, t, n_resamples=n_resamples, seed=seed, stream=g,
                                      batched=CI_STATISTICS[name])
                      for g, (s, t) in enumerate(pairs)] if name in CI_STATISTICS else None)
            cells = list(zip(groups, values, draws or [None] * len(pairs)))
            if len(pairs) > 1:
                cells.append((MEAN_TARGET, float(np.mean(values)), None if draws is None else np.mean(draws, axis=0)))
            for target, value, target_draws in cells:
                low, high = (np.nan, np.nan) if target_draws is None else percentile_interval(target_draws, confidence)
                n_models = min(len(s) for s, _ in pairs) if target == MEAN_TARGET else len(groups[target][0])
                rows.append({"metric": metric, "target": target, "n_models": n_models, "statistic": name,
                             "value": float(value), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["metric", "target", "n_models", "statistic", "value", "ci_low", "ci_high"])


def _align(scores: pd.DataFrame, truth: pd.DataFrame, metric: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"metric {metric!r}" + ("" if target == DEFAULT_TARGET else f", target {target!r}")
    missing = sorted(set(scores.model) - set(truth.model))
    if missing:
        raise InputError(f"truth: no ground truth for model(s) {', '.join(missing)} scored by {where}")
    unscored = sorted(set(truth.model) - set(scores.model))
    if unscored:
        raise InputError(f"scores: {where} has no score for model(s) {', '.join(unscored)} that have ground truth")
    merged = scores.merge(truth, on="model", how="inner")
    if merged.score.isna().any():
        bad = ", ".join(merged.model[merged.score.isna()])
        raise InputError(f"scores: {where} has a missing (NaN) score for model(s) {bad}")
    if len(merged) < 2:
        raise InputError(f"scores: {where} scores {len(merged)} model; expected at least 2 to correlate")
    return merged.score.to_numpy(dtype=np.float64), merged.value.to_numpy(dtype=np.float64)


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
