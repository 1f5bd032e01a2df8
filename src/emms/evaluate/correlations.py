"""Agreement between transferability scores and fine-tuned ground truth, over a pool of models.

Every function takes ``scores`` (M,) — one transferability score per candidate model, higher
meaning "predicted to transfer better" — and ``truth`` (M,) — the measured fine-tuned performance
of the same models in the same order, higher is better.

Weighted Kendall tau comes in two variants that papers mix up; they give different numbers on the
same data (e.g. Model Spider's Aircraft LEEP: -0.070 symmetric vs 0.221 truth-weighted), so the
variant is always named:

``symmetric``       ``scipy.stats.weightedtau(scores, truth)`` with scipy's defaults (``rank=True``,
                    hyperbolic weigher 1/(r+1)): the average of the taus weighted by each
                    argument's order, hence symmetric. Used by SFDA, PED, EMMS, NCTI, ETran,
                    TLlib's README and the tmlr benchmark.
``truth_weighted``  ``scipy.stats.weightedtau(truth, scores, rank=None)``: pairs are weighted by the
                    models' rank in the ground truth only (ties in truth broken by score). Used by
                    Model Spider's README (``utils.measure_test(labels, outputs)``).

Reference: Vigna, "A weighted correlation index for rankings with ties", WWW 2015.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from emms._validation import as_float_vector, check_seed
from emms.errors import InputError

WEIGHTED_TAU_VARIANTS = ("symmetric", "truth_weighted")
#: Fewest models a rank correlation means something on: with 2 models every one of them is +-1.
MIN_MODELS = 3
#: Fewest models for a bootstrap interval over models: with 3 or 4, a large share of the resamples
#: repeat one or two models, and the interval collapses (e.g. [-1.00, -1.00] with 3 models).
MIN_MODELS_INTERVAL = 5

PairStatistic = Callable[[np.ndarray, np.ndarray], float]


def _pair(scores: object, truth: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, truth) pair: finite 1-D float64 vectors of the same length M >= 2."""
    s = as_float_vector(scores, "scores")
    t = as_float_vector(truth, "truth")
    if s.shape[0] != t.shape[0]:
        raise InputError(f"truth: has {t.shape[0]} models but scores has {s.shape[0]}; expected one value per model")
    return s, t


def weighted_tau(scores: object, truth: object, *, variant: str = "symmetric") -> float:
    """Weighted Kendall tau between scores (M,) and truth (M,), hyperbolic weigher 1/(r+1).

    ``variant="symmetric"`` is ``weightedtau(scores, truth)`` (rank=True, scipy's default);
    ``variant="truth_weighted"`` is ``weightedtau(truth, scores, rank=None)`` (Model Spider's).
    Returns NaN when either vector is constant.
    """
    s, t = _pair(scores, truth)
    if variant == "symmetric":
        return float(stats.weightedtau(s, t).statistic)
    if variant == "truth_weighted":
        return float(stats.weightedtau(t, s, rank=None).statistic)
    raise InputError(f"variant: expected one of {', '.join(WEIGHTED_TAU_VARIANTS)}, got {variant!r}")


def weighted_tau_batch(scores: np.ndarray, truth: np.ndarray, *, variant: str = "symmetric") -> np.ndarray:
    """:func:`weighted_tau` of every row of scores (B, M) against the same row of truth (B, M) -> (B,).

    Vectorised for bootstrap resamples (scipy has no batched form); equal to scipy's value row by
    row (tested). Definition (Vigna 2015, additive hyperbolic weigher): rank the models by
    decreasing (key, other) lexicographically, r = 0 first; w_i = 1/(r_i + 1);
    tau = sum_{i<j} (w_i + w_j) sgn(x_i - x_j) sgn(y_i - y_j) / sqrt(sum (w_i + w_j) [x_i != x_j] *
    sum (w_i + w_j) [y_i != y_j]). ``truth_weighted`` ranks by (truth, scores); ``symmetric``
    averages that with the ranking by (scores, truth). Rows with a constant vector give NaN.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise InputError(f"truth: expected the shape of scores (B, M) = {x.shape}, got {y.shape}")
    if variant not in WEIGHTED_TAU_VARIANTS:
        raise InputError(f"variant: expected one of {', '.join(WEIGHTED_TAU_VARIANTS)}, got {variant!r}")
    sign_x = np.sign(x[:, :, None] - x[:, None, :])
    sign_y = np.sign(y[:, :, None] - y[:, None, :])

    def ranked_by(key: np.ndarray, other: np.ndarray) -> np.ndarray:
        order = np.lexsort((-other, -key), axis=-1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(key.shape[1])[None, :].repeat(key.shape[0], 0), axis=-1)
        weight = 1.0 / (rank + 1.0)
        pair = weight[:, :, None] + weight[:, None, :]
        num = (pair * sign_x * sign_y).sum((1, 2))
        den = np.sqrt((pair * sign_x ** 2).sum((1, 2)) * (pair * sign_y ** 2).sum((1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    by_truth = ranked_by(y, x)
    if variant == "truth_weighted":
        return by_truth
    return (by_truth + ranked_by(x, y)) / 2.0


def kendall_tau(scores: object, truth: object) -> float:
    """Kendall tau-b (ties corrected) between scores (M,) and truth (M,); NaN if one is constant."""
    s, t = _pair(scores, truth)
    return float(stats.kendalltau(s, t).statistic)


def spearman(scores: object, truth: object) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN if one vector is constant."""
    s, t = _pair(scores, truth)
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.spearmanr(s, t).statistic)


def pearson(scores: object, truth: object) -> float:
    """Pearson linear correlation (TLlib's second number); NaN if one vector is constant."""
    s, t = _pair(scores, truth)
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.pearsonr(s, t).statistic)


def top_k_models(scores: object, truth: object, k: int) -> np.ndarray:
    """Indices of the k highest-scoring models, best first.

    Score ties are broken pessimistically (the tied model with the LOWER truth is picked first),
    so a score that cannot separate models never earns credit from a lucky order.
    """
    s, t = _pair(scores, truth)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= s.shape[0]:
        raise InputError(f"k: expected an integer between 1 and the number of models ({s.shape[0]}), got {k!r}")
    order = np.lexsort((t, -s))  # primary key: score descending; then truth ascending
    return order[: int(k)]


def rel_at_k(scores: object, truth: object, k: int = 1) -> float:
    """rel@k = max(truth over the top-k picks) / max(truth): 1.0 when the best model is picked.

    Needs positive ground truth (accuracies, mAP); for signed measures use :func:`regret_at_k`.
    """
    s, t = _pair(scores, truth)
    if np.any(t <= 0):
        raise InputError("truth: rel@k needs positive ground-truth values (e.g. accuracies); "
                         "use regret@k for signed measures such as negated losses")
    return float(t[top_k_models(s, t, k)].max() / t.max())


def regret_at_k(scores: object, truth: object, k: int = 1) -> float:
    """regret@k = max(truth) - max(truth over the top-k picks), in truth units; 0 is perfect.

    For positive truth the relative regret is ``1 - rel_at_k``.
    """
    s, t = _pair(scores, truth)
    return float(t.max() - t[top_k_models(s, t, k)].max())


def top1_hit(scores: object, truth: object) -> bool:
    """True when the top-scoring model (pessimistic tie-break) is a best model in truth."""
    s, t = _pair(scores, truth)
    return bool(t[top_k_models(s, t, 1)[0]] == t.max())


def bootstrap_draws(statistic: PairStatistic, scores: object, truth: object, *, n_resamples: int = 1000,
                    seed: int = 0, stream: int = 0,
                    batched: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``statistic`` on ``n_resamples`` bootstrap resamples of the models: shape (n_resamples,).

    Each resample draws M models with replacement from ``numpy.random.default_rng((seed, stream))``;
    a resample whose statistic is undefined (e.g. every draw the same model) gives NaN.
    ``batched(scores (B, M), truth (B, M)) -> (B,)``, if given, computes the same statistic for all
    resamples at once (e.g. :func:`weighted_tau_batch`).
    """
    s, t = _pair(scores, truth)
    seed, stream = check_seed(seed), check_seed(stream, "stream")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 10:
        raise InputError(f"n_resamples: expected an integer >= 10, got {n_resamples!r}")
    rows = np.random.default_rng((seed, stream)).integers(0, s.shape[0], size=(int(n_resamples), s.shape[0]))
    if batched is not None:
        return np.asarray(batched(s[rows], t[rows]), dtype=np.float64)
    return np.array([statistic(s[idx], t[idx]) for idx in rows], dtype=np.float64)


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Central ``confidence`` percentile interval of bootstrap ``draws`` (NaN draws ignored).

    Returns (NaN, NaN) when more than half of the draws are NaN.
    """
    if not 0 < confidence < 1:
        raise InputError(f"confidence: expected a number strictly between 0 and 1, got {confidence!r}")
    draws = np.asarray(draws, dtype=np.float64)
    valid = draws[np.isfinite(draws)]
    if valid.size == 0 or valid.size < 0.5 * draws.size:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(statistic: PairStatistic, groups: Sequence[tuple[object, object]], *,
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 batched: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> tuple[float, float, float]:
    """Percentile bootstrap over models of the mean of ``statistic`` across groups (targets).

    ``groups`` is a list of (scores (M_g,), truth (M_g,)) pairs, one per target. Group g is
    resampled by :func:`bootstrap_draws` with ``stream=g``; resample b of the mean is the mean of
    the groups' resample b (``batched`` as in :func:`bootstrap_draws`). Returns (point, low, high),
    where ``point`` is the mean statistic on the original models.
    """
    if len(groups) == 0:
        raise InputError("groups: expected at least one (scores, truth) pair, got none")
    point = float(np.mean([statistic(*_pair(s, t)) for s, t in groups]))
    draws = np.mean([bootstrap_draws(statistic, s, t, n_resamples=n_resamples, seed=seed, stream=g, batched=batched)
                     for g, (s, t) in enumerate(groups)], axis=0)
    return (point, *percentile_interval(draws, confidence))
