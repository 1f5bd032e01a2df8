"""Streamed (out-of-core) scores equal the in-memory ones; sources, accumulators, subsampling, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from emms.errors import EmmsWarning, InputError
from emms.metrics import get_metric, score, score_pool
from emms.metrics.emms import EMMS
from emms.metrics.hscore import hscore_reg_from_moments
from emms.compute.store import Store
from emms.metrics import available_metrics
from emms.metrics.moments import ClassMoments
from emms.metrics.protocol import MetricStream
from emms.compute.plans import tree_reduce
from emms.compute.sources import chunk_bounds, read_rows
from emms.compute.streaming import (IndexedRows, open_source, store_source, stream_fit, stream_score, stream_score_pool,
                            subsample_rows)

N, D, C = 420, 10, 4
UNEVEN = [1, 97, 3, 200, 119]  # sums to N


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, C, N)
    labels[:3] = np.arange(3)
    features = (rng.normal(size=(N, D)) + 0.7 * labels[:, None] + 50.0).astype(np.float32)  # large offset
    flabels = [rng.normal(size=(N, 6)) + labels[:, None], rng.normal(size=(N, 4)) - 0.3 * labels[:, None]]
    probs = rng.dirichlet(np.ones(5), size=N)
    return {"x": features, "y": labels, "z": flabels, "probs": probs, "real": rng.normal(size=(N, 3))}


@pytest.fixture(scope="module")
def npy_path(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "features.npy"
    np.save(path, data["x"])
    return path


CASES = [
    ("emms", "z", {}), ("emms", "z", {"score": "in_sample"}), ("logme_flabels", "z", {}),
    ("logme_flabels", "z", {"combine": "concatenated"}), ("logme", "y", {}), ("logme", "real", {}),
    ("logme", "y", {"solver": "icml"}), ("hscore", "y", {}), ("hscore_reg", "y", {}), ("gbc", "y", {}),
    ("gbc", "y", {"gaussian": "diagonal"}), ("transrate", "y", {}), ("transrate", "y", {"variant": "official"}),
    ("leep", "y", {"source_probs": "probs"}), ("nce", "y", {"source_probs": "probs"}),
]


@pytest.mark.parametrize("metric,target,options", CASES, ids=[f"{m}-{t}-{'-'.join(map(str, o.values()))}"
                                                               for m, t, o in CASES])
def test_streamed_equals_in_memory_with_uneven_chunks(data, npy_path, metric, target, options):
    opts = {k: (data[v] if k == "source_probs" else v) for k, v in options.items()}
    expected = score(data["x"], data[target], metric, **opts)
    streamed = stream_score(npy_path, data[target], metric, chunk_rows=UNEVEN, **opts)
    assert streamed == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert stream_score(data["x"], data[target], metric, chunk_rows=64, **opts) == pytest.approx(expected, rel=1e-9)


def test_streamable_derives_from_the_metric_modules_stream():
    streamable = {info.name for info in available_metrics() if info.streamable}
    assert streamable == {m for m, _, _ in CASES} | {"hscore_reg"}
    for name in streamable:
        stream = get_metric(name).stream
        assert issubclass(stream, MetricStream) and stream.__module__ == get_metric(name).function.__module__, name
    assert get_metric("knn").stream is None and not get_metric("parc").streamable


def test_emms_weights_and_zarr_store_and_indexed_sources(data, tmp_path):
    import zarr

    expected = EMMS().fit(data["x"], data["z"])
    zpath = tmp_path / "x.zarr"
    zarr.open(str(zpath), mode="w", shape=data["x"].shape, chunks=(50, D), dtype="f4")[:] = data["x"]
    store = Store(tmp_path / "cache")
    key = store.key(kind="features", model="m")
    store.put(key, data["x"], {"kind": "features"})
    for source in (zpath, store_source(store, key)):
        result = stream_fit(source, data["z"], "emms", chunk_rows=UNEVEN)
        assert result.score == pytest.approx(expected.score_, rel=1e-9)
        np.testing.assert_allclose(result.weights, expected.weights_, atol=1e-8)
    # class-level F-labels: row i is table[label_i]
    tables = [np.random.default_rng(1).normal(size=(C, 5)), np.random.default_rng(2).normal(size=(C, 3))]
    dense = [t[data["y"]] for t in tables]
    indexed = [IndexedRows(t, data["y"]) for t in tables]
    assert stream_score(data["x"], indexed, "emms", chunk_rows=UNEVEN) == pytest.approx(
        EMMS().fit(data["x"], dense).score_, rel=1e-9)


def test_inputs_are_not_modified(data):
    x, z = data["x"].copy(), [b.copy() for b in data["z"]]
    stream_score(x, z, "emms", chunk_rows=UNEVEN)
    stream_score(x, data["y"], "transrate", chunk_rows=UNEVEN, variant="official")
    np.testing.assert_array_equal(x, data["x"])
    for a, b in zip(z, data["z"]):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.booleans())
@example([1, 1], False)  # two rows: the third-moment sum cancels to 0, found by hypothesis in CI
def test_class_moments_merge_equals_direct_moments(sizes, full):
    rng = np.random.default_rng(len(sizes))
    n = sum(sizes)
    x = rng.normal(size=(n, 3)) * [1, 10, 0.1] + 1e3
    codes = rng.integers(0, 3, n)
    parts = [ClassMoments(3, 3, per_class="full" if full else "diag", norm_moments=True).update(x[a:b], codes[a:b])
             for a, b in chunk_bounds(n, sizes)]
    merged = tree_reduce(parts, lambda left, right: left.merge(right))
    u = x - x.mean(axis=0)
    norms = np.einsum("nd,nd->n", u, u)
    assert merged.n_samples == n
    np.testing.assert_allclose(merged.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(merged.comoment, u.T @ u, rtol=1e-9, atol=1e-9 * np.abs(u.T @ u).max())
    # atol on the terms' size: the sum itself can cancel to ~0 (two rows: u_1 = -u_2, so it is exactly 0)
    np.testing.assert_allclose(merged.norm_cubed, u.T @ norms, rtol=1e-7, atol=1e-7 * (np.abs(u).T @ norms).max())
    assert merged.norm_fourth == pytest.approx(norms @ norms, rel=1e-9)
    for c in range(3):
        rows = x[codes == c]
        assert merged.counts[c] == rows.shape[0]
        if rows.shape[0]:
            v = rows - rows.mean(axis=0)
            np.testing.assert_allclose(merged.class_means[c], rows.mean(axis=0), rtol=1e-13)
            expected = v.T @ v if full else (v**2).sum(axis=0)
            np.testing.assert_allclose(merged.class_comoments[c], expected, rtol=1e-8, atol=1e-8 * (1 + np.abs(expected).max()))


def test_ledoit_wolf_from_moments_matches_scikit_learn(data):
    x = data["x"].astype(np.float64)
    u = x - x.mean(axis=0)
    shrunk = LedoitWolf().fit(x)
    counts = np.bincount(data["y"])
    offsets = np.stack([u[data["y"] == c].mean(axis=0) for c in range(C)])
    between = (offsets.T * counts) @ offsets / (N - 1)
    expected = (1 - shrunk.shrinkage_) * np.trace(np.linalg.pinv(shrunk.covariance_) @ between)
    norms = np.einsum("nd,nd->n", u, u)
    assert hscore_reg_from_moments(u.T @ u, offsets, counts, norms @ norms) == pytest.approx(expected, rel=1e-9)


def test_tree_reduce_is_the_balanced_pairwise_tree():
    def level_by_level(items):
        while len(items) > 1:
            items = [f"({items[i]}+{items[i + 1]})" if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
        return items[0]

    for n in range(1, 12):
        leaves = [str(i) for i in range(n)]
        assert tree_reduce(leaves, lambda a, b: f"({a}+{b})") == level_by_level(leaves)


def test_non_streamable_metric_uses_a_seeded_stratified_subsample(data):
    x, y = data["x"], data["y"]
    assert stream_score(x, y, "knn", chunk_rows=UNEVEN) == score(x, y, "knn")  # N <= max_rows: all rows
    with pytest.warns(EmmsWarning, match="stratified subsample of"):
        sub = stream_score(x, y, "knn", max_rows=200, seed=3, chunk_rows=64)
    rows = subsample_rows(y, N, 200, 3, stratify=True)
    assert np.array_equal(np.unique(y[rows]), np.unique(y))
    assert sub == score(x[rows], y[rows], "knn")
    np.testing.assert_array_equal(read_rows(open_source(x), rows, chunk_rows=37), x[rows])


def test_pool_relative_metric_streams_on_a_shared_subsample(data):
    rng = np.random.default_rng(3)
    pool = {"a": data["x"], "b": data["x"][:, :5] + rng.normal(size=(N, 5)).astype(np.float32)}
    assert stream_score_pool(pool, data["y"], "etran") == pytest.approx(score_pool(pool, data["y"], "etran"), rel=1e-12)
    with pytest.raises(InputError, match="pool-relative"):
        stream_score(data["x"], data["y"], "etran")


@pytest.mark.parametrize("call,pattern", [
    (lambda d, p: stream_score(p, d["y"][:-1], "hscore"), "target: expected 420 labels"),
    (lambda d, p: stream_score(p, [b[:-2] for b in d["z"]], "emms"), r"f_labels\[0\]: has 418 rows"),
    (lambda d, p: stream_score(p, d["y"], "hscore", chunk_rows=[10, 10]), "chunk_rows: expected"),
    (lambda d, p: stream_score(p, d["y"], "hscore", chunk_rows=0), "chunk_rows: expected a positive integer"),
    (lambda d, p: stream_score(p.with_name("missing.npy"), d["y"], "hscore"), "features: file not found"),
    (lambda d, p: stream_score(d["x"][:, 0], d["y"], "hscore"), "features: expected a 2-D array"),
    (lambda d, p: stream_score(p, d["y"], "leep"), "source_probs: metric 'leep' needs"),
    (lambda d, p: stream_score(p, d["y"], "leep", source_probs=d["probs"] * 2), "source_probs: expected probabilities"),
    (lambda d, p: stream_score(p, d["y"], "emms"), "target: metric 'emms' accepts"),
    (lambda d, p: stream_score(p, d["y"], "knn", max_rows=1), "max_rows: expected an integer >= 2"),
    (lambda d, p: stream_score(p, d["y"], "gbc", gaussian="full"), "gaussian: expected one of"),
    (lambda d, p: stream_score(p, d["z"], "emms", solver="official"), "solver: 'official' needs the raw arrays"),
])
def test_bad_input_names_the_argument(data, npy_path, call, pattern):
    with pytest.raises(InputError, match=pattern):
        call(data, npy_path)


def test_bad_files_are_input_errors(tmp_path, data):
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(data["x"]))
    with pytest.raises(InputError, match="C-ordered"):
        stream_score(fortran, data["y"], "hscore")
    truncated = tmp_path / "t.npy"
    np.save(truncated, data["x"])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        stream_score(truncated, data["y"], "hscore")
    bad = data["x"].copy()
    bad[5, 2] = np.nan
    with pytest.raises(InputError, match="features: contains 1 NaN"):
        stream_score(bad, data["y"], "hscore", chunk_rows=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="zarr"):
            stream_score(tmp_path, data["y"], "hscore")
