"""``emms select``: frozen scores to recall, then a budgeted race of real fine-tuning (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from emms.cli._common import (app, err_console, errors_as_exit, print_json, print_table, progress_reporter, say,
                              split_list)
from emms.errors import InputError


@app.command()
def select(
    data: str = typer.Option(..., "--data", help="Dataset source (as for emms rank): folder, manifest, builtin:NAME."),
    models: str = typer.Option(..., "--models", help="Comma-separated fine-tunable candidates: builtin:NAME, NAME or "
                                                     "NAME_random (image backbones; minilm_l6, minilm_l6_layer3, "
                                                     "minilm_l6_layer1 for text data)."),
    task: str | None = typer.Option(None, "--task", help="Task kind with a fine-tuning head: classification, captioning, "
                                        "vqa, referring or text_qa (inferred from the data when omitted; docs/select.md)."),
    budget: float | None = typer.Option(0.25, "--budget", help="Fraction of the full grid (every candidate fine-tuned once, "
                                        "fully) the race may spend; 0 = no fraction limit (needs --max-seconds)."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="Wall-clock limit of the race in seconds."),
    recall: str = typer.Option("emms,params", "--recall", help="Frozen metrics interleaved to order the pool."),
    metrics: str | None = typer.Option(None, "--metrics", help="Frozen metrics to show (default: --recall)."),
    encoders: str = typer.Option("offline", "--encoders", help="F-label text encoders for the frozen scores."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Held-out validation share (never trained on)."),
    max_samples: int | None = typer.Option(None, "--max-samples", help="Use a stratified sample of this many rows."),
    score_samples: int = typer.Option(2000, "--score-samples", help="Train rows the frozen metrics score."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the frozen scores' subsample."),
    finetune_seed: int = typer.Option(0, "--finetune-seed", help="Seed of the fine-tuning runs."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate of every run."),
    epochs: int = typer.Option(4, "--epochs", help="Epochs of a full run (the last rung)."),
    image_size: int = typer.Option(64, "--image-size", help="Training resolution (fixed-size nets use their own)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    eta: int = typer.Option(2, "--eta", help="Halving factor: keep the best 1/eta at each rung."),
    screen: str = typer.Option("0.1,0.25", "--screen", help="Screen before the race: one short run per candidate (one "
                               "epoch of its own one-cycle, batch 32) on the first fraction of the train split, then "
                               "the best half again on each next fraction; its order leads the race; 0 = no screen "
                               "(docs/select.md)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Run records and checkpoints (default: in the cache); "
                                        "rerun to resume."),
    cache: Path | None = typer.Option(None, "--cache", help="Feature cache folder."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    workers: int = typer.Option(1, "--workers", help="Parallel fine-tuning processes."),
    threads: int = typer.Option(1, "--threads", help="torch threads per worker."),
    out: Path | None = typer.Option(None, "--out", help="Write the selection to this .json or .csv file."),
    as_json: bool = typer.Option(False, "--json", help="Print the selection as JSON instead of a table."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report: the frozen ranking with the race's "
                                                              "predicted fine-tuned scores."),
) -> None:
    """Recommend the model that will fine-tune best: order the pool by frozen scores, then fine-tune
    the first candidates in a successive-halving race on a train split, judged on a held-out
    validation split, within --budget / --max-seconds. Re-run the same command to resume."""
    with errors_as_exit(resumable=True), progress_reporter() as progress:
        import emms
        from emms.finetune import FinetuneProtocol

        if out is not None and out.suffix.lower() not in (".json", ".csv"):
            raise InputError(f"--out: expected a file name ending in .json or .csv, got {str(out)!r}")
        protocol = FinetuneProtocol(epochs=epochs, image_size=image_size, batch_size=batch_size)

        def event(line: str) -> None:
            err_console.print(line, highlight=False, markup=False, soft_wrap=True)

        result = emms.select(data, split_list(models, "--models"), task, budget=budget or None, max_seconds=max_seconds,
                             recall=split_list(recall, "--recall"),
                             metrics=None if metrics is None else split_list(metrics, "--metrics"), encoders=encoders,
                             val_fraction=val_fraction, max_samples=max_samples, score_samples=score_samples, seed=seed,
                             finetune_seed=finetune_seed, lr=lr, protocol=protocol, eta=eta,
                             screen=_fractions(screen),
                             out_dir=out_dir,
                             cache=cache, device=device, workers=workers, threads=threads, on_event=event,
                             progress=progress)
        if out is not None:
            (result.to_json if out.suffix.lower() == ".json" else result.to_csv)(out)
        if report is not None:
            result.to_html(report)
        if as_json:
            print_json(result.to_dict())
        else:
            columns, rows = _rows(result)
            print_table(f"{result.meta['data']} · fine-tuned {result.meta['primary']} predicted on "
                        f"{result.meta['n_val']} held-out rows", columns, rows,
                        right=[c not in ("model", "progress") for c in columns])
            say(result.summary())
            say(result.how_sure())
            for note in result.notes:
                say(f"note: {note}")
        for path, what in ((out, "selection"), (report, "report")):
            if path is not None:
                err_console.print(f"{what} written to {path}", highlight=False)


def _rows(result) -> tuple[list[str], list[list[str]]]:  # noqa: ANN001 - emms.selection.Selection
    """Column names and formatted cells of the selection table."""
    frozen = [c for c in result.table.columns if c.startswith("frozen:")]
    screened = "screen" in result.table.columns and result.table["screen"].notna().any()
    columns = ["rank", "model", "predicted", "interval", "progress", *(["screen"] if screened else []),
               *(c.split(":", 1)[1] for c in frozen)]
    rows = []
    for row in result.table.to_dict("records"):
        predicted = "—" if row["predicted"] != row["predicted"] else f"{row['predicted']:.4f}"
        interval = "—" if row["low"] != row["low"] else f"{row['low']:.3f}–{row['high']:.3f}"
        progress = f"{row['epochs_done']}/{row['epochs']} ep, {row['status']}" + (" (extrap.)" if row["extrapolated"] else "")
        screen = [] if not screened else ["—" if row["screen"] != row["screen"] else
                                          f"{row['screen']:.4f} ({row['screen_low']:.3f}–{row['screen_high']:.3f}) "
                                          f"on {row['screen_fraction']:g}"]
        rows.append([str(row["rank"]), row["model"], predicted, interval, progress, *screen,
                     *(f"{row[c]:.4g}" if row[c] == row[c] else "—" for c in frozen)])
    return columns, rows


def _fractions(text: str) -> list[float]:
    """``--screen``'s comma-separated fractions ("0": none)."""
    try:
        return [float(item) for item in split_list(text, "--screen")]
    except ValueError:
        raise InputError(f"--screen: expected comma-separated fractions such as 0.1,0.25 (or 0), got {text!r}") from None
