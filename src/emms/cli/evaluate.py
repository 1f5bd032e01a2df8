"""``emms evaluate``: how well do transferability scores agree with fine-tuned ground truth?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from emms.cli._common import app, console, errors_as_exit, print_json
from emms.evaluate.summary import DEFAULT_TARGET, evaluate_scores, read_scores, read_truth

CONFIDENCE = 0.95


@app.command()
def evaluate(
    scores: Path = typer.Option(..., "--scores", help="CSV: model, metric, score (long) or model + one column per metric; optional target column."),
    truth: Path = typer.Option(..., "--truth", help="CSV: model, value (fine-tuned performance, higher is better); optional target column."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples over models for the intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Weighted Kendall tau (symmetric and truth-weighted), Kendall, Spearman, Pearson, rel@k, regret@k
    and top-1 hit of every metric's scores against the ground truth, with bootstrap intervals."""
    with errors_as_exit():
        result = evaluate_scores(read_scores(scores), read_truth(truth), n_resamples=resamples, seed=seed,
                                 confidence=CONFIDENCE)
        if as_json:
            print_json([{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                        for row in result.to_dict(orient="records")])
            return
        for metric, block in result.groupby("metric", sort=True):
            console.print(_metric_table(metric, block))


def _metric_table(metric: str, block: pd.DataFrame) -> Table:
    targets = list(dict.fromkeys(block.target))
    table = Table(title=f"{metric}  (bootstrap {CONFIDENCE:.0%} interval over models below the value)",
                  title_justify="left")
    table.add_column("statistic", no_wrap=True)
    for target in targets:
        n_models = int(block[block.target == target].n_models.iloc[0])
        label = "value" if target == DEFAULT_TARGET else target
        table.add_column(f"{label} (M={n_models})", justify="right", overflow="fold")
    for statistic, rows in block.groupby("statistic", sort=False):
        cells = []
        for target in targets:
            row = rows[rows.target == target].iloc[0]
            cell = _fmt(row.value)
            if np.isfinite(row.ci_low):
                cell += f"\n[{row.ci_low:.2f}, {row.ci_high:.2f}]"
            cells.append(cell)
        table.add_row(statistic, *cells)
    return table


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"
