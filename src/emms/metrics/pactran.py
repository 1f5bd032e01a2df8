"""PACTran: PAC-Bayesian transferability metrics (Ding et al., ECCV 2022, arXiv 2203.05126).

Each PACTran value is an optimised PAC-Bayesian bound on the target risk of a head put on top of
the frozen model, normalised per label entry: *lower* means better transfer. The registered
metrics return its **negative**, so that higher is better as for every EMMS metric.

Pinned variant: google-research/pactran_metrics ``compute_metrics.py`` (``calculate_pac_dir``,
``calculate_pac_gamma``, ``calculate_pac_gauss``) with the hyper-parameters of its main script.

* Dirichlet and Gamma bound a head on *soft cluster assignments* q0 (N, K). As in the reference's
  "pac_ndir"/"pac_ngam", q0 are Gaussian-mixture posteriors of the features after PCA keeping
  ``pca_variance`` (0.8) of the variance, with K = max(min(C, floor(0.2 N)), floor(0.1 N))
  components (the reference's rule). Deviation, for cost: ``covariance_type="diag"`` by default
  (the reference uses scikit-learn's "full"; pass it to reproduce). The GMM is seeded.
  :func:`pactran_dirichlet_bound` / :func:`pactran_gamma_bound` take any (N, K) probabilities
  (for example a source head's), so the source-probability variant is one call away.
* Gaussian bounds a linear softmax head on the raw features: L-BFGS (at most ``max_iter`` = 100
  iterations, from a seeded N(0, 0.03^2) start) minimises
  L(W, b) = mean_i CE(y_i, softmax(x_i W + b)) + ||W||^2 / (2 lambda), lambda = lda_factor * N,
  then bound = L* + (K D / (2 lambda)) * sigma0^2 * log(sum(diag Hessian) * lambda / (K D) + 1e-10)
  with sigma0^2 = variance_factor / D (reference defaults lda_factor = 1, variance_factor = 10).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from emms._validation import as_class_labels, as_float_matrix, as_probability_matrix, check_seed
from emms.errors import InputError
from emms.metrics._common import one_hot
from emms.metrics.registry import register

_EPS = 1e-10
COVARIANCE_TYPES = ("diag", "full", "tied", "spherical")


def _bound_inputs(probs: object, labels: object, alpha: float) -> tuple[np.ndarray, ...]:
    """Checked probs (N, K), one-hot labels (N, C), prior a0 (C, 1) = alpha * frequencies, log probs."""
    codes, classes = as_class_labels(labels, "labels")
    p = as_probability_matrix(probs, "probs", n_samples=codes.shape[0])
    if not alpha > 0:
        raise InputError(f"alpha: expected a positive prior strength, got {alpha!r}")
    y = one_hot(codes, classes.size)
    a0 = alpha * y.sum(axis=0, keepdims=True).T / y.shape[0] + _EPS
    return p, y, a0, np.log(p + _EPS)


def pactran_dirichlet_bound(probs: object, labels: object, *, alpha: float = 1.0) -> float:
    """PACTran-Dirichlet bound (lower is better) from assignments ``probs`` (N, K) and labels (N,).

    Prior a0_y = alpha * (class frequency of y) over the C target classes for each of the K
    clusters; ten mean-field updates of q(z_i) and of the Dirichlet posteriors a_zy = a0_y +
    sum_i [y_i = y] q_iz; bound = -(sum_z [log B(a_z) - log B(a0)] - KL(q || probs)) / (N C),
    with B the multivariate Beta function.
    """
    p, y, a0, log_s = _bound_inputs(probs, labels, alpha)
    q = p
    for _ in range(10):
        aw = a0 + y.T @ q  # (C, K)
        logits = log_s + y @ scipy.special.digamma(aw) - scipy.special.digamma(aw.sum(axis=0))[None, :]
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        q = np.exp(log_q)
    log_c0 = scipy.special.gammaln(a0.sum()) - scipy.special.gammaln(a0).sum()
    log_c = scipy.special.gammaln(aw.sum(axis=0)) - scipy.special.gammaln(aw).sum(axis=0)
    elbo = np.sum(log_c0 - log_c - np.sum(q * (log_q - log_s), axis=0))
    return float(-elbo / y.size)


def pactran_gamma_bound(probs: object, labels: object, *, alpha: float = 1.0) -> float:
    """PACTran-Gamma bound (lower is better) from assignments ``probs`` (N, K) and labels (N,).

    Gamma(a0_y, 1) priors on per-cluster class rates (a0 as in Dirichlet), ten mean-field updates;
    bound = 1 + [sum (log G(a0) - log G(a_w)) + sum_i (KL(q_i || probs_i) + log l_i - 1)] / (N C),
    l_i = sum_z probs_iz sum_y a_w[y, z].
    """
    p, y, a0, log_s = _bound_inputs(probs, labels, alpha)
    q = p
    for _ in range(10):
        aw = a0 + y.T @ q  # (C, K)
        rate_sum = p @ aw.sum(axis=0)  # (N,)
        logits = log_s + y @ scipy.special.digamma(aw)
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        q = np.exp(log_q)
    total = (np.sum(scipy.special.gammaln(a0) - scipy.special.gammaln(aw))
             + np.sum(np.sum(q * (log_q - log_s), axis=1) + np.log(rate_sum) - 1.0))
    return float(total / y.size + 1.0)


def check_gmm_options(pca_variance: float, covariance_type: str) -> None:
    """InputError unless ``pca_variance`` is in (0, 1) and ``covariance_type`` is a GaussianMixture type."""
    if not 0.0 < pca_variance < 1.0:
        raise InputError(f"pca_variance: expected a fraction in (0, 1), got {pca_variance!r}")
    if covariance_type not in COVARIANCE_TYPES:
        raise InputError(f"covariance_type: expected one of {COVARIANCE_TYPES}, got {covariance_type!r}")


def gmm_assignments(features: np.ndarray, n_classes: int, *, seed: int, pca_variance: float = 0.8,
                    n_components: int | None = None, covariance_type: str = "diag") -> np.ndarray:
    """Posterior cluster probabilities (N, K) of a seeded GMM on PCA-reduced features (N, D).

    PCA keeps ``pca_variance`` of the variance (exact solver). K = ``n_components``, by default the
    PACTran rule max(min(C, floor(0.2 N)), floor(0.1 N)), at least 1 and at most N.
    """
    check_gmm_options(pca_variance, covariance_type)
    n = features.shape[0]
    if n_components is None:
        n_components = max(min(n_classes, int(0.2 * n)), int(0.1 * n))
    elif isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InputError(f"n_components: expected a positive integer or None, got {n_components!r}")
    n_components = max(1, min(int(n_components), n))
    reduced = PCA(n_components=pca_variance, svd_solver="full").fit_transform(features)
    gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type, random_state=seed,
                          reg_covar=1e-6)
    return gmm.fit(reduced).predict_proba(reduced)


def _bound_on_gmm_clusters(bound, features: object, target: object, *, alpha: float, seed: int,
                           n_components: int | None, covariance_type: str, pca_variance: float) -> float:
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    probs = gmm_assignments(x, classes.size, seed=check_seed(seed), pca_variance=pca_variance,
                            n_components=n_components, covariance_type=covariance_type)
    return -bound(probs, codes, alpha=alpha)


@register("pactran_dirichlet", targets=("classes",), randomised=True)
def pactran_dirichlet(features: object, target: object, *, alpha: float = 1.0, seed: int = 0,
                      n_components: int | None = None, covariance_type: str = "diag",
                      pca_variance: float = 0.8) -> float:
    """Negative PACTran-Dirichlet bound (ECCV 2022) on GMM soft clusters of the features.

    features: (N, D); target: (N,) class labels. Randomised through the seeded GMM.
    """
    return _bound_on_gmm_clusters(pactran_dirichlet_bound, features, target, alpha=alpha, seed=seed,
                                  n_components=n_components, covariance_type=covariance_type,
                                  pca_variance=pca_variance)


@register("pactran_gamma", targets=("classes",), randomised=True)
def pactran_gamma(features: object, target: object, *, alpha: float = 1.0, seed: int = 0,
                  n_components: int | None = None, covariance_type: str = "diag",
                  pca_variance: float = 0.8) -> float:
    """Negative PACTran-Gamma bound (ECCV 2022) on GMM soft clusters of the features.

    features: (N, D); target: (N,) class labels. Randomised through the seeded GMM.
    """
    return _bound_on_gmm_clusters(pactran_gamma_bound, features, target, alpha=alpha, seed=seed,
                                  n_components=n_components, covariance_type=covariance_type,
                                  pca_variance=pca_variance)


def pactran_gauss_bound(features: np.ndarray, codes: np.ndarray, n_classes: int, *, lda_factor: float = 1.0,
                        variance_factor: float = 10.0, seed: int = 0, max_iter: int = 100) -> float:
    """PACTran-Gaussian bound (lower is better); features (N, D) float64, codes (N,) in 0..C-1."""
    n, dim = features.shape
    y = one_hot(codes, n_classes)
    n_params = dim * n_classes
    lam = lda_factor * n

    def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = theta.reshape(dim + 1, n_classes)
        return theta[:dim], theta[dim:]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = split(theta)
        logits = features @ w + b
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        loss = -np.sum(y * log_q) / n + 0.5 * np.sum(w * w) / lam
        residual = (np.exp(log_q) - y) / n
        grad = np.concatenate([features.T @ residual + w / lam, residual.sum(axis=0, keepdims=True)])
        return loss, grad.ravel()

    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.normal(size=(dim, n_classes)) * 0.03, np.zeros((1, n_classes))]).ravel()
    theta = scipy.optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", tol=1e-6,
                                    options={"maxiter": max_iter}).x
    loss, _ = loss_and_grad(theta)
    w, b = split(theta)
    proba = scipy.special.softmax(features @ w + b, axis=1)
    curvature = proba - proba * proba  # (N, C)
    hessian_diag_sum = np.sum((features * features).T @ curvature) + n_params / lam + curvature.sum()
    sigma2_inv = hessian_diag_sum * lam / n_params + _EPS
    prior_variance = variance_factor / dim
    return float(loss + 0.5 * n_params / lam * prior_variance * np.log(sigma2_inv))


@register("pactran_gauss", targets=("classes",), randomised=True)
def pactran_gauss(features: object, target: object, *, lda_factor: float = 1.0, variance_factor: float = 10.0,
                  seed: int = 0, max_iter: int = 100) -> float:
    """Negative PACTran-Gaussian bound (ECCV 2022): L-BFGS-fitted softmax head plus curvature term.

    features: (N, D); target: (N,) class labels. Randomised only through the seeded L-BFGS start.
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    if lda_factor <= 0 or variance_factor <= 0:
        raise InputError(f"lda_factor, variance_factor: expected positive numbers, got {lda_factor!r}, {variance_factor!r}")
    return -pactran_gauss_bound(x, codes, classes.size, lda_factor=lda_factor, variance_factor=variance_factor,
                                seed=check_seed(seed), max_iter=max_iter)
