"""``emms embed``: a task's labels -> K F-label arrays in one .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emms.cli._common import app, console, errors_as_exit, load_array
from emms.errors import InputError


@app.command()
def embed(
    task: str = typer.Option(..., "--task", help="Task kind: classification, multilabel, regression, captioning, "
                                                 "vqa, text_qa, referring, detection."),
    labels: Path = typer.Option(..., "--labels", help="CSV or JSONL with the task's label columns, or .npy class "
                                                      "ids (classification, with --classes)."),
    out: Path = typer.Option(..., "--out", help="Output .npz (written atomically)."),
    classes: Path = typer.Option(None, "--classes", help="Text file of class names, one per line (classification "
                                                         "ids, multilabel, detection; VQA answer vocabulary)."),
    encoders: str = typer.Option("offline", "--encoders", help="A set (offline, paper) or comma-separated encoder "
                                                               "names/specs (st:, hf:, onnx:, e5:, table:)."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template(s) with {} for the class name; "
                                                                "repeat to average several."),
    layout: str = typer.Option(None, "--layout", help="Captioning: pairs (one sample per caption) or per_image."),
    mode: str = typer.Option(None, "--mode", help="VQA: qa (question + answer) or answer (answer vocabulary)."),
    cache: Path = typer.Option(None, "--cache", help="Embedding cache folder (default $EMMS_CACHE or ~/.cache/emms)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch."),
) -> None:
    """Embed a task's labels with K foundation text encoders (F-labels) and save them to an .npz."""
    with errors_as_exit():
        from emms.flabels import check_task, embed_f_labels, save_f_labels
        from emms.compute.store import Store

        task = check_task(task)
        frame = _read_labels(labels, task)
        class_names = _read_class_names(classes) if classes is not None else None
        options = {k: v for k, v in (("template", template or None), ("layout", layout), ("mode", mode)) if v is not None}
        store = None if no_cache else Store(cache)
        with Progress(TextColumn("embedding labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("embed", total=None)
            flabels = embed_f_labels(task, frame, class_names, encoders=encoders, store=store, device=device,
                                     progress=lambda done, total: bar.update(job, completed=done, total=total),
                                     batch_size=batch_size, **options)
        save_f_labels(out, flabels, extra_meta={"labels_file": labels.name, "options": options})
        for encoder_id, width in zip(flabels.encoder_ids, flabels.widths):
            console.print(f"  {encoder_id}: {flabels.rows.shape[0]} x {width}", highlight=False)
        console.print(f"wrote {len(flabels.arrays)} F-label arrays to {out}", highlight=False)


def _read_labels(path: Path, task: str) -> pd.DataFrame | np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        if task != "classification":
            raise InputError(f"labels: a {suffix} file holds class ids, which only fits --task classification; "
                             "give a CSV or JSONL with the task's columns")
        return load_array(str(path), "labels")
    if not path.is_file():
        raise InputError(f"labels: file not found: {path}")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
    except ValueError as exc:
        raise InputError(f"labels: cannot read {path} ({' '.join(str(exc).split())})") from None
    raise InputError(f"labels: expected a .csv, .jsonl, .json or (classification) .npy file, got {path.name}")


def _read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"classes: file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError(f"classes: {path} has no class names; expected one name per line")
    return names
