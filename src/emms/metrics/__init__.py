"""The metric core: transferability metrics as pure functions over arrays, registered with their capabilities.

A new metric: ``<family>.py`` here with ``@register("name", ...)`` (a streaming one adds its
:class:`~emms.metrics.protocol.MetricStream`); the registry finds it by that line and imports the
module the first time one of its metrics is asked for, so ``import emms`` stays cheap. ``stats.py``
holds EMMS's mergeable sufficient statistics, ``_emms_spectrum.py`` its solver on their spectrum, and
``_products.py`` the grouped cross products EMMS and LogME share. Nothing here imports executors,
adapters or the pipeline.
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
