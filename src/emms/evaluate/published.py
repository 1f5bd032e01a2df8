"""Published ground truth, scores and correlations from transferability papers, as package data.

The tables live in ``emms/resources/published/`` (see its PROVENANCE.md for sources and commits).
Each loader returns a fresh :class:`pandas.DataFrame`; :func:`paired_scores` joins one scorer's
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


def paired_scores(benchmark: str, dataset: str, metric: str, *, score_source: str,
                  measure: str = "finetune_acc") -> pd.DataFrame:
    """One published scorer's scores next to the ground truth of the same models.

    ``score_source`` is a prefix of the ``source`` column, e.g. ``"zhangyikaii/Model-Spider"`` or
    ``"thuml/Transfer-Learning-Library"``. Returns columns model, score, truth (one row per model
    that has both), in the score table's order.
    """
    scores = published_scores(benchmark)
    scores = scores[(scores.dataset == dataset) & (scores.metric == metric)
                    & scores.source.str.startswith(score_source)]
    if scores.empty:
        raise InputError(f"score_source: no published {metric!r} scores for {benchmark}/{dataset} from {score_source!r}")
    if scores.source.nunique() != 1:
        raise InputError(f"score_source: {score_source!r} matches several sources; give a longer prefix")
    truth = ground_truth(benchmark)
    truth = truth[(truth.dataset == dataset) & (truth.measure == measure)]
    if truth.empty:
        raise InputError(f"measure: no {measure!r} ground truth for {benchmark}/{dataset}")
    paired = scores[["model", "score"]].merge(truth[["model", "value"]], on="model", how="inner", validate="1:1")
    return paired.rename(columns={"value": "truth"}).reset_index(drop=True)


def _select(table: pd.DataFrame, *, benchmark: str | None) -> pd.DataFrame:
    if benchmark is None:
        return table
    known = sorted(table.benchmark.unique())
    if benchmark not in known:
        raise InputError(f"benchmark: expected one of {', '.join(known)}, got {benchmark!r}")
    return table[table.benchmark == benchmark].reset_index(drop=True)
