"""Execution: how features are extracted and metric statistics accumulated over data that may not fit.

``sources.py`` (row-chunk sources: arrays, memmaps, stores), ``plans.py`` (a metric's
:class:`~emms.metrics.protocol.MetricStream` run over chunks), ``streaming.py`` (out-of-core scoring),
``parallel.py`` (Dask: extraction and scoring tasks), ``backend.py`` (torch device), ``store.py``
(the resumable on-disk cache), ``extract.py`` (batched, per-layer extraction through the store).
Executors only: formulas stay in :mod:`emms.metrics`. A new executor or cache goes here.
"""
