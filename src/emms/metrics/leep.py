"""LEEP: log expected empirical prediction (Nguyen, Hassner, Seeger, Archambeau, ICML 2020).

With source-head probabilities θ(x_i) (N, C_s) and target labels y_i in 0..C-1::

    P(y, z) = 1/N · Σ_{i: y_i = y} θ_z(x_i)          joint over (target y, source z)   (C, C_s)
    P(y | z) = P(y, z) / Σ_y' P(y', z)
    LEEP = 1/N · Σ_i log Σ_z P(y_i | z) θ_z(x_i)       (<= 0; higher is better)

Pinned variant: thuml/LogME ``LEEP`` = TLlib ``log_expected_empirical_prediction`` (identical
code): no smoothing. Source classes with zero total probability carry no information (they add 0
to every sum) and are dropped, where the reference would divide 0 by 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emms._validation import as_class_labels, as_probability_matrix, row_count
from emms.metrics._common import class_means
from emms.metrics.protocol import MetricStream, Rows, ScoreResult, Sums
from emms.metrics.registry import register


class LEEPStream(MetricStream):
    """LEEP in two passes: the joint sums N·P(y, z) add over chunks, then Σ_i log of the empirical predictor."""

    n_passes = 2

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: Any) -> Sums:
        probs, codes = rows.probs(start, stop), rows.target(start, stop)
        if pass_index == 0:
            joint = np.zeros((rows.n_classes, probs.shape[1]))
            np.add.at(joint, codes, probs)
            return Sums(joint=joint)
        return Sums(log_sum=leep_log_predictions(probs, codes, state).sum(), n=codes.size)

    def finish(self, rows: Rows, merged: Sums, pass_index: int, state: object) -> np.ndarray | ScoreResult:
        if pass_index == 0:
            return empirical_conditional(merged["joint"])
        return ScoreResult(float(merged["log_sum"]) / int(merged["n"]))


@register("leep", targets=("classes",), needs_source_probs=True, stream=LEEPStream)
def leep(features: object, target: object, *, source_probs: object) -> float:
    """LEEP (ICML 2020): mean log of the empirical predictor's probability of the true label.

    ``features`` (N, D) is not used (LEEP only sees the source head) except to check N;
    ``target`` (N,) class labels (remapped to 0..C-1; single-sample classes need no special case);
    ``source_probs`` (N, C_s) rows of source-class probabilities. Formula: module docstring.
    """
    n = row_count(features)
    codes, classes = as_class_labels(target, "target", n_samples=n)
    probs = as_probability_matrix(source_probs, "source_probs", n_samples=codes.shape[0])
    return expected_empirical_log_prediction(probs, codes, classes.size)


def expected_empirical_log_prediction(probs: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """LEEP from validated probabilities ``probs`` (N, C_s) and class codes (N,) in 0..n_classes-1."""
    joint = class_means(probs, codes, n_classes) * np.bincount(codes, minlength=n_classes)[:, None]  # N·P(y, z)
    return float(np.mean(leep_log_predictions(probs, codes, empirical_conditional(joint))))


def empirical_conditional(joint: np.ndarray) -> np.ndarray:
    """P(y | z) (C, C_s) from the joint sums N·P(y, z) (C, C_s); all-zero source columns stay 0.

    LEEP streams in two passes (:class:`LEEPStream`): the joint sums add over chunks (pass 1),
    then the mean of :func:`leep_log_predictions` (pass 2).
    """
    keep = joint.sum(axis=0) > 0
    conditional = np.zeros_like(joint, dtype=np.float64)
    conditional[:, keep] = joint[:, keep] / joint[:, keep].sum(axis=0)
    return conditional


def leep_log_predictions(probs: np.ndarray, codes: np.ndarray, conditional: np.ndarray) -> np.ndarray:
    """log Σ_z P(y_i | z) θ_z(x_i) for each row: ``probs`` (n, C_s), ``codes`` (n,), ``conditional`` (C, C_s)."""
    return np.log(np.einsum("nz,nz->n", probs, conditional[codes]))

