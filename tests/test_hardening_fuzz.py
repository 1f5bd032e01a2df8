"""Fuzzing every registered metric: shapes, dtypes, scales 1e-6..1e6, duplicate rows, rank-deficient
and constant columns, labels that are not 0..C-1.

The property: a metric either returns finite scores or raises one of our own errors
(:class:`emms.errors.EmmsError`, normally an InputError naming the argument); never a raw numpy /
scipy / scikit-learn exception, never a NaN or Inf score, and never a modified input.

CI runs ``EMMS_FUZZ_EXAMPLES`` (default 25) derandomised examples per metric; set it higher for a
long run on demand, e.g. ``EMMS_FUZZ_EXAMPLES=2000 pytest tests/test_hardening_fuzz.py``
(the long run draws fresh random examples instead of the fixed CI sequence).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emms.errors import EmmsError, EmmsWarning
from emms.metrics import available_metrics, get_metric, score, score_pool

EXAMPLES = int(os.environ.get("EMMS_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="EMMS_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = ("float32", "float64", "int32", "int64")
METRICS = [info.name for info in available_metrics() if not info.needs_n_params]  # params: a count, not arrays


@st.composite
def feature_cases(draw) -> dict:
    """A feature matrix (N, D) with the awkward properties real features have, plus class labels."""
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 30))
    n_classes = draw(st.integers(2, 6))
    dtype = draw(st.sampled_from(DTYPES))
    scale = 10.0 ** draw(st.floats(-6, 6))
    rank = draw(st.one_of(st.none(), st.integers(1, d)))
    duplicate_rows = draw(st.booleans())
    constant_column = draw(st.booleans())
    label_style = draw(st.sampled_from(("codes", "offset", "strings")))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, d)) if rank is None else rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    x = x * scale
    if duplicate_rows:
        x = x[rng.integers(0, n, size=n)]
    if constant_column:
        x[:, rng.integers(0, d)] = 3.0 * scale
    x = np.round(x).astype(dtype) if dtype.startswith("int") else x.astype(dtype)
    codes = rng.integers(0, n_classes, size=n)
    labels = {"codes": codes, "offset": codes * 3 - 7, "strings": np.array(["cat", "dog", "eel", "fox", "gnu", "hen"])[codes]}
    return {"x": x, "labels": labels[label_style], "scale": scale, "rng": rng}


def _targets(case: dict, kinds: frozenset[str]) -> list[tuple[str, object]]:
    n, rng, scale = case["x"].shape[0], case["rng"], case["scale"]
    out = []
    if "classes" in kinds:
        out.append(("classes", case["labels"]))
    if "multilabel" in kinds:
        out.append(("multilabel", (rng.random((n, 3)) < 0.5).astype(np.int64)))
    if "real" in kinds:
        out.append(("real", rng.normal(size=(n, int(rng.integers(1, 4)))) * scale))
    if "flabels" in kinds:
        widths = rng.integers(1, 9, size=int(rng.integers(1, 4)))
        out.append(("flabels", [rng.normal(size=(n, int(w))) * scale for w in widths]))
    return out


def _copies(value):
    return [np.array(v, copy=True) for v in value] if isinstance(value, list) else np.array(value, copy=True)


def _unchanged(before, after) -> bool:
    if isinstance(before, list):
        return all(np.array_equal(b, a) for b, a in zip(before, after))
    return np.array_equal(before, after)


def _run(name: str, case: dict, kind: str, target) -> list[float]:
    info = next(i for i in available_metrics() if i.name == name)
    x, rng = case["x"], case["rng"]
    if info.pool_relative:
        other = (x.astype(np.float64) * 2.0 + rng.normal(size=x.shape) * case["scale"]).astype(x.dtype)
        return list(score_pool({"a": x, "b": other}, target, name, target_kind=kind).values())
    if info.needs_source_probs:
        probs = rng.dirichlet(np.ones(int(rng.integers(2, 8))), size=x.shape[0])
        return [score(x, target, name, source_probs=probs, target_kind=kind)]
    return [score(x, target, name, target_kind=kind)]


@pytest.mark.parametrize("name", METRICS)
def test_metric_never_crashes_never_returns_nan_never_modifies_inputs(name):
    info = next(i for i in available_metrics() if i.name == name)
    outcomes = {"scored": 0, "rejected": 0}

    @FUZZ
    @given(case=feature_cases())
    def run_one(case):
        for kind, target in _targets(case, info.targets):
            x_before, target_before = case["x"].copy(), _copies(target)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", EmmsWarning)
                    values = _run(name, case, kind, target)
            except EmmsError:
                outcomes["rejected"] += 1
            else:
                assert all(np.isfinite(values)), f"{name} returned {values} for a {kind} target"
                outcomes["scored"] += 1
            assert np.array_equal(case["x"], x_before) and _unchanged(target_before, target), f"{name} modified its input"

    run_one()
    # the property is only worth something if many examples were actually scored (not all rejected)
    assert outcomes["scored"] >= outcomes["rejected"] / 3, outcomes
    print(f"{name}: {outcomes}")


# Inputs the fuzzer found (each was a raw third-party exception or a NaN score); kept as regressions.
FOUND = [
    ("linear_probe", np.arange(12.0).reshape(6, 2) ** 1.5, np.array([0, 0, 0, 0, 0, 1])),         # NaN (single-class fold)
    ("linear_probe", np.arange(12.0).reshape(6, 2) ** 1.5, np.array([0, 0, 1, 1, 2, 2])),         # folds > every class
    ("sfda", np.zeros((6, 3)), np.array([0, 0, 1, 1, 2, 2])),                                     # no within-class variation
    ("sfda", np.array([[0, 0, 0], [-1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]), np.array([0, 1, 1, 1, 1])),  # rows sum to 0
    ("parc", np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0]]), np.array([0, 1])),                   # NaN (one pair)
    ("ncti", np.array([[1.0, 2.0], [3.0, 1.0]]), np.array([0, 1])),                               # N <= C
    ("ncti", np.array([[-160.8, 24.2, 300.0, 157.6], [31.7, 51.1, 300.0, 225.3]])[[0, 1, 0, 1]],
     np.array([0, 1, 2, 1])),                                                                     # identical rows per class
    ("ncti", np.zeros((8, 3)), np.arange(8) % 2),                                                 # LinAlgError
]


@pytest.mark.parametrize("name, features, labels", FOUND, ids=[f"{c[0]}-{i}" for i, c in enumerate(FOUND)])
def test_inputs_found_by_fuzzing(name, features, labels):
    info = get_metric(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmmsWarning)
            if info.pool_relative:
                values = list(score_pool({"a": features, "b": features * 2.0}, labels, name).values())
            else:
                values = [score(features, labels, name)]
    except EmmsError as error:
        assert str(error).split(":")[0] in ("features", "target", "folds"), error
    else:
        assert all(np.isfinite(values)), values
