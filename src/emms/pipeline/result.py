"""The result of :func:`emms.pipeline.rank`: :class:`Ranking` (the table, timings, notes, meta) and
its JSON / CSV / HTML forms. :func:`with_ranks` orders a score table and adds each model's rank."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emms._io import text_written_to
from emms.errors import InputError


@dataclass
class Ranking:
    """The result of :func:`rank`.

    ``table`` has one row per (model, metric): ``model, metric, score, rank, seconds`` and, for
    EMMS, ``weights`` (the simplex weight of each foundation encoder). ``rank`` is 1 for the best
    model of a metric. ``timings`` has one row per stage (and model where it applies).
    ``correlations`` is set when a ground truth was given. ``resampled`` has one row per (resample,
    model): the first metric's score on a random half of the samples (columns ``resample, model,
    score``); it measures how stable the top pick is (:mod:`emms.answer`). ``selection`` is the
    ``to_dict()`` of a fine-tuning race over these models, when one ran.
    """

    table: pd.DataFrame
    timings: pd.DataFrame
    meta: dict = field(default_factory=dict)
    truth: dict[str, float] | None = None
    correlations: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    resampled: pd.DataFrame | None = None
    selection: dict | None = None

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.table["metric"]))

    def best(self, metric: str | None = None) -> str:
        """The top-ranked model of ``metric`` (default: the first metric)."""
        metric = metric or self.metrics[0]
        rows = self.table[self.table["metric"] == metric]
        return str(rows.sort_values("rank").iloc[0]["model"])

    def wide(self, values: str = "score") -> pd.DataFrame:
        """A model x metric table of ``values`` (``score`` or ``rank``); NaN where a metric skipped a model.

        Rows are ordered by the first metric's rank (models it skipped last); columns are the metrics
        asked for, in order (one that scored no model is a column of NaN).
        """
        if values not in ("score", "rank"):
            raise InputError(f"values: expected 'score' or 'rank', got {values!r}")
        table = self.table.pivot(index="model", columns="metric", values=values)
        first = self.table[self.table["metric"] == self.metrics[0]].sort_values("rank")["model"].tolist()
        order = first + [m for m in self.meta.get("models", table.index) if m not in first and m in table.index]
        table = table.reindex(index=order, columns=self.meta.get("metrics_asked", self.metrics))
        table.columns.name = None
        return table

    def answer(self) -> dict:
        """The recommendation, how sure it is and what the scores mean (see :func:`emms.answer.answer`)."""
        from emms.answer import answer

        return answer(self)

    def records(self) -> list[dict]:
        """The table as a list of JSON-ready dicts, sorted by metric order then rank."""
        out = []
        for row in self.table.itertuples(index=False):
            rec = {"model": row.model, "metric": row.metric, "score": _json_float(row.score),
                   "rank": int(row.rank), "seconds": round(float(row.seconds), 6)}
            if isinstance(row.weights, dict):
                rec["weights"] = {k: _json_float(v) for k, v in row.weights.items()}
            out.append(rec)
        return out

    def to_dict(self) -> dict:
        """Everything as JSON-ready values: meta, answer, results, timings, notes (+ correlations, resampled, selection).

        This is the one result document: ``--out x.json`` writes it, ``--json`` prints it, and
        ``emms evaluate --scores`` reads it back.
        """
        doc = {"meta": self.meta, "answer": self.answer(), "results": self.records(),
               "timings": [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                           for r in self.timings.to_dict("records")],
               "notes": list(self.notes)}
        if self.correlations is not None:
            doc["correlations"] = [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in self.correlations.to_dict("records")]
        if self.resampled is not None:
            doc["resampled"] = [{"resample": int(r.resample), "model": r.model, "score": _json_float(r.score)}
                                for r in self.resampled.itertuples(index=False)]
        if self.selection is not None:
            doc["selection"] = self.selection
        return doc

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (and write it atomically to ``path`` if given)."""
        return text_written_to(path, json.dumps(self.to_dict(), indent=2))

    def to_csv(self, path: str | Path | None = None) -> str:
        """The ranking table as CSV text (weights flattened to ``weight:<encoder>`` columns); ``emms
        evaluate --scores`` reads it."""
        flat = self.table.drop(columns=["weights"]).copy()
        for i, w in enumerate(self.table["weights"]):
            if isinstance(w, dict):
                for enc, val in w.items():
                    flat.loc[flat.index[i], f"weight:{enc}"] = val
        return text_written_to(path, flat.to_csv(index=False))

    def write(self, path: str | Path) -> None:
        """Write the result to ``path`` as JSON (``.json``) or CSV (``.csv``), by its extension."""
        writer = {".json": self.to_json, ".csv": self.to_csv}.get(Path(path).suffix.lower())
        if writer is None:
            raise InputError(f"out: expected a file name ending in .json or .csv, got {str(path)!r}")
        writer(path)

    def to_html(self, path: str | Path | None = None) -> str:
        """A self-contained HTML report (see :mod:`emms.report`)."""
        from emms.report import render_html

        return text_written_to(path, render_html(self))


def with_ranks(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["rank"] = table.groupby("metric", sort=False)["score"].rank(ascending=False, method="min").astype(int)
    order = {m: i for i, m in enumerate(dict.fromkeys(table["metric"]))}
    table["_order"] = table["metric"].map(order)
    table = table.sort_values(["_order", "rank", "model"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return table[["model", "metric", "score", "rank", "seconds", "weights"]]

def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
