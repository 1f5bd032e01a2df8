"""Transferability metrics: pure functions over arrays, registered with their capabilities.

Importing this package registers every metric. See :mod:`emms.metrics.registry`.
"""

from emms.metrics import (  # noqa: F401  (imported for registration)
    emms,
    etran,
    gbc,
    hscore,
    knn,
    leep,
    logme,
    nce,
    ncti,
    nleep,
    pactran,
    parc,
    probe,
    sfda,
    transrate,
)
from emms.metrics.registry import (
    MetricInfo,
    available_metrics,
    get_metric,
    infer_target_kind,
    register,
    score,
    score_pool,
)

__all__ = ["MetricInfo", "available_metrics", "get_metric", "infer_target_kind", "register", "score", "score_pool"]
