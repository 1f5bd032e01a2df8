"""Transferability metrics: pure functions over arrays, registered with their capabilities.

Each metric module registers its functions with :func:`emms.metrics.registry.register` when it is
imported; the registry imports a built-in module the first time one of its metrics is asked for
(``get_metric``, ``score``, ``available_metrics``), so ``import emms`` stays cheap.
See :mod:`emms.metrics.registry`.
"""

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
