"""``emms evaluate``: how well do transferability scores agree with fine-tuned ground truth?

Reads what ``emms rank --out`` writes (JSON or CSV) or any scores CSV; ``--out`` writes the
evaluation as JSON or CSV by extension and ``--json`` prints the same JSON document.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from emms._io import atomic_write_text
from emms.cli._common import app, errors_as_exit, json_text, print_json, print_table, say
from emms.errors import InputError
from emms.evaluate.summary import DEFAULT_TARGET, evaluate_scores, read_scores, read_truth, reconcile

CONFIDENCE = 0.95


@app.command()
def evaluate(
    scores: Path = typer.Option(..., "--scores", help="What `emms rank --out` wrote (.json or .csv), or a CSV: model, metric, "
            "score (long) or model + one column per metric; optional target column."),
    truth: Path = typer.Option(..., "--truth", help="CSV of fine-tuned performance (higher is better): a model column (names "
            "with or without builtin:) and a value column; optional target column."),
    truth_column: str = typer.Option("value", "--truth-column", help="The --truth column holding the fine-tuned performance "
            "(e.g. accuracy)."),
    target: str = typer.Option(None, "--target", help="Evaluate against this target of --truth only (needed when the scores "
            "name no target and the truth holds several)."),
    out: Path = typer.Option(None, "--out", help="Write the evaluation here: JSON (.json, the --json document) or CSV (.csv, "
            "one row per statistic)."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation document as JSON instead of tables."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples over models for the intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Weighted Kendall tau (symmetric and truth-weighted), Kendall, Spearman, Pearson, rel@k, regret@k
    and top-1 hit of every metric's scores against the ground truth, with bootstrap intervals."""
    with errors_as_exit():
        if out is not None and out.suffix.lower() not in (".json", ".csv"):
            raise InputError(f"--out: expected a file name ending in .json or .csv, got {str(out)!r}")
        table = read_scores(scores)
        notes: list[str] = []
        truth_table = reconcile(table, read_truth(truth, value_column=truth_column, target=target), notes)
        result = evaluate_scores(table, truth_table, n_resamples=resamples, seed=seed, confidence=CONFIDENCE,
                                 notes=notes)
        doc = {"results": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                           for row in result.to_dict(orient="records")], "notes": notes}
        if out is not None:
            try:
                atomic_write_text(out, result.to_csv(index=False) if out.suffix.lower() == ".csv"
                                  else json_text(doc))
            except OSError as exc:
                raise InputError(f"--out: cannot write {out} ({exc.strerror or exc})") from None
        if as_json:
            print_json(doc)
            return
        for metric, block in result.groupby("metric", sort=True):
            _metric_table(metric, block)
        for note in notes:
            say(f"note: {note}")
        if out is not None:
            say(f"evaluation written to {out}")


def _metric_table(metric: str, block: pd.DataFrame) -> None:
    targets = list(dict.fromkeys(block.target))
    columns = ["statistic"]
    for target in targets:
        n_models = int(block[block.target == target].n_models.iloc[0])
        label = "value" if target == DEFAULT_TARGET else target
        columns.append(f"{label} (M={n_models})")
    rows = []
    for statistic, stat_rows in block.groupby("statistic", sort=False):
        cells = [statistic]
        for target in targets:
            row = stat_rows[stat_rows.target == target].iloc[0]
            cell = _fmt(row.value)
            if np.isfinite(row.ci_low):
                cell += f" [{row.ci_low:.2f}, {row.ci_high:.2f}]"
            cells.append(cell)
        rows.append(cells)
    print_table(f"{metric}  (bootstrap {CONFIDENCE:.0%} interval over models beside the value)", columns, rows)


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"
