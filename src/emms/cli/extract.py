"""``emms extract``: features of a dataset from several models, cached in the store (resumable).

It prepares exactly what ``emms rank`` reads: the same model loading (``--image-size``), the same
subsample and the same cache entries (features with source-head probabilities, for models that have
a source head), so a later ``rank`` with the same arguments extracts nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emms.cli._common import app, errors_as_exit, print_json, progress_reporter, say, split_list


@app.command()
def extract(
    data: str = typer.Option(..., "--data", help="Dataset: builtin:NAME, an image folder, a CSV/JSONL/Parquet manifest or a "
            "saved Hugging Face dataset."),
    models: str = typer.Option(..., "--models", help="Comma-separated model specs (builtin:NAME, hf:ID, st:ID, timm:NAME, "
            "file:X.npy)."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory (default $EMMS_CACHE or ~/.cache/emms)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps."),
    batch_size: int = typer.Option(64, "--batch-size"),
    image_size: int = typer.Option(None, "--image-size", help="Input resolution for the packaged backbones (default: native); "
            "as rank's."),
    max_samples: int = typer.Option(None, "--max-samples", help="Seeded subsample, as rank's (for captioning and VQA it counts "
            "images)."),
    seed: int = typer.Option(0, "--seed", help="Subsampling seed."),
    task: str = typer.Option(None, "--task", help="Task kind of a manifest (inferred from its columns when omitted)."),
    text_column: str = typer.Option(None, "--text-column", help="The data's input text column, when it is not named 'text'."),
    label_column: str = typer.Option(None, "--label-column", help="The data's label column, when it is not named 'label'."),
    layers: str = typer.Option(None, "--layers", help="Layers to extract, as rank's --layers (default: every layer, "
            "which rank's default 'best' scores)."),
    as_json: bool = typer.Option(False, "--json", help="Print where each model's features are cached as JSON."),
) -> None:
    """Extract (or find in the cache) each model's features of DATA, as rank needs them; an interrupted run resumes."""
    from emms.data import as_task_data
    from emms.compute.extract import extract_layer_choice, features_key, with_source_probs
    from emms.models.layers import parse_layers
    from emms.pipeline import extract_model, has_source_head, load_extractors
    from emms.compute.store import Store

    with errors_as_exit(resumable=True):
        specs = split_list(models, "--models", "a comma-separated list of model specs")
        task_data = as_task_data(data, task=task, max_samples=max_samples, seed=seed, text_column=text_column,
                                 label_column=label_column)
        extractors, _ = load_extractors(specs, device=device, image_size=image_size)
        store = Store(cache)
        results = []
        choice = parse_layers(layers)
        with progress_reporter(not as_json) as draw:
            for spec, extractor in extractors.items():
                def report(done: int, total: int, spec: str = spec) -> None:
                    draw("extract features", spec, done, total)

                if choice != "last":  # every layer rank's choice scores, from one pass, cached per layer
                    entries, probs_of, _ = extract_layer_choice({spec: extractor}, task_data, choice, store, batch_size,
                                                                with_probs={spec: has_source_head(extractor)},
                                                                progress=lambda _name, done, total: report(done, total))
                    for name, features in entries.items():
                        probs = probs_of.get(name)
                        results.append({"model": name, "identity": extractor.identity, "shape": list(features.shape),
                                        "source_classes": None if probs is None else probs.shape[1]})
                    continue
                features, probs = extract_model(extractor, task_data, store, batch_size, report)
                entry = with_source_probs(extractor) if has_source_head(extractor) else extractor
                key = features_key(entry, task_data)
                results.append({"model": spec, "identity": entry.identity, "key": key,
                                "shape": list(features.shape), "source_classes": None if probs is None else probs.shape[1],
                                "path": str(store.entry_path(key) / "data.npy")})
        if as_json:
            print_json({"data": task_data.name, "fingerprint": task_data.fingerprint, "n_samples": len(task_data),
                        "cache": str(store.root), "features": results})
            return
        say(f"{task_data.name}: {len(task_data)} samples ({task_data.task}); cache {store.root}")
        for row in results:
            head = "" if row["source_classes"] is None else f" + {row['source_classes']} source-class probabilities"
            where = f" -> {row['path']}" if "path" in row else ""
            say(f"  {row['model']}: {tuple(row['shape'])}{head}{where}")
