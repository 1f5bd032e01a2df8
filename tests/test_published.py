"""The correlation harness reproduces published numbers from the shipped tables.

Oracle: ``reproduced_correlations.csv`` (an independent scipy recomputation) says which published
cells reproduce under which variant (``says_match``). We recompute every cell from the shipped
published scores and ground truth, match our value against the published value taken from
``published_correlations.csv``, and require the same verdict as the oracle on every cell, plus the
counts stated in the shared README (Model Spider 69/72 and 7/9 means with the truth-weighted tau;
TLlib 20/32 with the symmetric tau and 20/32 with Pearson).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from emms.errors import InputError
from emms.evaluate import published
from emms.evaluate.correlations import pearson, weighted_tau

MODEL_SPIDER = "zhangyikaii/Model-Spider"
TLLIB = "thuml/Transfer-Learning-Library"
VARIANTS = {
    "weightedtau(score,acc) rank=True [default]": ("weighted_kendall_tau", lambda s, t: weighted_tau(s, t, variant="symmetric")),
    "weightedtau(acc,score,rank=None)": ("weighted_kendall_tau", lambda s, t: weighted_tau(s, t, variant="truth_weighted")),
    "pearsonr(score,acc)": ("pearson", pearson),
}
# reproduced_correlations.csv prints 6 decimals: agreement to half a unit of the last digit.
PRINTED_PRECISION = 0.5e-6 + 1e-12
MATCH_TOLERANCE = 0.002  # the README's "says_match" rule: |reproduced - published| < 0.002


def _repo(source: str) -> str:
    return source.split(":", 1)[0]


@lru_cache(maxsize=None)
def _zoo_datasets() -> list[str]:
    truth = published.ground_truth("logme_zoo10")
    return sorted(truth[truth.measure == "finetune_acc"].dataset.unique())


@lru_cache(maxsize=None)
def _pairs(score_repo: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(dataset, metric) -> (scores, accuracies) of the LogME zoo from one repository's scores."""
    table = published.paired_table("logme_zoo10", score_source=score_repo)
    return {key: (group.score.to_numpy(), group.truth.to_numpy()) for key, group in table.groupby(["dataset", "metric"])}


def _ours(variant: str, dataset: str, metric: str, score_repo: str) -> float:
    statistic = VARIANTS[variant][1]
    datasets = _zoo_datasets() if dataset == "mean" else [dataset]
    values = []
    for name in datasets:
        scores, truth = _pairs(score_repo)[name, metric]
        assert len(scores) == 10  # the LogME zoo: every model has a score and an accuracy
        values.append(statistic(scores, truth))
    return float(np.mean(values))


@lru_cache(maxsize=None)
def _published_values() -> dict[tuple[str, str, str, str], float]:
    """(dataset, metric, correlation, repository) -> the value printed in that repository's README."""
    table = published.published_correlations("logme_zoo10")
    keys = list(zip(table.dataset, table.metric, table.correlation, table.source.map(_repo)))
    assert len(set(keys)) == len(keys)
    return dict(zip(keys, table.value.astype(float)))


def _check(variant: str, score_repo: str, published_repo: str, means: bool) -> int:
    """Recompute every oracle cell of one (variant, scores, published table); return our match count."""
    oracle = published.load_table("reproduced_correlations")
    cells = oracle[(oracle.variant == variant) & (oracle.score_source.map(_repo) == score_repo)
                   & (oracle.published_source.map(_repo) == published_repo)
                   & ((oracle.dataset == "mean") == means)]
    assert not cells.empty
    correlation = VARIANTS[variant][0]
    n_match = 0
    for cell in cells.itertuples():
        ours = _ours(variant, cell.dataset, cell.metric, score_repo)
        assert ours == pytest.approx(cell.reproduced, abs=PRINTED_PRECISION), (cell.dataset, cell.metric)
        matches = abs(ours - _published_values()[cell.dataset, cell.metric, correlation, published_repo]) < MATCH_TOLERANCE
        assert matches == bool(cell.says_match), (cell.dataset, cell.metric, ours)
        n_match += matches
    assert n_match == int(cells.says_match.sum())
    return n_match


def test_model_spider_readme_reproduces_with_truth_weighted_tau():
    assert _check("weightedtau(acc,score,rank=None)", MODEL_SPIDER, MODEL_SPIDER, means=False) == 69


def test_model_spider_readme_means_reproduce_with_truth_weighted_tau():
    assert _check("weightedtau(acc,score,rank=None)", MODEL_SPIDER, MODEL_SPIDER, means=True) == 7


def test_model_spider_readme_does_not_reproduce_with_symmetric_tau():
    assert _check("weightedtau(score,acc) rank=True [default]", MODEL_SPIDER, MODEL_SPIDER, means=False) == 5


def test_tllib_readme_reproduces_with_symmetric_tau():
    assert _check("weightedtau(score,acc) rank=True [default]", TLLIB, TLLIB, means=False) == 20


def test_tllib_readme_pearson_reproduces():
    assert _check("pearsonr(score,acc)", TLLIB, TLLIB, means=False) == 20


def test_tllib_readme_does_not_reproduce_with_truth_weighted_tau():
    assert _check("weightedtau(acc,score,rank=None)", TLLIB, TLLIB, means=False) == 4


def test_the_two_variants_differ_on_published_data():
    s, t = _pairs(MODEL_SPIDER)["aircraft", "leep"]
    pair = published.paired_scores("logme_zoo10", "aircraft", "leep", score_source=MODEL_SPIDER)
    np.testing.assert_array_equal(pair.score, s)
    assert weighted_tau(s, t, variant="symmetric") == pytest.approx(-0.070, abs=0.001)
    assert weighted_tau(s, t, variant="truth_weighted") == pytest.approx(0.221, abs=0.001)


def test_shipped_tables_match_their_provenance_checksums():
    folder = resources.files("emms") / "resources" / "published"
    provenance = (folder / "PROVENANCE.md").read_text()
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.csv)$", provenance, re.M))
    assert set(listed) == {"ground_truth.csv", "published_scores.csv", "published_correlations.csv",
                           "reproduced_correlations.csv"}
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_loaders_select_benchmarks_and_reject_unknown_names():
    truth = published.ground_truth("sfda_group1_supervised")
    assert set(truth.benchmark) == {"sfda_group1_supervised"}
    assert len(truth) == 121  # 11 models x 11 datasets
    with pytest.raises(InputError, match="benchmark"):
        published.ground_truth("no_such_benchmark")
    with pytest.raises(InputError, match="name"):
        published.load_table("secrets")
    with pytest.raises(InputError, match="score_source"):
        published.paired_scores("logme_zoo10", "aircraft", "leep", score_source="nobody/none")


def test_loaders_return_independent_copies():
    first = published.published_scores()
    first.loc[:, "score"] = 0.0
    assert isinstance(published.published_scores(), pd.DataFrame)
    assert published.published_scores().score.abs().sum() > 0
