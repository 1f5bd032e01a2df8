"""EMMS estimator: reference parity, exact == alternating, GCV derivation, regimes, invariances."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emms
from _part2_helpers import cases, records
from emms import EMMS, EmmsWarning, InputError
from emms.metrics._simplex import simplex_qp, sparsemax

REFERENCE_CASES = ("flabel", "flabel_cls", "flabel_sparse")


def _std(a):
    return (a - a.mean(0)) / a.std(0)


def _synthetic(seed, n, d_informative, d_random, width=16, noise=(1.0, 2.0, 4.0), rank=8):
    """Informative features (share a rank-`rank` signal with the F-labels), random features, F-labels."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, rank))
    f_labels = [signal @ rng.normal(size=(rank, width)) + rng.normal(scale=s, size=(n, width)) for s in noise]
    informative = signal @ rng.normal(size=(rank, d_informative)) + rng.normal(scale=2.0, size=(n, d_informative))
    return informative, rng.normal(size=(n, d_random)), f_labels


def _ridge_fit(x, target, ridge):
    """Brute-force ridge on standardised arrays: (residual, hat matrix)."""
    hat = x @ np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T)
    return target - hat @ target, hat


# -- reference parity (official solver) ----------------------------------------------------------

@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_official_solver_matches_reference_records(case):
    c, rec = cases(), records()[f"emms.EMMS.{case}.instrumented_weights"]
    y = c[f"{case}_Y"]
    y_before = y.copy()
    model = EMMS(solver="official").fit(c[f"{case}_X"], y)
    assert model.score_ == pytest.approx(rec["value"], rel=1e-8)
    assert model.score_ == pytest.approx(records()[f"emms.EMMS.{case}"]["value"], rel=1e-8)
    np.testing.assert_allclose(model.weights_, rec["lam"], rtol=0, atol=1e-10)
    assert model.objective_ == pytest.approx(rec["sse"], rel=1e-8)
    assert np.array_equal(y, y_before)  # the official code standardised Y in place; we do not


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_exact_objective_never_exceeds_official(case):
    c = cases()
    official = EMMS(solver="official").fit(c[f"{case}_X"], c[f"{case}_Y"])
    exact = EMMS(score="in_sample").fit(c[f"{case}_X"], c[f"{case}_Y"])
    assert exact.objective_ <= official.objective_
    assert exact.score_ >= official.score_ / official.label_width_**2  # same SSE, per-entry scale


def test_sparsemax_is_the_simplex_projection():
    rec = records()["emms.EMMS.flabel_sparse.instrumented_weights"]
    np.testing.assert_allclose(sparsemax(np.array(rec["lam_raw"])), rec["lam"], atol=1e-15)
    v = np.random.default_rng(0).normal(size=6)
    p = sparsemax(v)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    # projection: no other simplex point (random draws) is closer to v
    others = np.random.default_rng(1).dirichlet(np.ones(6), size=2000)
    assert np.linalg.norm(p - v) <= np.min(np.linalg.norm(others - v, axis=1))


# -- exact == alternating --------------------------------------------------------------------------

@pytest.mark.parametrize("case", REFERENCE_CASES)
@pytest.mark.parametrize("kind", ["gcv", "in_sample"])
def test_alternating_converges_to_exact(case, kind):
    c = cases()
    exact = EMMS(score=kind, mixture="columns").fit(c[f"{case}_X"], c[f"{case}_Y"])
    alternating = EMMS(solver="alternating", score=kind, mixture="columns").fit(c[f"{case}_X"], c[f"{case}_Y"])
    assert alternating.score_ == pytest.approx(exact.score_, rel=1e-6)
    np.testing.assert_allclose(alternating.weights_, exact.weights_, rtol=0, atol=1e-6)
    assert alternating.ridge_ == exact.ridge_
    history = np.array(alternating.objective_history_)
    assert len(history) > 1
    assert np.all(np.diff(history) <= 1e-12 * abs(history[0]))  # never increases
    assert alternating.objective_ == pytest.approx(exact.objective_, rel=1e-9)


# -- the GCV score: derivation checked by brute force ---------------------------------------------

def test_gcv_score_matches_brute_force_ridge_and_is_a_minimum():
    x, _, z = _synthetic(0, n=120, d_informative=10, d_random=1, width=6, noise=(1.0, 3.0))
    model = EMMS(mixture="columns").fit(x, z)
    xs, zs = _std(x), [_std(b) for b in z]
    n, width = x.shape[0], 6

    def gcv(ridge, weights):
        target = sum(w * b for w, b in zip(weights, zs))
        residual, hat = _ridge_fit(xs, target, ridge)
        return np.sum(residual**2) / n / (1 - (np.trace(hat) + 1) / n) ** 2 / width

    def penalised(ridge, weights):
        target = sum(w * b for w, b in zip(weights, zs))
        residual, hat = _ridge_fit(xs, target, ridge)
        coef = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ target)
        return np.sum(residual**2) + ridge * np.sum(coef**2)

    lam, t = model.ridge_, model.weights_
    assert -model.score_ == pytest.approx(gcv(lam, t), rel=1e-9)
    assert model.objective_ == pytest.approx(penalised(lam, t), rel=1e-9)
    # t minimises the penalised objective at λ (K = 2: a fine grid over the simplex)
    grid = [penalised(lam, (a, 1 - a)) for a in np.linspace(0, 1, 101)]
    assert model.objective_ <= min(grid) * (1 + 1e-12)
    # λ is a (local) GCV minimum, with t re-optimised at each λ
    for factor in (0.8, 1.25):
        best_t = min(((a, 1 - a) for a in np.linspace(0, 1, 201)), key=lambda w: penalised(lam * factor, w))
        assert gcv(lam * factor, best_t) >= -model.score_ * (1 - 1e-3)


def test_gcv_agrees_with_exact_leave_one_out():
    """GCV approximates leave-one-out error; on a small well-spread case they agree within 2 %."""
    x, _, z = _synthetic(1, n=150, d_informative=12, d_random=1, width=5, noise=(1.0, 3.0))
    model = EMMS(mixture="columns").fit(x, z)
    xs = _std(x)
    target = sum(w * _std(b) for w, b in zip(model.weights_, z))
    squared_errors = 0.0
    for i in range(len(x)):  # refit the ridge (with intercept) without row i
        keep = np.arange(len(x)) != i
        x_mean, y_mean = xs[keep].mean(0), target[keep].mean(0)
        xi, yi = xs[keep] - x_mean, target[keep] - y_mean
        coef = np.linalg.solve(xi.T @ xi + model.ridge_ * np.eye(xs.shape[1]), xi.T @ yi)
        squared_errors += np.sum((target[i] - y_mean - (xs[i] - x_mean) @ coef) ** 2)
    loo_score = -squared_errors / (len(x) * 5)
    assert model.score_ == pytest.approx(loo_score, rel=0.02)


def test_in_sample_score_is_the_plain_least_squares_residual():
    x, _, z = _synthetic(2, n=90, d_informative=7, d_random=1, width=4, noise=(0.5, 2.0))
    model = EMMS(score="in_sample", mixture="columns").fit(x, z)
    xs, zs = _std(x), [_std(b) for b in z]

    def rss(weights):
        target = sum(w * b for w, b in zip(weights, zs))
        coef = np.linalg.lstsq(xs, target, rcond=None)[0]
        return np.sum((xs @ coef - target) ** 2)

    assert model.ridge_ == 0.0
    assert -model.score_ * 90 * 4 == pytest.approx(rss(model.weights_), rel=1e-9)
    assert rss(model.weights_) <= min(rss((a, 1 - a)) for a in np.linspace(0, 1, 101)) * (1 + 1e-12)


def test_encoders_of_different_widths_are_padded_and_rescaled():
    x, _, z = _synthetic(3, n=100, d_informative=6, d_random=1, width=6, noise=(1.0, 2.0))
    z = [z[0], z[1][:, :3]]
    model = EMMS(score="in_sample", mixture="columns").fit(x, z)
    xs = _std(x)
    blocks = [_std(z[0]), np.pad(_std(z[1]) * np.sqrt(6 / 3), ((0, 0), (0, 3)))]
    target = sum(w * b for w, b in zip(model.weights_, blocks))
    residual = target - xs @ np.linalg.lstsq(xs, target, rcond=None)[0]
    assert model.label_width_ == 6
    assert -model.score_ == pytest.approx(np.sum(residual**2) / (100 * 6), rel=1e-9)
    with pytest.raises(InputError, match="f_labels: solver='official' needs every encoder to have the same width"):
        EMMS(solver="official").fit(x, z)


# -- the simplex QP -------------------------------------------------------------------------------

def _enumerated_qp(quad, linear):
    """Brute force: the best KKT point over every support (independent of the active-set code)."""
    k = quad.shape[0]
    best, best_value = None, np.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            system = np.block([[quad[np.ix_(s, s)], -np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(system, np.append(linear[s], 1.0), rcond=None)[0][:size]
            if sol.min() < -1e-12:
                continue
            t = np.zeros(k)
            t[s] = sol
            value = t @ quad @ t - 2 * linear @ t
            if value < best_value:
                best, best_value = t, value
    return best, best_value


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), rank=st.integers(1, 6), seed=st.integers(0, 10_000), with_linear=st.booleans())
def test_simplex_qp_matches_support_enumeration(k, rank, seed, with_linear):
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(k, min(rank, k)))
    quad = factor @ factor.T
    # b in the range of Q, as in EMMS (b = Zᵀu with Q = ZᵀZ), so every face problem is bounded
    linear = quad @ rng.normal(size=k) if with_linear else np.zeros(k)
    _, best_value = _enumerated_qp(quad, linear)
    for start in (None, rng.dirichlet(np.ones(k))):  # from the best vertex, or warm-started
        t = simplex_qp(quad, linear, start=start)
        assert t.min() >= 0 and t.sum() == pytest.approx(1.0, abs=1e-12)
        assert t @ quad @ t - 2 * linear @ t <= best_value + 1e-9 * max(1.0, abs(best_value))


# -- regimes (issues 2 and 10) --------------------------------------------------------------------

def test_small_n_default_orders_informative_above_random_in_20_of_20_seeds():
    wins = 0
    for seed in range(20):
        informative, random, z = _synthetic(seed, n=100, d_informative=300, d_random=300)
        with pytest.warns(EmmsWarning, match="small-N regime"):
            good = EMMS().fit(informative, z)
        with pytest.warns(EmmsWarning, match="small-N regime"):
            bad = EMMS().fit(random, z)
        assert good.regime_ == bad.regime_ == "small_n"
        wins += good.score_ > bad.score_
    assert wins == 20


def test_small_n_in_sample_residual_collapses_to_zero():
    informative, random, z = _synthetic(0, n=100, d_informative=300, d_random=300)
    with pytest.warns(EmmsWarning, match="prefer score='gcv'"):
        scores = [EMMS(score="in_sample", mixture="columns").fit(x, z).score_ for x in (informative, random)]
    assert scores == [0.0, 0.0]  # the plain residual cannot tell them apart
    with pytest.warns(EmmsWarning, match="small-N regime"):
        r2 = [EMMS(score="in_sample").fit(x, z).score_ for x in (informative, random)]
    assert r2 == [1.0, 1.0]  # in-sample R² of an interpolating fit


def test_default_is_fair_across_widths_but_in_sample_is_not():
    """Issue 10: a wide random-feature model vs a narrow informative one."""
    for seed in range(3):
        narrow, wide, z = _synthetic(seed, n=400, d_informative=12, d_random=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmmsWarning)
            default = [EMMS().fit(x, z).score_ for x in (narrow, wide)]
            in_sample = [EMMS(score="in_sample").fit(x, z).score_ for x in (narrow, wide)]
        assert default[0] > default[1]
        assert in_sample[0] < in_sample[1]


# -- invariances and properties -------------------------------------------------------------------

def _fits(x, z, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        return EMMS(**kw).fit(x, z)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 60), d=st.integers(1, 12), widths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       seed=st.integers(0, 10_000), kind=st.sampled_from(["gcv", "in_sample"]),
       mixture=st.sampled_from(["per_encoder", "columns"]))
def test_properties_over_random_shapes(n, d, widths, seed, kind, mixture):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    z = [x[:, :1] * rng.normal() + rng.normal(size=(n, w)) for w in widths]
    model = _fits(x, z, score=kind, mixture=mixture)
    assert np.isfinite(model.score_)
    assert (0 <= model.score_ <= 1) if mixture == "per_encoder" else model.score_ <= 0
    assert model.weights_.shape == (len(widths),)
    assert model.weights_.min() >= 0 and model.weights_.sum() == pytest.approx(1.0)
    # float32 input: same answer up to float32 rounding of the inputs
    model32 = _fits(x.astype(np.float32), [b.astype(np.float32) for b in z], score=kind, mixture=mixture)
    assert model32.score_ == pytest.approx(model.score_, rel=1e-3, abs=1e-6)
    # scaling a feature column and permuting the samples change nothing
    scaled = x.copy()
    scaled[:, 0] *= 1000.0
    perm = rng.permutation(n)
    assert _fits(scaled, z, score=kind, mixture=mixture).score_ == pytest.approx(model.score_, rel=1e-7, abs=1e-10)
    permuted = _fits(x[perm], [b[perm] for b in z], score=kind, mixture=mixture)
    assert permuted.score_ == pytest.approx(model.score_, rel=1e-7, abs=1e-10)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 8), extra=st.integers(10, 40), widths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       seed=st.integers(0, 10_000), kind=st.sampled_from(["gcv", "in_sample"]))
def test_alternating_reaches_the_exact_optimum_on_random_shapes(d, extra, widths, seed, kind):
    # N >= 3D + 10 keeps the alternation's linear rate away from 1 (it crawls when X nearly
    # interpolates the F-labels and the objective is flat in t).
    rng = np.random.default_rng(seed)
    n = 3 * d + extra
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    z = [x[:, :1] * rng.normal() + rng.normal(size=(n, w)) for w in widths]
    exact = _fits(x, z, score=kind, mixture="columns")
    alternating = _fits(x, z, score=kind, solver="alternating", mixture="columns")
    assert alternating.converged_
    assert alternating.score_ == pytest.approx(exact.score_, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(alternating.weights_, exact.weights_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["gcv", "in_sample"])
def test_repeating_one_encoder_changes_nothing(kind):
    x, _, z = _synthetic(4, n=150, d_informative=10, d_random=1, width=8)
    base = EMMS(score=kind).fit(x, z)
    repeated = EMMS(score=kind).fit(x, z + [z[0]])
    assert repeated.score_ == pytest.approx(base.score_, rel=1e-9)
    split = repeated.weights_
    np.testing.assert_allclose([split[0] + split[3], split[1], split[2]], base.weights_, atol=1e-7)


def test_list_and_stacked_f_labels_agree_and_inputs_are_untouched():
    c = cases()
    x, y = c["flabel_X"].astype(np.float32), c["flabel_Y"]
    x_before, y_before = x.copy(), y.copy()
    stacked = EMMS().fit(x, y)
    listed = EMMS().fit(x, [y[:, :, k] for k in range(3)])
    assert stacked.score_ == listed.score_
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)


def test_registry_and_functional_api():
    c = cases()
    info = emms.get_metric("emms")
    assert info.targets == frozenset({"flabels"}) and info.streamable and not info.pool_relative
    # emms.score caps BLAS at one thread for small problems (registry.blas_limit), a direct fit does not:
    # equal up to the order of floating-point sums
    value = emms.score(c["flabel_X"], c["flabel_Y"], metric="emms", score="in_sample")
    assert value == pytest.approx(EMMS(score="in_sample").fit(c["flabel_X"], c["flabel_Y"]).score_, rel=1e-12)
    assert emms.score(c["flabel_X"], c["flabel_Y"]) == pytest.approx(EMMS().fit(c["flabel_X"], c["flabel_Y"]).score_,
                                                                      rel=1e-12)


# -- bad input (issue 2, item 7) --------------------------------------------------------------------

def _good():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 5)), [rng.normal(size=(30, 4)), rng.normal(size=(30, 4))]


BAD_INPUTS = [
    ("mismatched N", lambda x, z: (x, [z[0], z[1][:-1]]), r"f_labels\[1\]: expected 30 rows"),
    ("NaN", lambda x, z: (np.where(np.eye(30, 5) > 0, np.nan, x), z), "features: contains"),
    ("Inf in F-labels", lambda x, z: (x, [z[0], np.full_like(z[1], np.inf)]), r"f_labels\[1\]: contains"),
    ("one sample", lambda x, z: (x[:1], [b[:1] for b in z]), "features: expected at least 2 samples"),
    ("non-numeric", lambda x, z: (x.astype(str), z), "features: expected a numeric array"),
    ("1-D features", lambda x, z: (x[:, 0], z), "features: expected a 2-D array"),
    ("3-D features", lambda x, z: (x[:, :, None], z), "features: expected a 2-D array"),
    ("no F-labels", lambda x, z: (x, []), "f_labels: expected at least one F-label array"),
    ("constant features", lambda x, z: (np.ones_like(x), z), "features: every column is constant"),
    ("constant F-labels", lambda x, z: (x, [z[0], np.ones_like(z[1])]), r"f_labels\[1\]: every column is constant"),
]


@pytest.mark.parametrize("solver", ["exact", "alternating", "official"])
@pytest.mark.parametrize("label, corrupt, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_one_clear_input_error(label, corrupt, message, solver):
    x, z = corrupt(*_good())
    if solver == "official" and label == "constant F-labels":
        message = None  # official zeroes them; checked below
    mixture = "columns" if solver == "alternating" else "per_encoder"
    if message is None:
        with pytest.warns(EmmsWarning, match="constant"):
            EMMS(solver=solver, mixture=mixture).fit(x, z)
        return
    with pytest.raises(InputError, match=message):
        EMMS(solver=solver, mixture=mixture).fit(x, z)


def test_constant_columns_are_dropped_with_a_warning():
    x, z = _good()
    with_constants = np.column_stack([x, np.full(30, 3.0)])
    z_const = [np.column_stack([z[0], np.full(30, -1.0)]), z[1]]
    for solver in ("exact", "official"):
        clean = EMMS(solver=solver).fit(x, z)
        with pytest.warns(EmmsWarning, match="features: dropped 1 constant column"):
            dirty = EMMS(solver=solver).fit(with_constants, z)
        assert dirty.score_ == pytest.approx(clean.score_, rel=1e-12)
    with pytest.warns(EmmsWarning, match=r"f_labels\[0\]: ignored 1 constant column"):
        EMMS().fit(x, z_const)


@pytest.mark.parametrize("kwargs, message", [
    ({"solver": "fast"}, "solver: expected one of exact, alternating, official"),
    ({"score": "loo"}, "score: expected one of gcv, in_sample"),
    ({"tol": 0}, "tol: expected a positive number"),
    ({"max_iter": 0}, "max_iter: expected a positive integer"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(InputError, match=message):
        EMMS(**kwargs).fit(*_good())


def test_official_solver_needs_raw_arrays():
    from emms.metrics.stats import SufficientStats

    with pytest.raises(InputError, match="solver: 'official' needs the raw arrays"):
        EMMS(solver="official").fit_stats(SufficientStats.from_arrays(*_good()))
