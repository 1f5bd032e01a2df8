"""NCE: negative conditional entropy (Tran, Nguyen, Hassner, ICCV 2019).

With hard source labels z_i = argmax_z θ_z(x_i) and target labels y_i::

    P(y, z) = #{i: y_i = y, z_i = z} / N        P(z) = Σ_y P(y, z)
    NCE = −H(Y | Z) = Σ_{y, z: P(y,z) > 0} P(y, z) · log(P(y, z) / P(z))     (<= 0; higher is better)

Pinned variant: thuml/LogME ``NCE`` = TLlib ``negative_conditional_entropy`` (identical code),
called as the reference records do, on ``argmax(source_probs, axis=1)``. Source classes that no
sample is assigned to contribute nothing (the reference masks them out after a 0/0). The
reference's 1e-20 inside the log changes nothing at double precision; here empty cells are
skipped exactly instead.
"""

from __future__ import annotations

import numpy as np

from emms._validation import as_class_labels, as_probability_matrix, row_count
from emms.metrics.protocol import MetricStream, Rows, ScoreResult, Sums
from emms.metrics.registry import register


class NCEStream(MetricStream):
    """NCE over chunks: the joint count table adds over chunks."""

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: object) -> Sums:
        probs = rows.probs(start, stop)
        return Sums(counts=joint_counts(rows.target(start, stop), np.argmax(probs, axis=1), rows.n_classes,
                                        probs.shape[1]))

    def finish(self, rows: Rows, merged: Sums, pass_index: int, state: object) -> ScoreResult:
        return ScoreResult(nce_from_counts(merged["counts"]))


@register("nce", targets=("classes",), needs_source_probs=True, stream=NCEStream)
def nce(features: object, target: object, *, source_probs: object) -> float:
    """NCE (ICCV 2019): −H(target label | argmax source label).

    ``features`` (N, D) is not used except to check N; ``target`` (N,) class labels (remapped;
    single-sample classes need no special case); ``source_probs`` (N, C_s) source-class
    probabilities, reduced to hard labels by argmax (ties: the first class). Formula: module docstring.
    """
    n = row_count(features)
    codes, classes = as_class_labels(target, "target", n_samples=n)
    probs = as_probability_matrix(source_probs, "source_probs", n_samples=codes.shape[0])
    return nce_from_counts(joint_counts(codes, np.argmax(probs, axis=1), classes.size, probs.shape[1]))


def joint_counts(codes: np.ndarray, source: np.ndarray, n_classes: int, n_source: int) -> np.ndarray:
    """(C, C_s) integer table #{i: y_i = y, z_i = z} from class codes and hard source labels (N,)."""
    return np.bincount(codes * n_source + source, minlength=n_classes * n_source).reshape(n_classes, n_source)


def nce_from_counts(counts: np.ndarray) -> float:
    """NCE from the (C, C_s) joint count table (streamable: counts add over chunks)."""
    joint = counts / counts.sum()
    marginal = np.broadcast_to(joint.sum(axis=0), joint.shape)
    cell = joint > 0
    return float(np.sum(joint[cell] * np.log(joint[cell] / marginal[cell])))
