"""``emms rank`` and ``emms demo``: the main job, from a dataset and a model pool to a ranked report."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emms.cli._common import app, console, errors_as_exit, print_json, split_list
from emms._io import atomic_write_text
from emms.errors import InputError

DEMO_MODELS = ("mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "efflite1_imagenet", "efflite2_imagenet",
               "effb0_photo_vs_drawing", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn")
DEMO_METRICS = ("emms", "logme_flabels", "logme", "hscore_reg", "leep")


@app.command()
def rank(
    data: str = typer.Option(..., "--data", help="Dataset: builtin:NAME, an image folder, or a CSV/JSONL/Parquet manifest."),
    models: str = typer.Option(..., "--models", help="Comma-separated model specs (builtin:NAME, hf:ID, st:ID, timm:NAME, file:X.npy)."),
    task: str = typer.Option(None, "--task", help="Task kind (classification, multilabel, regression, captioning, vqa, text_qa, referring, detection); inferred when omitted."),
    encoders: str = typer.Option("offline", "--encoders", help="Foundation text encoders for F-labels: a named set (offline, paper) or a comma-separated list."),
    metrics: str = typer.Option("emms", "--metrics", help="Comma-separated metric names (see `emms metrics`)."),
    truth: Path = typer.Option(None, "--truth", help="CSV with columns model,value: fine-tuned performance, for rank correlations."),
    out: Path = typer.Option(None, "--out", help="Write the result as JSON here."),
    report: Path = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable result instead of a table."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory for features and label embeddings (default $EMMS_CACHE or ~/.cache/emms)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps: runs the models and text encoders; "
                                                       "on a GPU also EMMS's statistics and solve."),
    max_samples: int = typer.Option(None, "--max-samples", help="Seeded, stratified subsample of the data."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(64, "--batch-size"),
    image_size: int = typer.Option(None, "--image-size", help="Input resolution for the packaged backbones (default: native)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Extract features and score on Dask: 'local' (a LocalCluster) or a scheduler address (tcp://host:8786; workers must share the --cache directory); default: in this process."),
) -> None:
    """Rank MODELS on DATA by each metric; print a table, optionally write JSON and an HTML report."""
    with errors_as_exit():
        _run(data=data, models=split_list(models, "--models"), task=task, encoders=_encoders(encoders),
             metrics=split_list(metrics, "--metrics"), truth=truth, out=out, report=report, as_json=as_json,
             cache=cache, device=device, max_samples=max_samples, seed=seed, batch_size=batch_size,
             image_size=image_size, scheduler=scheduler)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("emms-demo"), "--out-dir", help="Where results.json and report.html are written."),
    max_samples: int = typer.Option(1000, "--max-samples", help="Images of the bundled Fashion-MNIST sample to use."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory (default $EMMS_CACHE or ~/.cache/emms)."),
) -> None:
    """The embedded default: rank the nine packaged backbones on the bundled Fashion-MNIST sample."""
    with errors_as_exit():
        _run(data="builtin:fashion-mnist", models=[f"builtin:{m}" for m in DEMO_MODELS], task="classification",
             encoders="offline", metrics=list(DEMO_METRICS), truth=None, out=out_dir / "results.json",
             report=out_dir / "report.html", as_json=False, cache=cache, device="cpu", max_samples=max_samples,
             seed=0, batch_size=64, image_size=64, scheduler=None)


def _run(*, data, models, task, encoders, metrics, truth, out, report, as_json, cache, device, max_samples,
         seed, batch_size, image_size, scheduler) -> None:
    from emms.pipeline import rank as rank_api

    truth_values = _read_truth(truth) if truth is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=as_json) as bars:
        tasks: dict[tuple[str, str], int] = {}

        def progress(stage: str, item: str, done: int, total: int) -> None:
            key = (stage, item if stage == "extract features" else "")
            if key not in tasks:
                label = f"{stage}: {item.split(':')[-1]}" if key[1] else stage
                tasks[key] = bars.add_task(label, total=max(total, 1))
            bars.update(tasks[key], completed=done, total=max(total, 1))

        result = rank_api(data, models, task=task, encoders=encoders, metrics=metrics, max_samples=max_samples,
                          seed=seed, cache=cache, device=device, batch_size=batch_size, image_size=image_size,
                          truth=truth_values, progress=progress, scheduler=scheduler)
    html_text = result.to_html() if report is not None else None  # render before writing anything
    written: list[Path] = []
    for path, text, option in ((out, result.to_json() if out is not None else None, "--out"),
                               (report, html_text, "--report")):
        if path is not None:
            try:
                atomic_write_text(path, text)
            except OSError as exc:
                for done in written:  # all outputs or none
                    done.unlink(missing_ok=True)
                raise InputError(f"{option}: cannot write {path} ({exc.strerror or exc})") from None
            written.append(path)
    if as_json:
        print_json(result.records() if result.correlations is None else
                   {"results": result.records(), "correlations": result.to_dict()["correlations"]})
        return
    _print_table(result)
    for path, what in ((out, "results"), (report, "report")):
        if path is not None:
            console.print(f"{what} written to [bold]{path}[/]")


def _print_table(result) -> None:
    metrics = result.metrics
    table = Table(title=f"{result.meta['data']} · {result.meta['task']} · {result.meta['n_samples']} samples")
    table.add_column("model", overflow="fold", min_width=min(32, max(len(m) for m in result.meta["models"])))
    for m in metrics:
        table.add_column(m, justify="right")
    if result.truth:
        table.add_column("fine-tuned", justify="right")
    first = result.table[result.table["metric"] == metrics[0]].sort_values("rank")
    for model in first["model"]:
        cells = [model]
        for m in metrics:
            hit = result.table[(result.table["model"] == model) & (result.table["metric"] == m)]
            cells.append("—" if hit.empty else f"{hit.iloc[0]['score']:.4g} ({int(hit.iloc[0]['rank'])})")
        if result.truth:
            cells.append(f"{result.truth[model]:.4g}")
        table.add_row(*cells)
    console.print(table)
    if result.correlations is not None:
        corr = Table(title="agreement with fine-tuned performance")
        for col in result.correlations.columns:
            corr.add_column(col, justify="right")
        for rec in result.correlations.to_dict("records"):
            corr.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in rec.values()])
        console.print(corr)
    t = result.timings.groupby("stage", sort=False)["seconds"].sum()
    scoring = result.table.groupby("metric", sort=False)["seconds"].sum()
    console.print("timings: " + ", ".join([f"{s} {v:.1f}s" for s, v in t.items()] +
                                           [f"{m} {v:.2f}s" for m, v in scoring.items()]))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


def _read_truth(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise InputError(f"--truth: file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"model", "value"} <= set(reader.fieldnames):
            raise InputError(f"--truth: expected a CSV with columns model,value; got {reader.fieldnames}")
        out = {}
        for row in reader:
            try:
                out[row["model"]] = float(row["value"])
            except ValueError:
                raise InputError(f"--truth: value {row['value']!r} for model {row['model']!r} is not a number") from None
    return out


def _encoders(text: str) -> str | list[str]:
    items = split_list(text, "--encoders")
    return items[0] if len(items) == 1 and items[0] in ("offline", "paper") else items
