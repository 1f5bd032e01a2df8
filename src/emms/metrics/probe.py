"""Linear probe: cross-validated logistic-regression accuracy on standardised frozen features.

score = mean over the folds of the held-out accuracy of an L2-regularised multinomial logistic
regression (scikit-learn ``LogisticRegression``, lbfgs, inverse regularisation ``c``) fitted on
the other folds, inside a pipeline that standardises the columns on the training folds only.
Folds: ``StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)``. Range [0, 1]; higher
is better.

Reference: the linear-probe proxy of Renggli et al., "Which model to transfer? Finding the needle
in the growing haystack" (CVPR 2022), also the ground truth of LogME issue #19's "linear probe"
question; kept here as the cheap supervised upper baseline.

Single-sample (or rarer than ``folds``) classes are kept: their samples still land in some test
fold, and when their class is absent from the training folds they count as errors (scikit-learn's
"least populated class" warning is silenced for that reason). Randomised through ``seed`` (fold
assignment); deterministic for a fixed seed. ``max_iter`` caps lbfgs; non-convergence is silenced
because a probe stopped early is still a valid, slightly pessimistic estimate.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emms._validation import as_class_labels, as_float_matrix, check_seed
from emms.errors import InputError
from emms.metrics.registry import register


@register("linear_probe", targets=("classes",), randomised=True)
def linear_probe(features: object, target: object, *, folds: int = 5, c: float = 1.0, max_iter: int = 200,
                 seed: int = 0) -> float:
    """Cross-validated (stratified ``folds``-fold) logistic-regression accuracy in [0, 1].

    features: (N, D) float32/float64; target: (N,) class labels (remapped to 0..C-1).
    """
    x = as_float_matrix(features, "features")
    codes, _ = as_class_labels(target, "target", n_samples=x.shape[0])
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= x.shape[0]:
        raise InputError(f"folds: expected an integer between 2 and n_samples = {x.shape[0]}, got {folds!r}")
    if not c > 0:
        raise InputError(f"c: expected a positive inverse regularisation strength, got {c!r}")
    largest_class = int(np.bincount(codes).max())
    if folds > largest_class:
        raise InputError(f"folds: expected at most the size of the largest class ({largest_class}), got {folds!r}")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    splitter = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=check_seed(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The least populated class in y has only")
        splits = list(splitter.split(x, codes))
        if any(np.unique(codes[train]).size < 2 for train, _ in splits):
            raise InputError(f"target: a training split of the {folds}-fold cross-validation holds a single class; "
                             "pass fewer folds or more samples per class")
        accuracies = cross_val_score(model, x, codes, cv=splits, scoring="accuracy", error_score="raise")
    return float(np.mean(accuracies))
