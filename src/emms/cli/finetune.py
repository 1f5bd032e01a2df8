"""``emms finetune``: build fine-tuned ground truth for a set of backbones and targets (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from emms.cli._common import app, console, err_console, errors_as_exit, split_list
from emms.errors import InputError
from emms.finetune import FinetuneData, FinetuneProtocol, estimate_steps, plan_grid, run_grid, write_csv_atomic
from emms.data.fashion_targets import TARGETS, benchmark_targets

BENCHMARK = "benchmark"


@app.command()
def finetune(
    data: str = typer.Option(..., "--data", help="Comma-separated targets: fm10, fm4, fm-tops4 ('benchmark' = all three), "
                                                 "or image-classification dataset sources (folder, manifest, builtin:NAME)."),
    models: str = typer.Option("all", "--models", help="Comma-separated packaged backbones ('all' = every one); "
                                                       "NAME_random = a randomly initialised copy."),
    lrs: str = typer.Option("1e-3", "--lrs", help="Comma-separated peak learning rates (chosen per model by validation)."),
    seeds: str = typer.Option("0,1", "--seeds", help="Comma-separated fine-tuning seeds (averaged)."),
    epochs: int = typer.Option(4, "--epochs"),
    image_size: int = typer.Option(64, "--image-size", help="Training resolution (fixed-size nets use their own)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    out: Path = typer.Option(..., "--out", help="Ground-truth CSV to write: target, model, value, ..."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Folder of per-run records and results.csv (default: "
                                        "OUT_runs/ beside --out)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    workers: int = typer.Option(1, "--workers", help="Parallel worker processes (2 on a 2-core CPU; 1 on a GPU)."),
    threads: int = typer.Option(1, "--threads", help="torch threads per worker."),
    n_train: int = typer.Option(2000, "--n-train", help="Benchmark targets: training images (Fashion-MNIST train split)."),
    n_val: int = typer.Option(500, "--n-val", help="Benchmark targets: validation images (train split, disjoint)."),
    n_test: int = typer.Option(1000, "--n-test", help="Benchmark targets: test images (Fashion-MNIST test split)."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the data splits."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Other datasets: validation fraction."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Other datasets: test fraction."),
    max_samples: int | None = typer.Option(None, "--max-samples", help="Other datasets: use a stratified sample of this "
                                           "many images."),
    task: str = typer.Option("classification", "--task", help="Other datasets: task kind to fine-tune, classification, "
                                                               "captioning, vqa, referring or text_qa (docs/finetune.md)."),
) -> None:
    """Fine-tune every backbone on every target for each lr and seed; write per-run records,
    results.csv and the ground-truth CSV (mean test score over seeds at the lr chosen on validation).
    Finished runs are never redone: re-run the same command to resume."""
    with errors_as_exit():
        from emms.models.backbones import BACKBONES  # imports torch: only when the command runs

        protocol = FinetuneProtocol(epochs=epochs, image_size=image_size, batch_size=batch_size)
        if not test_fraction > 0:
            raise InputError(f"--test-fraction: the ground truth is measured on a test split; expected a fraction above 0, "
                             f"got {test_fraction!r}")
        targets = _load_targets(data, n_train=n_train, n_val=n_val, n_test=n_test, seed=data_seed,
                                val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples, task=task)
        model_names = list(BACKBONES) if models.strip() == "all" else split_list(models, "--models")
        lr_values = [_number(v, "lrs", float) for v in split_list(lrs, "--lrs")]
        seed_values = [_number(v, "seeds", int) for v in split_list(seeds, "--seeds")]
        out_dir = out_dir or out.with_name(out.stem + "_runs")
        grid = dict(models=model_names, lrs=lr_values, seeds=seed_values, out_dir=out_dir, protocol=protocol)
        todo, n_done = plan_grid(targets, **grid)
        steps = estimate_steps(targets, protocol)
        total_steps = sum(steps[key.target] for key in todo)
        err_console.print(f"{len(todo)} run(s) to train, {n_done} already recorded in {out_dir}; "
                          f"{total_steps} optimisation steps on {device} with {workers} worker(s)")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        last_step: dict = {}
        with Progress(*columns, console=err_console, transient=False) as progress:
            bar = progress.add_task("fine-tuning", total=max(total_steps, 1), completed=0 if total_steps else 1)

            def on_progress(key, done: int, _total: int) -> None:  # noqa: ANN001
                progress.advance(bar, done - last_step.get(key, 0))
                last_step[key] = done

            def on_record(record: dict, reused: bool) -> None:
                if not reused:
                    progress.console.print(f"{record['target']} {record['model']} lr={record['lr']:g} seed={record['seed']}: "
                                           f"val {record['val_score']:.3f}  test {record['test_score']:.3f} {record['primary']}  "
                                           f"({record['seconds']:.0f} s)", highlight=False)

            result = run_grid(targets, device=device, workers=workers, threads=threads, on_progress=on_progress,
                              on_record=on_record, **grid)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(result.results, out_dir / "results.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(result.truth, out)
        console.print(_truth_table(result.truth))
        console.print(f"trained {result.n_trained}, reused {result.n_reused}; wrote {out} and {out_dir / 'results.csv'}")
        if result.failures:
            for failure in result.failures:
                err_console.print(f"[bold red]failed:[/] {failure}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1)


def _load_targets(spec: str, *, n_train: int, n_val: int, n_test: int, seed: int, val_fraction: float,
                  test_fraction: float, max_samples: int | None, task: str = "classification") -> list:
    names = []
    for item in split_list(spec, "--data"):
        names.extend(TARGETS if item == BENCHMARK else [item])
    out = []
    for name in dict.fromkeys(names):
        if name in TARGETS:
            if task != "classification":
                raise InputError(f"--task: benchmark target {name} is a classification task, got --task {task}")
            target = benchmark_targets([name], n_train=n_train, n_val=n_val, n_test=n_test, n_probe=1, seed=seed)[name]
            out.append(FinetuneData.from_benchmark(target))
        else:
            from emms.data import load_dataset
            from emms.finetune.heads._prepare import finetune_data

            task_data = load_dataset(name, task=task, max_samples=max_samples, seed=seed)
            out.append(finetune_data(task_data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed))
    return out


def _number(text: str, name: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"--{name}: expected {'integers' if kind is int else 'numbers'}, got {text!r}") from None


def _truth_table(truth) -> Table:  # noqa: ANN001 - pandas DataFrame
    table = Table(title="fine-tuned ground truth (mean test score over seeds at the chosen lr)", title_justify="left")
    for column in ("target", "model", "value", "± std", "lr", "val", "seeds"):
        table.add_column(column, justify="left" if column in ("target", "model") else "right")
    for row in truth.itertuples():
        table.add_row(row.target, row.model, f"{row.value:.4f}", f"{row.value_std:.4f}", f"{row.lr:g}",
                      f"{row.val_score:.4f}", str(row.n_seeds))
    return table
