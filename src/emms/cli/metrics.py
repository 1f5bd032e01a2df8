"""``emms metrics``: list every registered metric with its capabilities."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from emms.cli._common import app, console, errors_as_exit, print_json
from emms.metrics import available_metrics

_FLAGS = (("needs_source_probs", "source probs"), ("pool_relative", "pool-relative"),
          ("randomised", "randomised"), ("streamable", "streamable"))


@app.command("metrics")
def metrics_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List the registered metrics: accepted targets, source probabilities, pool-relative, ..."""
    with errors_as_exit():
        rows = [info.as_dict() for info in available_metrics()]
        if as_json:
            print_json(rows)
            return
        table = Table("metric", "targets", "capabilities", "summary")
        table.columns[0].no_wrap = True
        for row in rows:
            flags = [label for key, label in _FLAGS if row[key]]
            table.add_row(row["name"], ", ".join(row["targets"]), ", ".join(flags), row["summary"])
        console.print(table)
