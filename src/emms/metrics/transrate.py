"""TransRate: mutual information between features and labels as a coding-rate gap (Huang et al., ICML 2022).

"Frustratingly Easy Transferability Estimation". With the coding rate of a block Z (n, D)::

    R(Z) = ½ · log det(I_D + ZᵀZ / (n·ε))

TransRate is R(Z) minus the rate of Z given the labels (higher is better). Two variants exist
under this name; ``variant`` picks one:

* ``"centred"`` (default; TLlib ``transrate``, also the SFDA/EMMS copies): Z = features with the
  column means removed, TrR = R(Z) − 1/C · Σ_c R(Z_c) (plain average over classes). Its value
  depends on the feature scale relative to ε. This is the variant the EMMS paper's comparison
  tables use and the one the shared reference values check.
* ``"official"`` (Long-Kai/TransRate, ``pre_transrate`` + ``process_transrate_logs`` defaults):
  centred features with every row L2-normalised, class rates weighted by class size, and both
  terms divided by r = rank(ZᵀZ): TrR = [R(Z) − Σ_c (n_c/n) R(Z_c)] / r. Scale-free.

The log-determinants are computed from the eigenvalues of the smaller Gram matrix (ZᵀZ or ZZᵀ,
which share their non-zero eigenvalues), so a class block costs O(n_c²·D), not O(D³).
A class with a single sample has its own one-row coding rate; nothing special is needed.
"""

from __future__ import annotations

import numpy as np

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics.moments import ClassMoments
from emms.metrics.protocol import MetricStream, Rows, ScoreResult
from emms.metrics.registry import register

VARIANTS = ("centred", "official")


class TransRateStream(MetricStream):
    """TransRate over chunks: per-class (D, D) co-moments (:class:`ClassMoments`, ``"full"``; O(C·D²) memory).

    ``"centred"``: one pass. ``"official"``: two passes, the mean μ, then the moments of the
    centred, row-normalised rows (their Grams about 0).
    """

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.n_passes = 2 if options.get("variant") == "official" else 1

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: np.ndarray | None) -> ClassMoments:
        x = rows.features(start, stop)
        if pass_index == 1:  # official variant: centred, row-normalised features
            x -= state
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        per_class = "full" if pass_index == self.n_passes - 1 else "mean"
        return ClassMoments(rows.n_classes, x.shape[1], per_class=per_class).update(x, rows.target(start, stop))

    def finish(self, rows: Rows, merged: ClassMoments, pass_index: int, state: object) -> np.ndarray | ScoreResult:
        if pass_index < self.n_passes - 1:
            return merged.mean
        centre = merged.mean if self.n_passes == 1 else np.zeros_like(merged.mean)
        gram = merged.comoment + merged.n_samples * np.outer(merged.mean - centre, merged.mean - centre)
        return ScoreResult(transrate_from_grams(gram, merged.class_grams(centre), merged.counts, **self.options))


@register("transrate", targets=("classes",), stream=TransRateStream)
def transrate(features: object, target: object, *, variant: str = "centred", eps: float = 1e-4) -> float:
    """TransRate (ICML 2022): coding rate of the features minus their rate given the labels.

    ``features`` (N, D); ``target`` (N,) class labels (remapped to 0..C-1); ``variant`` "centred"
    (default, TLlib) or "official" (row-L2-normalised, class-size weighted, rank-normalised);
    ``eps`` the distortion ε. Formulas: module docstring.
    """
    if variant not in VARIANTS:
        raise InputError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise InputError(f"eps: expected a positive number, got {eps!r}")
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    z = x - x.mean(axis=0)
    if variant == "official":
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    counts = np.bincount(codes, minlength=classes.size)
    blocks = np.split(z[np.argsort(codes, kind="stable")], np.cumsum(counts)[:-1])
    return _transrate_from_eigenvalues(_gram_eigenvalues(z), [_gram_eigenvalues(b) for b in blocks], counts,
                                       z.shape[1], variant, eps)


def transrate_from_grams(gram: np.ndarray, class_grams: np.ndarray, counts: np.ndarray, *,
                         variant: str = "centred", eps: float = 1e-4) -> float:
    """TransRate from Gram matrices (streamable): ``gram`` ZᵀZ (D, D), ``class_grams`` Z_cᵀZ_c
    (C, D, D) and ``counts`` n_c (C,), Z the centred (``"official"``: centred, then row-normalised)
    features. Same formula as :func:`transrate`, with the eigenvalues of the (D, D) Grams."""
    if variant not in VARIANTS:
        raise InputError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise InputError(f"eps: expected a positive number, got {eps!r}")
    return _transrate_from_eigenvalues(np.linalg.eigvalsh(gram), list(np.linalg.eigvalsh(class_grams)), counts,
                                       gram.shape[0], variant, eps)


def _transrate_from_eigenvalues(eigenvalues: np.ndarray, class_eigenvalues: list[np.ndarray], counts: np.ndarray,
                                n_features: int, variant: str, eps: float) -> float:
    """The TransRate formula from the eigenvalues of ZᵀZ and of every Z_cᵀZ_c (class c has counts[c] rows)."""
    n = int(counts.sum())
    total = _coding_rate(eigenvalues, n, eps)
    class_rates = np.array([_coding_rate(values, int(m), eps) for values, m in zip(class_eigenvalues, counts)])
    if variant == "centred":
        return float(total - class_rates.mean())
    rank = int(np.sum(eigenvalues > max(eigenvalues.max(), 0.0) * n_features * np.finfo(np.float64).eps))
    return float((total - (counts / n) @ class_rates) / max(rank, 1))


def _gram_eigenvalues(z: np.ndarray) -> np.ndarray:
    """Eigenvalues of ZᵀZ from the smaller of ZᵀZ (D, D) and ZZᵀ (n, n)."""
    gram = z @ z.T if z.shape[0] < z.shape[1] else z.T @ z
    return np.linalg.eigvalsh(gram)


def _coding_rate(eigenvalues: np.ndarray, n_rows: int, eps: float) -> float:
    """½ log det(I + ZᵀZ / (n ε)) from the eigenvalues of ZᵀZ (negative rounding noise clipped to 0)."""
    return 0.5 * float(np.sum(np.log1p(np.clip(eigenvalues, 0.0, None) / (n_rows * eps))))
