"""EMMS: rank pre-trained models for a task without fine-tuning them all.

Public API::

    emms.EMMS(...).fit(features, f_labels).score_      # the EMMS estimator
    emms.score(features, target, metric="emms")        # any registered metric
    emms.score_pool({...}, target, metric="etran")     # pool-relative metrics
    emms.rank(data, models, task=..., ...)             # data -> features -> F-labels -> Ranking
    emms.select(data, models, budget=0.25, ...)        # frozen recall -> fine-tuning race -> Selection
"""

from __future__ import annotations

from emms.errors import EmmsError, EmmsWarning, InputError, ResourceError
from emms.metrics import available_metrics, get_metric, score, score_pool

__version__ = "0.1.0"

__all__ = ["EMMS", "EmmsError", "EmmsWarning", "InputError", "ResourceError", "available_metrics",
           "get_metric", "rank", "score", "score_pool", "select", "__version__"]


def __getattr__(name: str):
    # Imported when first asked for: the estimator pulls in scipy, the pipeline torch-based adapters.
    if name == "EMMS":
        from emms.metrics.emms import EMMS

        return EMMS
    if name == "rank":
        from emms.pipeline import rank

        return rank
    if name == "select":
        from emms.selection import select

        return select
    raise AttributeError(f"module 'emms' has no attribute {name!r}")
