"""Class-conditional moments of features, accumulated over row chunks and merged pairwise.

The statistics H-score, GBC and TransRate stream with (:mod:`emms.metrics.protocol`).
"""

from __future__ import annotations

import copy

import numpy as np

from emms.errors import InputError


class ClassMoments:
    """Class-conditional moments of features x (N, D) with class codes (N,) in 0..C-1.

    Always: ``n_samples``, ``mean`` μ (D,), ``comoment`` Σ(x−μ)(x−μ)ᵀ (D, D), ``counts`` n_c (C,),
    ``class_means`` μ_c (C, D) (0 for an absent class). ``per_class="diag"`` adds
    ``class_comoments`` Σ_{i∈c}(x_i−μ_c)² (C, D); ``"full"`` the (C, D, D) co-moments.
    ``norm_moments=True`` adds ``norm_cubed`` Σ‖x−μ‖²(x−μ) (D,) and ``norm_fourth`` Σ‖x−μ‖⁴.
    ``merge`` is Chan, Golub & LeVeque's pairwise update; the norm moments are shifted to the
    merged mean with (u = x − μ, centre moved by δ, M the co-moment)::

        Σ‖u−δ‖²(u−δ) = T − 2Mδ − tr(M)δ − n‖δ‖²δ
        Σ‖u−δ‖⁴     = Q − 4δᵀT + 4δᵀMδ + 2‖δ‖²tr(M) + n‖δ‖⁴
    """

    PER_CLASS = ("mean", "diag", "full")

    def __init__(self, n_classes: int, n_features: int, *, per_class: str = "mean",
                 norm_moments: bool = False) -> None:
        if per_class not in self.PER_CLASS:
            raise InputError(f"per_class: expected one of {self.PER_CLASS}, got {per_class!r}")
        self.per_class, self.norm_moments = per_class, norm_moments
        self.n_samples = 0
        self.mean = np.zeros(n_features)
        self.comoment = np.zeros((n_features, n_features))
        self.counts = np.zeros(n_classes, dtype=np.int64)
        self.class_means = np.zeros((n_classes, n_features))
        shape = {"mean": None, "diag": (n_classes, n_features), "full": (n_classes, n_features, n_features)}[per_class]
        self.class_comoments = None if shape is None else np.zeros(shape)
        self.norm_cubed = np.zeros(n_features) if norm_moments else None
        self.norm_fourth = 0.0

    def update(self, x: np.ndarray, codes: np.ndarray) -> ClassMoments:
        """Add validated float64 rows ``x`` (n, D) with class ``codes`` (n,); returns self."""
        chunk = ClassMoments(self.counts.size, x.shape[1], per_class=self.per_class, norm_moments=self.norm_moments)
        chunk.n_samples = x.shape[0]
        chunk.mean = x.mean(axis=0)
        centred = x - chunk.mean
        chunk.comoment = centred.T @ centred
        if self.norm_moments:
            squared = np.einsum("nd,nd->n", centred, centred)
            chunk.norm_cubed, chunk.norm_fourth = centred.T @ squared, float(squared @ squared)
        order = np.argsort(codes, kind="stable")
        chunk.counts = np.bincount(codes, minlength=self.counts.size)
        present = np.flatnonzero(chunk.counts)
        starts = np.concatenate([[0], np.cumsum(chunk.counts[present])[:-1]])
        rows = x[order]
        chunk.class_means[present] = np.add.reduceat(rows, starts, axis=0) / chunk.counts[present, None]
        if self.per_class != "mean":
            within = rows - np.repeat(chunk.class_means[present], chunk.counts[present], axis=0)
            if self.per_class == "diag":
                chunk.class_comoments[present] = np.add.reduceat(within**2, starts, axis=0)
            else:
                for c, start, size in zip(present, starts, chunk.counts[present]):
                    block = within[start:start + size]
                    chunk.class_comoments[c] = block.T @ block
        return self.merge(chunk)

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Add the rows summarised by ``other`` into self; returns self."""
        if other.n_samples == 0:
            return self
        if self.n_samples == 0:
            self.__dict__.update(copy.deepcopy(other.__dict__))
            return self
        n_a, n_b = self.n_samples, other.n_samples
        n = n_a + n_b
        delta = other.mean - self.mean
        if self.norm_moments:
            cubed_a, fourth_a = _shift_norm_moments(n_a, self.comoment, self.norm_cubed, self.norm_fourth,
                                                    delta * (n_b / n))
            cubed_b, fourth_b = _shift_norm_moments(n_b, other.comoment, other.norm_cubed, other.norm_fourth,
                                                    -delta * (n_a / n))
            self.norm_cubed, self.norm_fourth = cubed_a + cubed_b, fourth_a + fourth_b
        self.comoment = self.comoment + other.comoment + (n_a * n_b / n) * np.outer(delta, delta)
        self.mean = self.mean + delta * (n_b / n)
        self.n_samples = n
        counts = self.counts + other.counts
        safe = np.maximum(counts, 1)
        factor = self.counts * other.counts / safe                 # 0 where either side has no rows
        class_delta = other.class_means - self.class_means
        if self.per_class == "diag":
            self.class_comoments = self.class_comoments + other.class_comoments + factor[:, None] * class_delta**2
        elif self.per_class == "full":
            self.class_comoments = (self.class_comoments + other.class_comoments
                                    + factor[:, None, None] * class_delta[:, :, None] * class_delta[:, None, :])
        self.class_means = self.class_means + class_delta * (other.counts / safe)[:, None]
        self.counts = counts
        return self

    def class_grams(self, centre: np.ndarray) -> np.ndarray:
        """Σ_{i∈c} (x_i − centre)(x_i − centre)ᵀ per class (C, D, D); needs ``per_class="full"``."""
        offsets = self.class_means - centre
        return self.class_comoments + self.counts[:, None, None] * offsets[:, :, None] * offsets[:, None, :]


def _shift_norm_moments(n: int, comoment: np.ndarray, cubed: np.ndarray, fourth: float,
                        delta: np.ndarray) -> tuple[np.ndarray, float]:
    """Norm moments about a centre moved by ``delta`` (formulas in :class:`ClassMoments`)."""
    trace, sq = float(np.trace(comoment)), float(delta @ delta)
    m_delta = comoment @ delta
    new_cubed = cubed - 2.0 * m_delta - trace * delta - n * sq * delta
    new_fourth = fourth - 4.0 * float(delta @ cubed) + 4.0 * float(delta @ m_delta) + 2.0 * sq * trace + n * sq**2
    return new_cubed, new_fourth
