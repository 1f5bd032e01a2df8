"""EMMS v2 (issue 19): the per-encoder score's invariances, t, chunked statistics, memory, estimator API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emms
from emms import EMMS, EmmsWarning, InputError
from emms.metrics.stats import SufficientStats


def _fit(x, z, **kw) -> EMMS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        return EMMS(**kw).fit(x, z)


def _orthogonal(rng, width):
    q, r = np.linalg.qr(rng.normal(size=(width, width)))
    return q * np.sign(np.diag(r))


def _informative(seed, n=300, d=12, widths=(6, 4, 8), rank=4):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, rank))
    x = signal @ rng.normal(size=(rank, d)) + rng.normal(size=(n, d))
    z = [signal @ rng.normal(size=(rank, w)) + rng.normal(scale=1.0 + k, size=(n, w)) for k, w in enumerate(widths)]
    return x, z


# -- scale-free: a useless model scores the same whatever K and however much encoders agree --------

@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 5), width=st.integers(2, 24), d=st.integers(1, 24), agree=st.sampled_from(["none", "copies", "rotated"]),
       seed=st.integers(0, 10_000))
def test_useless_features_score_zero_whatever_k_and_agreement(k, width, d, agree, seed):
    rng = np.random.default_rng(seed)
    n = 400
    x = rng.normal(size=(n, d))
    base = rng.normal(size=(n, width))
    if agree == "none":
        z = [rng.normal(size=(n, width)) for _ in range(k)]
    elif agree == "copies":
        z = [base.copy() for _ in range(k)]
    else:
        z = [base @ _orthogonal(rng, width) for _ in range(k)]
    model = _fit(x, z)
    # R² of an out-of-sample fit; the null's leave-one-out error is the reference, so pure noise scores ~0
    assert 0.0 <= model.score_ < 0.02
    columns = _fit(x, z, mixture="columns")
    if agree == "none" and k > 1:  # the paper's mixture rewards disagreeing encoders (-1/K)
        assert columns.score_ > -1.0 / k - 0.05


def test_column_mixture_depends_on_k_and_the_default_does_not():
    """The measurement of the issue: N = 2000, D = 64, L = 32, K = 1, 2, 3 independent encoders."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 64))
    z = [rng.normal(size=(2000, 32)) for _ in range(3)]
    columns = [_fit(x, z[:k], mixture="columns").score_ for k in (1, 2, 3)]
    default = [_fit(x, z[:k]).score_ for k in (1, 2, 3)]
    np.testing.assert_allclose(columns, [-1.0, -0.5, -1 / 3], atol=0.01)
    assert max(default) - min(default) < 1e-3 and min(default) >= 0.0


# -- invariances -----------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), which=st.integers(0, 2), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100),
       kind=st.sampled_from(["gcv", "in_sample"]), widths=st.lists(st.integers(1, 9), min_size=3, max_size=3))
def test_invariant_to_a_similarity_transform_of_one_encoder(seed, which, scale, shift, kind, widths):
    rng = np.random.default_rng(seed)
    x, z = _informative(seed, widths=tuple(widths))
    base = _fit(x, z, score=kind)
    moved = list(z)
    moved[which] = scale * z[which] @ _orthogonal(rng, widths[which]) + shift
    got = _fit(x, moved, score=kind)
    assert got.score_ == pytest.approx(base.score_, rel=1e-8, abs=1e-10)
    np.testing.assert_allclose(got.encoder_scores_, base.encoder_scores_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(got.weights_, base.weights_)


def test_the_paper_mixture_is_not_rotation_invariant():
    """Why the default is not the column mixture: rotating one of two agreeing encoders moves its score."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 16))
    z0 = rng.normal(size=(1000, 16))
    q = _orthogonal(rng, 16)
    assert abs(_fit(x, [z0, z0], mixture="columns").score_ - _fit(x, [z0, z0 @ q], mixture="columns").score_) > 0.1
    assert _fit(x, [z0, z0]).score_ == pytest.approx(_fit(x, [z0, z0 @ q]).score_, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scales=st.lists(st.floats(1e-3, 1e3), min_size=12, max_size=12))
def test_invariant_to_feature_column_scaling_and_row_order(seed, scales):
    x, z = _informative(seed)
    base = _fit(x, z)
    perm = np.random.default_rng(seed).permutation(len(x))
    assert _fit(x * np.array(scales), z).score_ == pytest.approx(base.score_, rel=1e-8, abs=1e-10)
    assert _fit(x[perm], [b[perm] for b in z]).score_ == pytest.approx(base.score_, rel=1e-8, abs=1e-10)


# -- the formula, by brute force -------------------------------------------------------------------

def test_encoder_r2_matches_brute_force_gcv():
    x, z = _informative(3, n=150)
    model = _fit(x, z)
    xs = (x - x.mean(0)) / x.std(0)
    n = len(x)
    for k, block in enumerate(z):
        zc = block - block.mean(0)
        lam = model.ridges_[k]
        hat = xs @ np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T)
        gcv = np.sum((zc - hat @ zc) ** 2) / n / (1 - (np.trace(hat) + 1) / n) ** 2
        null = np.sum(zc**2) * n / (n - 1) ** 2
        assert model.encoder_scores_[k] == pytest.approx(1 - gcv / null, rel=1e-9)
        for factor in (0.7, 1.4):  # λ_k is a GCV minimum
            hat2 = xs @ np.linalg.solve(xs.T @ xs + lam * factor * np.eye(xs.shape[1]), xs.T)
            gcv2 = np.sum((zc - hat2 @ zc) ** 2) / n / (1 - (np.trace(hat2) + 1) / n) ** 2
            assert gcv2 >= gcv * (1 - 1e-9)
    assert model.score_ == model.encoder_scores_.max()


# -- t: which encoder's labels the features agree with ---------------------------------------------

def test_t_is_one_on_the_encoder_the_features_are_built_from():
    rng = np.random.default_rng(0)
    n, width = 2000, 32
    z = [rng.normal(size=(n, width)) for _ in range(3)]
    x = z[0] @ rng.normal(size=(width, 64)) + 0.5 * rng.normal(size=(n, 64))
    model = _fit(x, z)
    assert model.weights_[0] >= 0.98
    assert model.encoder_scores_[0] > 0.9 > 0.05 > model.encoder_scores_[1:].max()


def test_a_repeated_encoder_shares_t_and_changes_nothing_else():
    x, z = _informative(4)
    base = _fit(x, z)
    best = int(np.argmax(base.weights_))
    repeated = _fit(x, z + [z[best]])
    assert repeated.score_ == base.score_
    assert repeated.weights_[best] == repeated.weights_[-1] == pytest.approx(0.5)


# -- chunked statistics: one computation, any input -------------------------------------------------

@pytest.mark.parametrize("mixture", ["per_encoder", "columns"])
def test_chunked_equals_in_memory_and_streamed(mixture, tmp_path):
    from emms.compute.streaming import stream_fit

    x, z = _informative(5, n=1000, d=20, widths=(7, 7, 3))
    whole = _fit(x, z, mixture=mixture, chunk_rows=10_000)
    for rows in (1, 33, 999):
        chunked = _fit(x, z, mixture=mixture, chunk_rows=rows)
        assert chunked.score_ == pytest.approx(whole.score_, rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(chunked.weights_, whole.weights_, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        streamed = stream_fit(x, z, "emms", chunk_rows=[100, 1, 450, 449], mixture=mixture)
    assert streamed.score == pytest.approx(whole.score_, rel=1e-10, abs=1e-12)
    # a float32 memmap gives the float64 answer of the same float32 values
    path = tmp_path / "x.f32"
    mapped = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    mapped[:] = x
    mapped.flush()
    from_map = _fit(np.memmap(path, dtype=np.float32, mode="r", shape=x.shape), z, mixture=mixture, chunk_rows=128)
    in_memory = _fit(x.astype(np.float32).astype(np.float64), z, mixture=mixture)
    assert from_map.score_ == pytest.approx(in_memory.score_, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("mixture, score", [("per_encoder", "gcv"), ("per_encoder", "in_sample"), ("columns", "gcv")])
def test_fewer_rows_than_columns_uses_the_row_side_and_agrees_with_the_statistics(mixture, score):
    """N < D: fit() takes the spectrum from X̃X̃ᵀ (N, N); fit_stats() can only use X̃ᵀX̃ (D, D). Same answer.
    A constant column and an offset check the row side's centring and column mask."""
    x, z = _informative(4, n=60, d=150, widths=(40, 25))
    x[:, 7] = 3.0
    x[:, :10] += 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        rows_side = EMMS(mixture=mixture, score=score).fit(x, z)
        statistics = EMMS(mixture=mixture, score=score).fit_stats(SufficientStats.from_arrays(x, z))
    assert rows_side.effective_rank_ == statistics.effective_rank_ == 59
    assert rows_side.score_ == pytest.approx(statistics.score_, rel=1e-8, abs=1e-10)
    np.testing.assert_allclose(rows_side.weights_, statistics.weights_, atol=1e-8)


def test_large_offsets_take_the_centred_path_and_lose_nothing():
    """Float64 chunks use raw products only when no column's offset would cost accuracy."""
    x, z = _informative(11, n=600)
    shifted = x + np.where(np.arange(x.shape[1]) % 2 == 0, 1e7, 0.0)    # half the columns far off zero
    for rows in (64, 10_000):
        assert _fit(shifted, [b + 1e6 for b in z], chunk_rows=rows).score_ == pytest.approx(_fit(x, z).score_, rel=1e-9)
    xs = (x - x.mean(0)) / x.std(0)  # the raw-product path agrees with a two-pass computation
    gram = SufficientStats.from_arrays(x, z, chunk_rows=50).standardised().gram
    np.testing.assert_allclose(gram, xs.T @ xs, rtol=0, atol=1e-10 * len(x))


def test_integer_and_float32_inputs_are_never_modified():
    x, z = _informative(6)
    xi = np.round(x * 10).astype(np.int32)
    z32 = [b.astype(np.float32) for b in z]
    before = [xi.copy()] + [b.copy() for b in z32]
    model = _fit(xi, z32, chunk_rows=50)
    reference = _fit(xi.astype(np.float64), [b.astype(np.float64) for b in z32])
    assert model.score_ == pytest.approx(reference.score_, rel=1e-10)
    assert all(np.array_equal(a, b) for a, b in zip([xi] + z32, before))


def test_nan_in_a_later_chunk_is_an_input_error():
    x, z = _informative(7)
    x[250, 3] = np.nan
    with pytest.raises(InputError, match=r"features: contains 1 NaN or Inf"):
        EMMS(chunk_rows=100).fit(x, z)
    z[2][150, 0] = np.inf
    with pytest.raises(InputError, match=r"f_labels\[2\]: contains 1 NaN or Inf"):
        EMMS(chunk_rows=100).fit(x[:200], [b[:200] for b in z])


def test_memmap_fit_stays_near_one_chunk_in_a_fresh_process(tmp_path):
    """Peak anonymous memory of EMMS().fit on float32 memmaps, measured by benchmarks/bench_emms.py in a
    fresh process: far below one float64 copy of the data (the old fit copied it whole)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_emms.py"
    out = subprocess.run([sys.executable, str(script), "--memmap", "120000x64x32x3", "--tmpdir", str(tmp_path)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < result["score"] <= 1
    float64_copy_mb = 2 * result["data_mb"]                    # 146 MB; one float64 chunk is about 32 MB
    assert result["traced_peak_mb"] < 0.4 * float64_copy_mb
    assert result["anon_growth_mb"] < 0.4 * float64_copy_mb


# -- the estimator API (scikit-learn) ---------------------------------------------------------------

def test_scikit_learn_estimator_api():
    from sklearn.base import BaseEstimator, clone

    est = EMMS(score="in_sample", mixture="columns", chunk_rows=64)
    assert isinstance(est, BaseEstimator)
    assert est.get_params() == {"solver": "exact", "score": "in_sample", "mixture": "columns", "tol": 1e-10,
                                "max_iter": 100_000, "chunk_rows": 64}
    assert repr(est) == "EMMS(chunk_rows=64, mixture='columns', score='in_sample')"
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    x, z = _informative(8)
    assert twin.fit(x, z).score_ == est.fit(x, z).score_
    assert est.set_params(mixture="per_encoder") is est and est.mixture == "per_encoder"


@pytest.mark.parametrize("kwargs, message", [
    ({"mixture": "mean"}, "mixture: expected one of per_encoder, columns"),
    ({"solver": "alternating"}, "solver: 'alternating' minimises the paper's column-wise mixture; pass mixture='columns'"),
    ({"chunk_rows": 0}, "chunk_rows: expected a positive integer or None"),
])
def test_bad_parameters(kwargs, message):
    x, z = _informative(9, n=40)
    with pytest.raises(InputError, match=message):
        EMMS(**kwargs).fit(x, z)


def test_fit_stats_refuses_statistics_standardised_for_the_other_mixture():
    x, z = _informative(10, n=60)
    stats = SufficientStats.from_arrays(x, z)
    with pytest.raises(InputError, match="stats: mixture='per_encoder' needs statistics standardised with labels='blocks'"):
        EMMS().fit_stats(stats.standardised())
    assert EMMS().fit_stats(stats.standardised(labels="blocks")).score_ == EMMS().fit_stats(stats).score_


# -- targets: the dtype decides ---------------------------------------------------------------------

def test_whole_number_floats_are_real_targets_unless_told():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    ages = np.round(rng.uniform(18, 80, size=500))           # whole-number floats
    from emms.metrics import infer_target_kind

    assert infer_target_kind(ages) == "real"
    assert infer_target_kind(ages.astype(int)) == "classes"
    as_real = emms.score(x, ages, metric="logme")
    assert as_real == emms.score(x, ages, metric="logme", target_kind="real")
    assert as_real != pytest.approx(emms.score(x, ages, metric="logme", target_kind="classes"))
    with pytest.raises(InputError, match="target_kind: metric 'hscore' .*pass target_kind='classes'"):
        emms.score(x, ages, metric="hscore")
    assert np.isfinite(emms.score(x, ages, metric="hscore", target_kind="classes"))


# -- BLAS threads while scoring ---------------------------------------------------------------------

def test_small_problems_are_scored_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    from emms.metrics import registry

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    small = np.zeros((100, 10))
    with registry.blas_limit(small):
        assert set(blas_threads()) <= {1}
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(100_000, 1_000), strides=(0, 0))  # N·D² = 1e11
    monkeypatch.setattr(registry.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    outside = blas_threads()
    with registry.blas_limit(huge):
        assert blas_threads() == outside
    monkeypatch.setattr(registry.os, "getloadavg", lambda: (99.0, 99.0, 99.0))  # a busy machine
    with registry.blas_limit(huge):
        assert set(blas_threads()) <= {1}
