"""Published ground truth, scores and correlations from transferability papers, as package data.

The tables live in ``emms/resources/published/`` (see its PROVENANCE.md for sources and commits).
Each loader returns a fresh :class:`pandas.DataFrame`; :func:`paired_table` joins one source's
published scores with the ground truth of the same models, ready for :mod:`emms.evaluate.correlations`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

from emms.errors import InputError

_TABLES = ("ground_truth", "published_scores", "published_correlations", "reproduced_correlations")


def load_table(name: str) -> pd.DataFrame:
    """Read one shipped table: ``ground_truth``, ``published_scores``, ``published_correlations``
    or ``reproduced_correlations``."""
    if name not in _TABLES:
        raise InputError(f"name: expected one of {', '.join(_TABLES)}, got {name!r}")
    return _read_table(name).copy()


@lru_cache(maxsize=None)
def _read_table(name: str) -> pd.DataFrame:
    path = resources.files("emms") / "resources" / "published" / f"{name}.csv"
    with resources.as_file(path) as real_path:
        return pd.read_csv(real_path)


def ground_truth(benchmark: str | None = None) -> pd.DataFrame:
    """Fine-tuned performance per (benchmark, dataset, model): columns benchmark, dataset, model,
    value, measure, source."""
    return _select(load_table("ground_truth"), benchmark=benchmark)


def published_scores(benchmark: str | None = None) -> pd.DataFrame:
    """Published per-model scores: columns benchmark, dataset, model, metric, score, source."""
    return _select(load_table("published_scores"), benchmark=benchmark)


def published_correlations(benchmark: str | None = None) -> pd.DataFrame:
    """Published correlations: columns benchmark, dataset, metric, correlation, value, variant_note, source."""
    return _select(load_table("published_correlations"), benchmark=benchmark)


def paired_table(benchmark: str, *, score_source: str, measure: str = "finetune_acc") -> pd.DataFrame:
    """Every published score of one source next to the ground truth of the same (dataset, model).

    ``score_source`` is a prefix of the ``source`` column, e.g. ``"zhangyikaii/Model-Spider"`` or
    ``"thuml/Transfer-Learning-Library"``. Returns columns dataset, metric, model, score, truth (rows
    whose model has no ``measure`` ground truth are left out), in the score table's order.
    """
    scores = _select(_read_table("published_scores"), benchmark=benchmark)
    scores = scores[scores.source.str.startswith(score_source)]
    if scores.empty:
        raise InputError(f"score_source: no published scores for {benchmark} from {score_source!r}")
    if scores.source.nunique() != 1:
        raise InputError(f"score_source: {score_source!r} matches several sources; give a longer prefix")
    truth = _select(_read_table("ground_truth"), benchmark=benchmark)
    truth = truth[truth.measure == measure]
    if truth.empty:
        raise InputError(f"measure: no {measure!r} ground truth for {benchmark}")
    paired = scores[["dataset", "metric", "model", "score"]].merge(
        truth[["dataset", "model", "value"]], on=["dataset", "model"], how="inner", validate="m:1")
    return paired.rename(columns={"value": "truth"}).reset_index(drop=True)


def paired_scores(benchmark: str, dataset: str, metric: str, *, score_source: str,
                  measure: str = "finetune_acc") -> pd.DataFrame:
    """One published scorer's scores on one dataset next to the ground truth: columns model, score,
    truth (see :func:`paired_table`)."""
    table = paired_table(benchmark, score_source=score_source, measure=measure)
    chosen = table[(table.dataset == dataset) & (table.metric == metric)]
    if chosen.empty:
        raise InputError(f"dataset/metric: no published {metric!r} scores with ground truth for {benchmark}/{dataset} "
                         f"from {score_source!r}")
    return chosen[["model", "score", "truth"]].reset_index(drop=True)


def _select(table: pd.DataFrame, *, benchmark: str | None) -> pd.DataFrame:
    """Rows of ``benchmark`` (a new frame), or the table itself when ``benchmark`` is None."""
    if benchmark is None:
        return table
    chosen = table.benchmark == benchmark
    if not chosen.any():
        raise InputError(f"benchmark: expected one of {', '.join(sorted(table.benchmark.unique()))}, got {benchmark!r}")
    return table[chosen].reset_index(drop=True)
