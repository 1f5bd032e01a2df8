"""``emms rank`` and ``emms demo``: the main job, from a dataset and a model pool to a ranked report.

Output leads with the answer (:mod:`emms.answer`); ``--out`` writes the result document as JSON or
CSV by extension and ``--json`` prints the same JSON document. Every argument (the ground truth
included) is checked before any feature is extracted.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import typer

from emms._io import atomic_write_text
from emms.cli._common import (app, errors_as_exit, print_json, print_table, progress_reporter, say, split_list)
from emms.errors import InputError

DEMO_MODELS = ("mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "efflite1_imagenet", "efflite2_imagenet",
               "effb0_photo_vs_drawing", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn")
DEMO_METRICS = ("emms", "logme_flabels", "logme", "hscore_reg", "leep", "params")
#: The demo's fine-tuned truth: the fm10 target of the offline benchmark (BENCHMARKS.md §1), a copy
#: of those rows of benchmarks/data/finetune_truth.csv.
DEMO_TRUTH = "demo_truth.csv"
_OUT_SUFFIXES = (".json", ".csv")


@app.command()
def rank(
    data: str = typer.Option(..., "--data", help="Dataset: builtin:NAME, an image folder, a CSV/JSONL/Parquet manifest or a "
            "saved Hugging Face dataset."),
    models: str = typer.Option(..., "--models", help="Comma-separated model specs (builtin:NAME, hf:ID, st:ID, timm:NAME, "
            "file:X.npy)."),
    task: str = typer.Option(None, "--task", help="Task kind (classification, multilabel, regression, captioning, vqa, text_qa, "
            "referring, detection); inferred when omitted."),
    encoders: str = typer.Option("offline", "--encoders", help="Foundation text encoders for F-labels: a named set (offline, "
            "paper) or a comma-separated list."),
    metrics: str = typer.Option("emms", "--metrics", help="Comma-separated metric names (see `emms metrics`); the first one "
            "makes the recommendation."),
    option: list[str] = typer.Option(None, "--option", help="A metric option METRIC.NAME=VALUE (repeatable), e.g. knn.k=3 "
            "or emms.score=in_sample."),
    template: list[str] = typer.Option(None, "--template", help="Class-name prompt template with {} (repeatable; several are "
            "averaged), e.g. 'a photo of a {}.'."),
    truth: Path = typer.Option(None, "--truth", help="CSV of fine-tuned performance: a model column (names with or without "
            "builtin:) and a value column; optional target column."),
    truth_column: str = typer.Option("value", "--truth-column", help="The --truth column holding the fine-tuned performance "
            "(e.g. accuracy)."),
    target: str = typer.Option(None, "--target", help="The --truth target these models were ranked for, when its CSV holds "
            "several."),
    out: Path = typer.Option(None, "--out", help="Write the result here: JSON (.json, the --json document) or CSV (.csv, one "
            "row per model and metric)."),
    report: Path = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the result document as JSON instead of tables."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory for features and label embeddings (default $EMMS_CACHE or "
            "~/.cache/emms)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps: runs the models and text encoders; "
                                                       "on a GPU also EMMS's statistics and solve."),
    max_samples: int = typer.Option(None, "--max-samples", help="Seeded subsample of the data: rows, stratified by class for "
            "classification; for captioning and VQA it counts images, and every caption or question of a kept image stays (so "
            "there are more rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsample and the resamples."),
    resamples: int = typer.Option(10, "--resamples", help="Re-score the first metric on this many random halves of the samples "
            "to tell how often each model comes out best (0: skip)."),
    text_column: str = typer.Option(None, "--text-column", help="The data's input text column, when it is not named 'text'."),
    label_column: str = typer.Option(None, "--label-column", help="The data's label column, when it is not named 'label' (or "
            "the task's label column)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    image_size: int = typer.Option(None, "--image-size", help="Input resolution for the packaged backbones (default: native)."),
    layers: str = typer.Option(None, "--layers", help="Layers to score: best (the default, last with --scheduler: each "
            "layer scored, the best kept per model and metric), last (the model's own features), mean (mean of the pooled "
            "layers), all, or indices such as 3,-2 (each its own candidate)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Extract features and score on Dask: 'local' (a LocalCluster) or a "
            "scheduler address (tcp://host:8786; workers must share the --cache directory); default: in this process."),
) -> None:
    """Rank MODELS on DATA by each metric: the recommended model and how sure, then the table; optionally
    JSON/CSV and an HTML report."""
    with errors_as_exit(resumable=True):
        _check_outputs(out, report)
        metric_names = split_list(metrics, "--metrics")
        truth_values = read_truth_values(truth, truth_column, target) if truth is not None else None
        _run(data=data, models=split_list(models, "--models"), task=task, encoders=_encoders(encoders),
             metrics=metric_names, metric_options=parse_options(option or [], metric_names),
             label_options={"template": list(template)} if template else None, truth=truth_values, out=out,
             report=report, as_json=as_json, cache=cache, device=device, max_samples=max_samples, seed=seed,
             resamples=resamples, text_column=text_column, label_column=label_column, batch_size=batch_size,
             image_size=image_size, layers=layers, scheduler=scheduler)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("emms-demo"), "--out-dir", help="Where results.json and report.html are written."),
    max_samples: int = typer.Option(1000, "--max-samples", help="Images of the bundled Fashion-MNIST sample to use."),
    resamples: int = typer.Option(10, "--resamples", help="Random halves of the samples EMMS is re-scored on (0: skip)."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory (default $EMMS_CACHE or ~/.cache/emms)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result document as JSON instead of tables."),
) -> None:
    """The embedded default: rank the nine packaged backbones on the bundled Fashion-MNIST sample, and
    compare with their shipped fine-tuned accuracy on that task."""
    with errors_as_exit(resumable=True):
        _run(data="builtin:fashion-mnist", models=[f"builtin:{m}" for m in DEMO_MODELS], task="classification",
             encoders="offline", metrics=list(DEMO_METRICS), metric_options={}, label_options=None,
             truth=demo_truth(), out=out_dir / "results.json", report=out_dir / "report.html", as_json=as_json,
             cache=cache, device="cpu", max_samples=max_samples, seed=0, resamples=resamples, text_column=None,
             label_column=None, batch_size=64, image_size=64, layers=None, scheduler=None,
             truth_source="fine-tuned test accuracy on the fm10 target (Fashion-MNIST, 10 classes, mean of 3 seeds; "
                          "BENCHMARKS.md §1)")


def demo_truth() -> dict[str, float]:
    """The demo task's fine-tuned accuracies, ``{model: value}`` (bare backbone names)."""
    from emms.evaluate.summary import read_truth

    with resources.as_file(resources.files("emms.resources") / DEMO_TRUTH) as path:
        table = read_truth(path, target="fm10")
    return dict(zip(table.model, table.value))


def read_truth_values(path: Path, value_column: str, target: str | None) -> dict[str, float]:
    """``{model: value}`` from a truth CSV (one target: the only one there, or ``target``)."""
    from emms.evaluate.summary import read_truth

    try:
        table = read_truth(path, value_column=value_column, target=target)
    except InputError as exc:
        raise InputError(f"--truth: {str(exc).removeprefix('truth: ')}") from None
    targets = sorted(set(table.target))
    if len(targets) > 1:
        raise InputError(f"--truth: {path} holds targets {', '.join(targets)}; pick the one for this data with --target")
    if table.model.duplicated().any():
        raise InputError(f"--truth: {path} has more than one row for model {table.model[table.model.duplicated()].iloc[0]!r}")
    return dict(zip(table.model, table.value))


def parse_options(items: list[str], metrics: list[str]) -> dict[str, dict]:
    """``["knn.k=3", "emms.score=in_sample"]`` -> ``{"knn": {"k": 3}, "emms": {"score": "in_sample"}}``.

    Values are read as JSON where they parse (numbers, true/false, null, lists), else kept as text.
    The metric names and option names are checked against the registry (before any extraction).
    """
    from emms.pipeline import check_metrics

    options: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not sep or not dot or not metric or not name:
            raise InputError(f"--option: expected METRIC.NAME=VALUE (e.g. knn.k=3), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(metric, {})[name.strip()] = value
    try:
        check_metrics(metrics, options)
    except InputError as exc:
        if not str(exc).startswith("metric_options: "):
            raise
        raise InputError(f"--option: {str(exc).removeprefix('metric_options: ')}") from None
    return options


def _check_outputs(out: Path | None, report: Path | None) -> None:
    if out is not None and out.suffix.lower() not in _OUT_SUFFIXES:
        raise InputError(f"--out: expected a file name ending in .json or .csv, got {str(out)!r}")
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--report: expected a file name ending in .html, got {str(report)!r}")


def _run(*, data, models, task, encoders, metrics, metric_options, label_options, truth, out, report, as_json,
         cache, device, max_samples, seed, resamples, text_column, label_column, batch_size, image_size, layers,
         scheduler, truth_source: str | None = None) -> None:
    from emms.pipeline import rank as rank_api

    with progress_reporter() as draw:
        def progress(stage: str, item: str, done: int, total: int) -> None:
            if stage == "score":  # one line per metric would say little: count metrics instead
                item = ""
            draw(stage, item, done, total)

        result = rank_api(data, models, task=task, encoders=encoders, metrics=metrics, metric_options=metric_options,
                          label_options=label_options, max_samples=max_samples, seed=seed, cache=cache, device=device,
                          batch_size=batch_size, image_size=image_size, truth=truth, resamples=resamples,
                          text_column=text_column, label_column=label_column, progress=progress, scheduler=scheduler,
                          layers=layers)
    if truth_source:
        result.meta["truth_source"] = truth_source
    _write_outputs(result, out, report)
    if as_json:
        print_json(result.to_dict())
        return
    print_result(result)
    for path, what in ((out, "results"), (report, "report")):
        if path is not None:
            say(f"{what} written to {path}")


def _write_outputs(result, out: Path | None, report: Path | None) -> None:
    """Write --out and --report: both or neither (a failure removes what was written)."""
    texts = []
    if out is not None:
        texts.append((out, result.to_json() if out.suffix.lower() == ".json" else result.to_csv(), "--out"))
    if report is not None:
        texts.append((report, result.to_html(), "--report"))  # rendered before anything is written
    written: list[Path] = []
    for path, text, option in texts:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            for done in written:
                done.unlink(missing_ok=True)
            raise InputError(f"{option}: cannot write {path} ({exc.strerror or exc})") from None
        written.append(path)


def print_result(result) -> None:
    """The answer, the table of scores, agreement with a truth, timings and notes (tables whole when piped)."""
    answer = result.answer()
    say(f"Recommended: {answer['recommended']}")
    for sentence in answer["sentences"][1:]:
        say(f"  {sentence}")
    say("")
    wide, ranks = result.wide("score"), result.wide("rank")
    columns = ["model"] + (["best in resamples"] if answer["p_best"] else []) + list(wide.columns)
    columns += ["fine-tuned"] if result.truth else []
    rows = []
    for model in wide.index:
        cells = [model] + ([f"{answer['p_best'].get(model, 0.0):.0%}"] if answer["p_best"] else [])
        for metric in wide.columns:
            score = wide.loc[model, metric]
            cells.append("—" if score != score else f"{score:.4g} ({int(ranks.loc[model, metric])})")
        if result.truth:
            cells.append(f"{result.truth[model]:.4g}")
        rows.append(cells)
    meta = result.meta
    print_table(f"{meta['data']} · {meta['task']} · {meta['n_samples']} samples — score (rank) per metric", columns, rows)
    if result.correlations is not None:
        corr = result.correlations
        source = meta.get("truth_source", "the --truth values")
        print_table(f"agreement with {source}", list(corr.columns),
                    [[_cell(v) for v in rec.values()] for rec in corr.to_dict("records")])
    if meta.get("layers") == "best":
        chosen: dict[str, list[str]] = {}
        for item in meta["layer_chosen"]:
            chosen.setdefault(item["model"], []).append(f"{item['metric']} {item['layer']}")
        say("best layer (index): " + "; ".join(f"{model}: {', '.join(picks)}" for model, picks in chosen.items()))
    t = result.timings.groupby("stage", sort=False)["seconds"].sum()
    scoring = result.table.groupby("metric", sort=False)["seconds"].sum()
    say("timings: " + ", ".join([f"{s} {v:.1f}s" for s, v in t.items()] + [f"{m} {v:.2f}s" for m, v in scoring.items()]))
    for note in result.notes:
        say(f"note: {note}")


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def _encoders(text: str) -> str | list[str]:
    items = split_list(text, "--encoders")
    return items[0] if len(items) == 1 and items[0] in ("offline", "paper") else items
