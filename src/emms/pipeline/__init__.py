"""The pipeline: the one place where the adapters (data, candidate models, F-labels, the store,
the executors) meet the metrics. :func:`rank` (``ranking.py``) runs the stages of
``extraction.py`` and ``scoring.py`` and returns a :class:`Ranking` (``result.py``).
It asks the metric registry for capabilities and names no metric: a new stage goes here.
"""

from __future__ import annotations

from emms.pipeline.extraction import extract_model, has_source_head, load_extractors
from emms.pipeline.ranking import DEFAULT_METRICS, DEFAULT_RESAMPLES, rank
from emms.pipeline.result import Ranking
from emms.pipeline.scoring import RESAMPLE_FRACTION, ProgressCallback, check_metrics, correlations_table

__all__ = ["DEFAULT_METRICS", "DEFAULT_RESAMPLES", "RESAMPLE_FRACTION", "ProgressCallback", "Ranking", "check_metrics",
           "correlations_table", "extract_model", "has_source_head", "load_extractors", "rank"]
