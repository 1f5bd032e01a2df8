"""Sufficient statistics: chunked accumulation and merging equal the in-memory result."""

from __future__ import annotations

import numpy as np
import pytest

from emms import EMMS, EmmsWarning, InputError
from emms.metrics._products import cross_factors, cross_product
from emms.metrics.stats import SufficientStats


def _data(seed: int = 0, n: int = 211, d: int = 9, widths=(5, 3, 5), offset: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + offset + rng.normal(size=d)
    z = [x[:, :3] @ rng.normal(size=(3, w)) + rng.normal(size=(n, w)) + offset for w in widths]
    return x, z


def _standard_reference(x, z):
    """Two-pass standardisation of whole arrays, widths reconciled as documented."""
    xs = (x - x.mean(0)) / x.std(0)
    width = max(b.shape[1] for b in z)
    blocks = []
    for b in z:
        bs = (b - b.mean(0)) / b.std(0) * np.sqrt(width / b.shape[1])
        blocks.append(np.pad(bs, ((0, 0), (0, width - b.shape[1]))))
    gram = xs.T @ xs
    cross = np.stack([xs.T @ b for b in blocks])
    inner = np.array([[np.sum(a * b) for b in blocks] for a in blocks])
    return gram, cross, inner


def _assert_close(stats, gram, cross, inner, rtol):
    for got, want in ((stats.gram, gram), (stats.cross, cross), (stats.label_inner, inner)):
        scale = np.max(np.abs(want))
        assert np.max(np.abs(got - want)) <= rtol * scale


def test_seven_uneven_chunks_equal_in_memory():
    x, z = _data()
    cuts = [0, 3, 40, 41, 90, 150, 151, 211]  # 7 chunks of sizes 3, 37, 1, 49, 60, 1, 60
    stats = SufficientStats()
    for a, b in zip(cuts[:-1], cuts[1:]):
        stats.update(x[a:b], [block[a:b] for block in z])
    assert stats.n_samples == 211
    in_memory = SufficientStats.from_arrays(x, z).standardised()
    chunked = stats.standardised()
    _assert_close(chunked, in_memory.gram, in_memory.cross, in_memory.label_inner, 1e-10)
    _assert_close(chunked, *_standard_reference(x, z), 1e-10)


def test_merge_of_partial_results_is_order_free():
    x, z = _data(seed=1)
    parts = [SufficientStats().update(x[a:b], [blk[a:b] for blk in z]) for a, b in ((0, 70), (70, 71), (71, 211))]
    forward = SufficientStats().merge(parts[0]).merge(parts[1]).merge(parts[2]).standardised()
    backward = SufficientStats().merge(parts[2]).merge(parts[1]).merge(parts[0]).standardised()
    _assert_close(forward, backward.gram, backward.cross, backward.label_inner, 1e-12)


def test_large_offsets_do_not_cancel():
    # Columns around 1e6: raw sums of squares would lose ~6 digits; centred co-moments do not.
    x, z = _data(seed=2, offset=1e6)
    stats = SufficientStats()
    for a in range(0, 211, 30):
        stats.update(x[a:a + 30], [blk[a:a + 30] for blk in z])
    _assert_close(stats.standardised(), *_standard_reference(x, z), 1e-8)


def test_exact_solver_runs_from_statistics_alone():
    x, z = _data(seed=3, n=300)
    stats = SufficientStats()
    for a in range(0, 300, 64):
        stats.update(x[a:a + 64].astype(np.float32), [blk[a:a + 64] for blk in z])
    for kind in ("gcv", "in_sample"):
        direct = EMMS(score=kind).fit(x.astype(np.float32), z)
        streamed = EMMS(score=kind).fit_stats(stats)
        assert streamed.score_ == pytest.approx(direct.score_, rel=1e-9)
        np.testing.assert_allclose(streamed.weights_, direct.weights_, atol=1e-8)


def test_constant_columns_are_excluded_with_a_warning():
    x, z = _data(seed=4)
    x = np.column_stack([x, np.full(len(x), 7.0)])
    z[1] = np.column_stack([z[1][:, :1], np.full(len(x), -2.0), z[1][:, 1:]])
    with pytest.warns(EmmsWarning, match="constant"):
        stats = SufficientStats.from_arrays(x, z).standardised()
    assert stats.n_features == x.shape[1] - 1
    assert stats.label_masks[1].tolist() == [True, False, True, True]
    assert np.all(stats.cross[1, :, 1] == 0)  # the constant column keeps its slot, as zeros


@pytest.mark.parametrize("x_chunk, z_chunks, match", [
    (np.ones((4, 3)), [np.ones((4, 5))], "x_chunk: expected 9 feature columns"),
    (np.ones((4, 9)), [np.ones((4, 5)), np.ones((4, 3))], r"z_chunks: expected F-label widths \[5, 3, 5\]"),
    (np.ones((4, 9)), [np.ones((3, 5))] * 3, r"z_chunks\[0\]: expected 4 rows"),
    (np.full((4, 9), np.nan), [np.ones((4, 5))] * 3, "x_chunk: contains"),
])
def test_update_rejects_inconsistent_chunks(x_chunk, z_chunks, match):
    x, z = _data()
    stats = SufficientStats().update(x[:10], [b[:10] for b in z])
    with pytest.raises(InputError, match=match):
        stats.update(x_chunk, z_chunks)


def test_inputs_are_not_modified():
    x, z = _data(seed=5)
    x_copy, z_copy = x.copy(), [b.copy() for b in z]
    SufficientStats().update(x, z).merge(SufficientStats.from_arrays(x, z)).standardised()
    assert np.array_equal(x, x_copy) and all(np.array_equal(a, b) for a, b in zip(z, z_copy))


def test_too_few_samples_and_wrong_merge_argument():
    x, z = _data()
    with pytest.raises(InputError, match="at least 2 samples"):
        SufficientStats().update(x[:1], [b[:1] for b in z]).standardised()
    with pytest.raises(InputError, match="other: expected a SufficientStats"):
        SufficientStats().merge(x)


def _class_level(n: int, d: int, columns: int, classes: int, seed: int = 0):
    """Features (n, d) and class-level targets: each row is its class's (columns,) vector."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    labels = rng.integers(0, classes, n)
    return x, rng.normal(size=(classes, columns))[labels], labels


@pytest.mark.parametrize("classes", [1, 7, 40])
def test_cross_product_groups_repeated_target_rows(classes):
    x, y, labels = _class_level(n=400, d=11, columns=32, classes=classes)
    factors = cross_factors(x, y)
    assert len(factors) == 2 and factors[1].shape == (np.unique(labels).size, 32)
    np.testing.assert_allclose(cross_product(x, y), x.T @ y, rtol=1e-12, atol=1e-12)


def test_cross_product_keeps_the_plain_product_for_distinct_rows_or_few_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    distinct = rng.normal(size=(300, 40))
    assert len(cross_factors(x, distinct)) == 1
    _, few_columns, _ = _class_level(n=300, d=5, columns=3, classes=4)
    assert len(cross_factors(x, few_columns)) == 1
    np.testing.assert_allclose(cross_product(x, distinct), x.T @ distinct, rtol=1e-12)


def test_cross_product_is_exact_when_the_grouping_projection_collides():
    # Rows that differ only far below the rounding of a huge first entry project to the same
    # value; the exact check must catch it and group the rows themselves.
    rng = np.random.default_rng(2)
    base = np.zeros((2, 20))
    base[:, 0] = 1e20
    base[1, 1] = 1.0
    labels = rng.integers(0, 2, 200)
    y = base[labels]
    x = rng.normal(size=(200, 6))
    factors = cross_factors(x, y)
    assert len(factors) == 2 and factors[1].shape[0] == 2
    np.testing.assert_allclose(cross_product(x, y), x.T @ y, rtol=1e-12)
    np.testing.assert_allclose(cross_product(x, y)[:, 1], x[labels == 1].sum(axis=0), rtol=1e-12)
