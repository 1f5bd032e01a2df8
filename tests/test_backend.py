"""Torch backend: statistics and EMMS's spectral solve on torch tensors agree with numpy."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from emms.compute.backend import emms_fit_torch, score_on_device, torch_sufficient_stats  # noqa: E402
from emms.errors import InputError, ResourceError  # noqa: E402
from emms.metrics.emms import EMMS  # noqa: E402
from emms.metrics.stats import SufficientStats, in_eigenbasis  # noqa: E402


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n, d = 500, 16
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, d)) + 0.5 * y[:, None] + 20.0
    x[:, 3] = x[:, 2] * 2 - 1  # a rank deficiency: an eigenvalue at the noise floor
    z = [rng.normal(size=(n, 6)) + y[:, None], rng.normal(size=(n, 3)) - y[:, None], rng.normal(size=(n, 6))]
    return x, z


def test_torch_statistics_equal_numpy_statistics(data):
    x, z = data
    expected = SufficientStats.from_arrays(x, z).standardised()
    got = torch_sufficient_stats(x, z, chunk_rows=[3, 200, 297]).standardised()
    for field in ("gram", "cross", "label_inner"):
        a, b = getattr(expected, field), getattr(got, field)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max())
    rotated = in_eigenbasis(expected)
    np.testing.assert_allclose(np.sort(np.diag(rotated.gram)), np.linalg.eigvalsh(expected.gram),
                               atol=1e-10 * expected.gram.max())


@pytest.mark.parametrize("solver,score,mixture", [("exact", "gcv", "per_encoder"), ("exact", "in_sample", "per_encoder"),
                                                   ("exact", "gcv", "columns"), ("alternating", "gcv", "columns")])
def test_torch_emms_matches_numpy_float64(data, solver, score, mixture):
    x, z = data
    expected = EMMS(solver=solver, score=score, mixture=mixture).fit(x, z)
    got = emms_fit_torch(x, z, chunk_rows=128, solver=solver, score=score, mixture=mixture)
    assert got.score_ == pytest.approx(expected.score_, rel=1e-10)
    np.testing.assert_allclose(got.weights_, expected.weights_, atol=1e-8)


def test_torch_float32_accumulation_within_documented_tolerance(data):
    x, z = data
    expected = EMMS().fit(x, z).score_
    assert emms_fit_torch(x, z, dtype="float32", chunk_rows=256).score_ == pytest.approx(expected, rel=1e-5)


def test_backend_errors(data):
    x, z = data
    with pytest.raises(InputError, match="dtype: expected one of"):
        torch_sufficient_stats(x, z, dtype="float16")
    with pytest.raises(InputError, match="device: expected"):
        torch_sufficient_stats(x, z, device="not-a-device")
    with pytest.raises(InputError, match="device: metric 'hscore' accumulates its statistics with numpy"):
        score_on_device(x, np.arange(x.shape[0]) % 3, "hscore", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ResourceError, match="no CUDA GPU is available"):
            emms_fit_torch(x, z, device="cuda")


def test_device_chunks_run_the_same_statistics_code(data):
    """A torch chunk goes through SufficientStats' one chunk computation: equal to numpy's to 1e-10."""
    x, z = data
    expected = SufficientStats().update(x, z).standardised(labels="columns")
    got = SufficientStats().update(torch.as_tensor(x), [torch.as_tensor(b) for b in z]).standardised(labels="columns")
    for field in ("gram", "cross", "label_inner"):
        a, b = getattr(expected, field), getattr(got, field)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max())
    with pytest.raises(InputError, match="NaN or Inf"):
        bad = torch.as_tensor(x).clone()
        bad[4, 2] = float("nan")
        SufficientStats().update(bad, [torch.as_tensor(b) for b in z])


def test_score_on_device_is_the_streamed_score_with_weights(data):
    x, z = data
    expected = EMMS().fit(x, z)
    got = score_on_device(x, z, "emms", device="cpu", chunk_rows=128)
    assert got.score == pytest.approx(expected.score_, rel=1e-10)
    np.testing.assert_allclose(got.weights, expected.weights_, atol=1e-8)
