"""``emms extract``: features of a dataset from several models, cached in the store (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from emms.cli._common import app, console, errors_as_exit, print_json, split_list


@app.command()
def extract(
    data: str = typer.Option(..., "--data", help="Dataset: builtin:NAME, an image folder, a CSV/JSONL/Parquet manifest or a saved Hugging Face dataset."),
    models: str = typer.Option(..., "--models", help="Comma-separated model specs (builtin:NAME, hf:ID, st:ID, timm:NAME, file:X.npy)."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory (default $EMMS_CACHE or ~/.cache/emms)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps."),
    batch_size: int = typer.Option(64, "--batch-size"),
    max_samples: int = typer.Option(None, "--max-samples", help="Seeded, stratified subsample of the data."),
    seed: int = typer.Option(0, "--seed", help="Subsampling seed."),
    task: str = typer.Option(None, "--task", help="Task kind of a manifest (inferred from its columns when omitted)."),
    as_json: bool = typer.Option(False, "--json", help="Print where each model's features are cached as JSON."),
) -> None:
    """Extract (or find in the cache) each model's features of DATA; an interrupted run resumes."""
    from emms.data import load_dataset
    from emms.extract import extract_features, features_key
    from emms.models import load_extractor
    from emms.store import Store

    with errors_as_exit():
        specs = split_list(models, "--models", "a comma-separated list of model specs")
        task_data = load_dataset(data, task=task, max_samples=max_samples, seed=seed)
        store = Store(cache)
        results = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console, disable=as_json) as bars:
            for spec in specs:
                extractor = load_extractor(spec, device=device)
                bar = bars.add_task(spec, total=len(task_data.inputs))
                features = extract_features(extractor, task_data, store=store, batch_size=batch_size,
                                            progress=lambda n, bar=bar: bars.advance(bar, n))
                key = features_key(extractor, task_data)
                results.append({"model": spec, "identity": extractor.identity, "key": key,
                                "shape": list(features.shape), "path": str(store.entry_path(key) / "data.npy")})
        if as_json:
            print_json({"data": task_data.name, "fingerprint": task_data.fingerprint, "n_samples": len(task_data),
                        "cache": str(store.root), "features": results})
            return
        console.print(f"{task_data.name}: {len(task_data)} samples ({task_data.task}); cache {store.root}",
                      highlight=False)
        for row in results:
            console.print(f"  {row['model']}: {tuple(row['shape'])} -> {row['path']}", highlight=False, soft_wrap=True)
