"""The multi-task benchmark (issue 18): fine-tuned truth and scores for captioning, VQA, referring and
text QA, on the GENERATED tasks of :mod:`emms.data.multitask` (real Fashion-MNIST garments and real
Debian fortunes, templated labels).

Three steps, each resumable (after ``calibrate``: the difficulty check on 3 candidates, run first):

    # 1. ground truth: fine-tune every candidate (all layers + the kind's head), one JSON record per run
    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/multitask_benchmark.py grid --kinds captioning,vqa
    # 2. scores on frozen features of each kind's TRAIN split (what a user has before fine-tuning)
    OMP_NUM_THREADS=1 python benchmarks/multitask_benchmark.py score --kinds captioning,vqa
    # 3. correlations with bootstrap intervals, noise ceiling, per-model tables, timings
    python benchmarks/multitask_benchmark.py report

Per-kind protocol (:data:`SETTINGS`: epochs, batch size, peak lr): AdamW + one-cycle as ``emms.finetune``
(BN momentum 0.1, no flips: the labels name positions), seeds 0 and 1; the truth
of a (kind, model) is the mean test score over seeds (captioning BLEU-4, VQA and text QA answer
accuracy, referring acc@IoU>=0.5). Outputs under ``benchmarks/data/``: ``multitask_runs/`` (records),
``multitask_truth.csv``, ``multitask_results.csv``, ``multitask_scores.csv``,
``multitask_correlations.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RUNS = DATA / "multitask_runs"
SIZES = {"train": 300, "val": 100, "test": 200}
IMAGE_KINDS = ("captioning", "vqa", "referring")
#: Image candidates: the 9 packaged backbones + the random MobileNetV2 (the 3 most expensive last).
IMAGE_MODELS = ("mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "effb0_photo_vs_drawing",
                "ocrvgg_easyocr", "onet_mtcnn", "mnv2_imagenet_random", "efflite1_imagenet", "efflite2_imagenet",
                "vgg16bn_craft")
#: A kind is evaluated on the candidates whose grid is complete, once there are at least this many.
MIN_EVALUATED = 4
TEXT_MODELS = ("minilm_l6_layer1", "minilm_l6_layer3", "minilm_l6", "minilm_l6_random")
#: Per kind: (epochs, batch size, peak lr); calibrated on CPU (BENCHMARKS.md §13). Referring needs
#: more optimisation steps than 300 canvases give at batch 64, hence batch 16, and 15 epochs with the
#: feature-map head (revision 2; at 10 epochs MobileNetV2 was still learning and its seeds 0.1 apart).
SETTINGS = {"captioning": (8, 64, 1e-3), "vqa": (6, 32, 1e-3), "referring": (15, 16, 1e-3), "text_qa": (3, 32, 1e-4)}
SEEDS = (0, 1)
#: Calibration candidates: the cheapest backbone, a mid-size ImageNet one and its random copy.
CALIBRATION_IMAGE = ("onet_mtcnn", "mnv2_imagenet", "mnv2_imagenet_random")
CALIBRATION_TEXT = ("minilm_l6_layer1", "minilm_l6", "minilm_l6_random")
#: Metrics scored per kind (besides EMMS): what the kind's native target allows.
CLASS_METRICS = ("logme", "hscore_reg", "transrate", "gbc", "sfda", "nleep", "knn", "linear_probe", "leep")
#: EMMS as scored: the default (GCV-corrected residual) and the official code's single-alternation number.
EMMS_VARIANTS = {"emms": ("emms", {}), "emms_official": ("emms", {"solver": "official"})}
BASELINES = {"captioning": (), "vqa": CLASS_METRICS, "referring": ("logme",), "text_qa": CLASS_METRICS}


def protocol(kind: str):  # noqa: ANN201 - emms.finetune.FinetuneProtocol
    from emms.finetune import FinetuneProtocol

    epochs, batch_size, _ = SETTINGS[kind]
    return FinetuneProtocol(epochs=epochs, batch_size=batch_size, hflip=False)


def finetune_data(kind: str, store=None):  # noqa: ANN001, ANN201 - Store -> (FinetuneData, TaskData of train)
    """The kind's FinetuneData (train / val / test prepared for its head) and its train TaskData."""
    from emms.data.multitask import multitask_tasks
    from emms.finetune.heads._prepare import from_splits

    splits = multitask_tasks([kind], sizes=SIZES)[kind]
    return from_splits(splits["train"], splits["val"], splits["test"], name=f"mt-{kind}", store=store), splits["train"]


KINDS_ORDER = ("captioning", "vqa", "referring", "text_qa")


def models_of(kind: str) -> tuple[str, ...]:
    return TEXT_MODELS if kind == "text_qa" else IMAGE_MODELS


def run_grid(kinds: list[str], seeds: tuple[int, ...], models: list[str] | None) -> None:
    """Fine-tune kind by kind (so that what finishes first is a complete kind), seed by seed."""
    import torch

    from emms.finetune import run_grid as grid

    torch.set_num_threads(1)
    for kind in kinds:
        data, _ = finetune_data(kind)
        for seed in seeds:
            chosen = [m for m in models_of(kind) if models is None or m in models]

            def progress(record: dict, reused: bool) -> None:
                if not reused:
                    print(f"{time.strftime('%H:%M:%S')} {kind} {record['model']} seed {record['seed']}: "
                          f"test {record['test_score']:.4f} ({record['cpu_seconds']:.0f} CPU s)", flush=True)

            result = grid([data], chosen, lrs=[SETTINGS[kind][2]], seeds=[seed], out_dir=RUNS, protocol=protocol(kind),
                          on_record=progress)
            for failure in result.failures:
                print(f"FAILED {failure}", file=sys.stderr, flush=True)
    write_truth()


def calibrate(kinds: list[str], seeds: tuple[int, ...] = SEEDS) -> None:
    """Difficulty check before the grid: the calibration candidates, both seeds, the grid's protocol,
    records in ``multitask_calibration/`` (separate from the grid's); prints each kind's spread."""
    import torch

    from emms.finetune import run_grid as grid

    torch.set_num_threads(1)
    for kind in kinds:
        data, _ = finetune_data(kind)
        models = CALIBRATION_TEXT if kind == "text_qa" else CALIBRATION_IMAGE
        result = grid([data], models, lrs=[SETTINGS[kind][2]], seeds=list(seeds), out_dir=DATA / "multitask_calibration",
                      protocol=protocol(kind))
        print(result.results[["target", "model", "seed", "val_score", "test_score", "cpu_seconds"]].to_string(index=False))
        print(result.truth.to_string(index=False), flush=True)


def write_truth(show: bool = True) -> None:
    """Collect every record under :data:`RUNS` into multitask_results.csv and multitask_truth.csv."""
    import json

    from emms.finetune import aggregate_truth

    rows = []
    for path in sorted(RUNS.glob("runs/*/*.json")):
        record = json.loads(path.read_text())
        rows.append({"target": record["target"], "model": record["model"], "lr": record["lr"], "seed": record["seed"],
                     "metric": record["primary"], "val_score": record["val_score"], "test_score": record["test_score"],
                     **{f"test_{k}": v for k, v in (record["test_metrics"] or {}).items()},
                     "cpu_seconds": record["cpu_seconds"], "seconds": record["seconds"]})
    results = pd.DataFrame(rows)
    if results.empty:
        return
    results.to_csv(DATA / "multitask_results.csv", index=False, float_format="%.6g")
    metric = results.groupby("target").metric.first()
    truth = aggregate_truth(results).assign(metric=lambda t: t.target.map(metric))
    truth.to_csv(DATA / "multitask_truth.csv", index=False, float_format="%.6g")
    if show:
        print(truth.to_string(index=False))


def text_extractor(name: str):  # noqa: ANN201 - a frozen text candidate as a FeatureExtractor
    from emms.finetune.backbones import frozen_extractor

    return frozen_extractor(name)  # what emms.select scores for the text candidates


def score(kinds: list[str], cache: Path) -> None:
    """Frozen features of each kind's train split -> EMMS, LogME-F and the kind's baselines."""
    import emms
    from emms.flabels import embed_f_labels
    from emms.compute.extract import extract_features, extract_features_and_source_probs
    from emms.flabels import native_target
    from emms.metrics import get_metric
    from emms.models import load_extractor
    from emms.compute.store import Store

    store = Store(cache)
    path = DATA / "multitask_scores.csv"
    for kind in kinds:
        rows = []
        data, task = finetune_data(kind, store)
        target_name = data.name
        features, probs = {}, {}
        for model in models_of(kind):
            print(f"{kind}: features of {model}", file=sys.stderr, flush=True)
            if kind == "text_qa":
                features[model] = extract_features(text_extractor(model), task, store, 64)
                continue
            base = model.removesuffix("_random")
            spec = f"builtin:{base}?image_size=64" + ("&pretrained=false" if model.endswith("_random") else "")
            extractor = load_extractor(spec)
            if hasattr(extractor, "extract_with_source_probs") and not model.endswith("_random"):
                features[model], probs[model] = extract_features_and_source_probs(extractor, task, store, 64)
            else:
                features[model] = extract_features(extractor, task, store, 64)
        flabels = embed_f_labels(task.task, task.labels, task.class_names, encoders="offline", store=store).arrays
        classes = (np.asarray(data.train[1], dtype=np.int64) if kind == "text_qa"
                   else native_target(task.task, task.labels, task.class_names) if kind != "captioning" else None)
        for name, (metric, options) in {**EMMS_VARIANTS, **{m: (m, {}) for m in ("logme_flabels", *BASELINES[kind])}}.items():
            info = get_metric(metric)
            target = flabels if "flabels" in info.targets else classes
            print(f"{kind}: {name}", file=sys.stderr, flush=True)
            for model, feats in features.items():
                if info.needs_source_probs and model not in probs:
                    continue
                extra = {"source_probs": probs[model]} if info.needs_source_probs else {}
                started = time.perf_counter()
                value = emms.score(feats, target, metric, **options, **extra)
                rows.append({"target": target_name, "model": model, "metric": name, "score": float(value),
                             "seconds": time.perf_counter() - started})
        old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["target", "model", "metric", "score", "seconds"])
        merged = pd.concat([old[old.target != target_name], pd.DataFrame(rows)], ignore_index=True)
        merged.sort_values(["target", "metric", "model"]).to_csv(path, index=False, float_format="%.10g")


#: The paper's abstract, per kind: EMMS's gain over LogME with F-labels (%, weighted τ) and its wall-clock speed-up.
PAPER = {"captioning": (20.1, 3.59), "vqa": (54.8, 6.19), "referring": (26.3, 6.29), "text_qa": (12.2, 5.66)}


def read_records(folder: Path) -> pd.DataFrame:
    """One row per run record under ``folder``/runs: target, model, seed, test score, CPU seconds."""
    import json

    rows = [json.loads(path.read_text()) for path in sorted(folder.glob("runs/*/*.json"))]
    return pd.DataFrame([{"target": r["target"], "model": r["model"], "seed": r["seed"], "metric": r["primary"],
                          "test_score": r["test_score"], "cpu_seconds": r["cpu_seconds"]} for r in rows],
                        columns=["target", "model", "seed", "metric", "test_score", "cpu_seconds"])


def spread_table(records: pd.DataFrame) -> list[str]:
    """Per target: mean ± sd over seeds per model and each gap to the next model in seed standard errors."""
    lines = []
    for target, part in records.groupby("target"):
        stats = (part.groupby("model").test_score.agg(["mean", "std", "count"]).sort_values("mean", ascending=False))
        lines += [f"{target} ({part.metric.iloc[0]}, test split):", "",
                  "| model | seeds | mean | sd over seeds | gap to next / its standard error |", "|---|---:|---:|---:|---:|"]
        rows = list(stats.itertuples())
        for i, row in enumerate(rows):
            gap = ""
            if i + 1 < len(rows) and row.count > 1 and rows[i + 1].count > 1:
                nxt = rows[i + 1]
                se = np.sqrt(row.std ** 2 / row.count + nxt.std ** 2 / nxt.count)
                gap = f"{row.mean - nxt.mean:.3f} / {se:.3f} = {(row.mean - nxt.mean) / max(se, 1e-12):.1f}"
            lines.append(f"| {row.Index} | {row.count} | {row.mean:.4f} | {row.std:.4f} | {gap} |")
        lines.append("")
    return lines


def calibration_agreement(records: pd.DataFrame, scores: pd.DataFrame) -> list[str]:
    """Per kind and metric: how many of the calibration candidates' pairs the scores order as the
    truth does (3 models give 3 pairs: an anecdote, not a benchmark)."""
    truth = records.groupby(["target", "model"]).test_score.mean()
    lines = ["Pairs of calibration candidates ordered as by fine-tuning (of 3; ties in truth excluded):", "",
             "| metric | " + " | ".join(t.removeprefix("mt-") for t in truth.index.unique(0)) + " |",
             "|---|" + "---:|" * truth.index.unique(0).size]
    for metric in sorted(scores.metric.unique()):
        cells = []
        for target in truth.index.unique(0):
            values = scores[(scores.target == target) & (scores.metric == metric)].set_index("model").score
            models = [m for m in truth[target].index if m in values.index]
            pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:] if truth[target][a] != truth[target][b]]
            agree = sum((truth[target][a] - truth[target][b]) * (values[a] - values[b]) > 0 for a, b in pairs)
            cells.append(f"{agree}/{len(pairs)}" if pairs else "–")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines + [""]


def report(n_resamples: int) -> str:
    """Markdown: calibration spreads, grid progress, scores vs truth for finished kinds, EMMS vs LogME-F timing."""
    from emms.evaluate import evaluate_scores, weighted_tau

    lines = ["### Calibration (3 candidates x 2 seeds, the grid's protocol)", ""]
    lines += spread_table(read_records(DATA / "multitask_calibration"))
    lines += calibration_agreement(read_records(DATA / "multitask_calibration"), pd.read_csv(DATA / "multitask_scores.csv"))
    grid = read_records(RUNS)
    lines += ["### Grid progress", "", "| kind | runs finished | of |", "|---|---:|---:|"]
    for kind in KINDS_ORDER:
        lines.append(f"| {kind} | {int((grid.target == f'mt-{kind}').sum())} | {len(models_of(kind)) * len(SEEDS)} |")
    lines.append("")
    scores = pd.read_csv(DATA / "multitask_scores.csv")
    seconds = scores.groupby(["target", "metric"]).seconds.sum().unstack()
    lines += ["### EMMS vs LogME with F-labels: wall-clock per kind (seconds summed over the candidates, one call each)", "",
              "| kind | EMMS (GCV) s | EMMS official s | LogME-F s | LogME-F / EMMS | LogME-F / EMMS official | paper |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for target in seconds.index:
        kind = target.removeprefix("mt-")
        e, o, lf = (seconds.loc[target].get(m, np.nan) for m in ("emms", "emms_official", "logme_flabels"))
        lines.append(f"| {kind} | {e:.2f} | {o:.2f} | {lf:.2f} | {lf / e:.2f}x | {lf / o:.2f}x | {PAPER[kind][1]:.2f}x |")
    lines.append("")
    write_truth(show=False)
    truth = pd.read_csv(DATA / "multitask_truth.csv") if (DATA / "multitask_truth.csv").is_file() else pd.DataFrame(
        columns=["target", "model", "value", "value_std", "n_seeds", "metric"])
    complete = truth[truth.n_seeds >= len(SEEDS)]
    done = {t: sorted(set(complete[complete.target == t].model) & set(scores[scores.target == t].model)
                      & set(models_of(t.removeprefix("mt-")))) for t in sorted(complete.target.unique())}
    kinds = [t for t, models in done.items() if len(models) >= MIN_EVALUATED]  # candidates with their full truth
    if not kinds:
        return "\n".join(lines + ["No kind's grid has finished: no correlations yet.", ""])
    evaluated = pd.concat([scores[(scores.target == t) & scores.model.isin(done[t])] for t in kinds])
    corr = evaluate_scores(evaluated, complete[complete.target.isin(kinds)], n_resamples=n_resamples)
    corr.to_csv(DATA / "multitask_correlations.csv", index=False, float_format="%.6g")
    rng = np.random.default_rng(0)
    for kind in kinds:
        part = complete[(complete.target == kind) & complete.model.isin(done[kind])].sort_values("value", ascending=False)
        sem = (part.value_std / np.sqrt(part.n_seeds)).to_numpy()
        ceiling = np.mean([weighted_tau(part.value.to_numpy(), part.value.to_numpy() + rng.normal(0, sem), variant="symmetric")
                           for _ in range(2000)])
        lines += [f"#### {kind}: truth = mean test {part.metric.iloc[0]} over {int(part.n_seeds.min())} seeds, "
                  f"{len(part)} of {len(models_of(kind.removeprefix('mt-')))} candidates "
                  f"(noise ceiling of weighted τ: {ceiling:.2f})", "",
                  "| model | truth ± seed sd | emms | logme_flabels |", "|---|---:|---:|---:|"]
        wide = scores[scores.target == kind].pivot_table(index="model", columns="metric", values="score")
        for _, row in part.iterrows():
            lines.append(f"| {row.model} | {row.value:.4f} ± {row.value_std:.4f} | "
                         + " | ".join(f"{wide.loc[row.model, m]:.4g}" for m in ("emms", "logme_flabels")) + " |")
        c = corr[(corr.target == kind)]
        lines += ["", "| metric | weighted τ (95% CI) | Kendall τ | rel@1 | s per model |", "|---|---|---:|---:|---:|"]
        per_model = scores[scores.target == kind].groupby("metric").seconds.mean()
        for _, r in c[c.statistic == "weighted_tau_symmetric"].sort_values("value", ascending=False).iterrows():
            cell = c[c.metric == r.metric].set_index("statistic")
            interval = (f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if np.isfinite(r.ci_low)
                        else f"(no interval: {len(part)} models)")
            lines.append(f"| {r.metric} | {r.value:+.3f} {interval} | "
                         f"{cell.loc['kendall_tau'].value:+.3f} | {cell.loc['rel@1'].value:.4f} | {per_model[r.metric]:.3f} |")
        emms_tau, logme_tau = (c[(c.metric == m) & (c.statistic == "weighted_tau_symmetric")].value.iloc[0]
                               for m in ("emms", "logme_flabels"))
        paper_gain = PAPER[kind.removeprefix("mt-")][0]
        lines += ["", f"EMMS vs LogME-F on {kind}: weighted τ {emms_tau:+.3f} vs {logme_tau:+.3f} "
                      f"(difference {emms_tau - logme_tau:+.3f}); the paper reports a {paper_gain:.1f} % gain.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("calibrate", "grid", "score", "report", "truth"))
    parser.add_argument("--kinds", default="captioning,vqa,referring,text_qa")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--models", default=None, help="comma-separated subset of the candidates")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-multitask-cache"))
    parser.add_argument("--n-resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",")]
    if args.step == "grid":
        run_grid(kinds, tuple(int(s) for s in args.seeds.split(",")), args.models.split(",") if args.models else None)
    elif args.step == "calibrate":
        calibrate(kinds, tuple(int(s) for s in args.seeds.split(",")))
    elif args.step == "truth":
        write_truth()
    elif args.step == "score":
        score(kinds, args.cache)
    else:
        print(report(args.n_resamples))


if __name__ == "__main__":
    main()
