"""The offline image benchmark: every metric against fine-tuned ground truth (issues 7 and 10).

Candidates: the 9 packaged backbones plus a randomly initialised MobileNetV2 (``mnv2_imagenet_random``),
all at 64 px, frozen. Targets: ``emms.data.fashion_targets`` (fm10, fm4, fm-tops4) with the same split
sizes as the ground truth (``benchmarks/data/finetune_truth.csv``), so the 2,000 probe (scoring)
images of each target are disjoint from the images the candidates were fine-tuned on.

Steps: extract probe features (and source-head probabilities, one forward pass) through the
content-addressed store; embed the F-labels with the offline encoders; score EMMS (default GCV,
in-sample residual, alternating solver, official-code solver) and every registered baseline on the
same features; correlate with the truth (``emms.evaluate.evaluate_scores``); time EMMS's GCV score
against the in-sample solve (issue 10's cost ratio, median of repeats).

LEEP and NCE need a source classification head: they are scored on the sub-pool of pretrained
backbones that have one (7 models; the CRAFT and EasyOCR backbones have no classifier head, and
the random copy's head would be random), and the correlation table also reports every metric on
that same sub-pool so the comparison is like for like.

    OMP_NUM_THREADS=1 python benchmarks/offline_benchmark.py            # everything (~60 min cold, ~20 min with cached features, 2 shared cores)
    OMP_NUM_THREADS=1 python benchmarks/offline_benchmark.py --metrics emms --update   # rescore EMMS only
    python benchmarks/offline_benchmark.py --report-only   # re-evaluate the committed scores

Outputs: ``benchmarks/data/offline_scores.csv`` (target, model, metric, score, seconds),
``benchmarks/data/offline_correlations.csv`` (every statistic from ``evaluate_scores``),
``benchmarks/data/offline_emms_cost.csv`` (GCV vs in-sample seconds per target and model) and a
markdown report on stdout (and ``--markdown PATH``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import emms
from emms.flabels import embed_f_labels
from emms.evaluate import evaluate_scores, read_truth, weighted_tau
from emms.data.fashion_targets import benchmark_targets
from emms.compute.extract import extract_features, extract_features_and_source_probs
from emms.flabels import native_target
from emms.metrics import get_metric, score_pool
from emms.metrics.emms import EMMS
from emms.models import load_extractor, parameter_count
from emms.compute.store import Store
from _timing import median_seconds, median_seconds_and_result

ROOT = Path(__file__).resolve().parent
SPLIT_SIZES = {"n_train": 4000, "n_val": 500, "n_probe": 2000, "n_test": 2000, "seed": 0}  # as the ground truth
IMAGE_SIZE = 64
CANDIDATES = {name: f"builtin:{name}?image_size={IMAGE_SIZE}" for name in (
    "mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "efflite1_imagenet", "efflite2_imagenet",
    "effb0_photo_vs_drawing", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn")}
CANDIDATES["mnv2_imagenet_random"] = f"builtin:mnv2_imagenet?image_size={IMAGE_SIZE}&pretrained=false"
# Models whose source head is a real classifier (LEEP / NCE need its probabilities).
WITHOUT_SOURCE_HEAD = {"mnv2_imagenet_random"}
# EMMS variants: output name -> registry options.
EMMS_VARIANTS = {
    "emms": {},                                               # per-encoder GCV R² (issue 19 default)
    "emms_columns": {"mixture": "columns"},                   # the paper's column mixture, GCV (default before issue 19)
    "emms_in_sample": {"score": "in_sample", "mixture": "columns"},   # the paper's residual
    "emms_alternating": {"solver": "alternating", "mixture": "columns"},
    "emms_official": {"solver": "official"},
}
# Metrics whose per-model scores the report lists beside the truth (for the analysis).
DETAIL_METRICS = ("emms", "emms_columns", "emms_in_sample", "logme_flabels", "logme", "nleep", "gbc", "sfda", "hscore_reg", "linear_probe")


def probe_features(extractor, task_data, store: Store, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Frozen features (N, D) and, for backbones with a source head, its probabilities (N, C_src).

    Both come from one forward pass in one resumable store entry (:mod:`emms.compute.extract`, float32;
    LEEP/NCE renormalise the rows in float64 when they read them). Entries are keyed on the inputs
    only, so fm10 and fm4, which share their probe images, share their features.
    """
    if hasattr(extractor, "extract_with_source_probs"):
        return extract_features_and_source_probs(extractor, task_data, store, batch_size)
    return extract_features(extractor, task_data, store, batch_size), None


def score_target(target_name: str, features: dict[str, np.ndarray], probs: dict[str, np.ndarray],
                 classes: np.ndarray, flabels: list[np.ndarray], metrics: list[str],
                 n_params: dict[str, int | None]) -> list[dict]:
    """Rows (target, model, metric, score, seconds) for every requested metric on one target.

    ``n_params``: each model's parameter count, for the metrics that read it (the size prior).
    """
    rows = []

    def add(model: str, metric: str, value: float, seconds: float) -> None:
        rows.append({"target": target_name, "model": model, "metric": metric, "score": float(value), "seconds": seconds})

    def timed(function, *args, **kwargs) -> tuple[object, float]:
        seconds, value = median_seconds_and_result(lambda: function(*args, **kwargs), 1)
        return value, seconds

    for metric in metrics:
        print(f"  {target_name}: {metric}", file=sys.stderr, flush=True)
        if metric == "emms":
            for variant, options in EMMS_VARIANTS.items():
                for model, feats in features.items():
                    value, seconds = timed(emms.score, feats, flabels, "emms", **options)
                    add(model, variant, value, seconds)
            continue
        info = get_metric(metric)
        target = flabels if "flabels" in info.targets else classes
        if info.pool_relative:
            values, seconds = timed(score_pool, features, target, metric)
            for model, value in values.items():
                add(model, metric, value, seconds / len(values))
            continue
        for model, feats in features.items():
            if info.needs_source_probs:
                if model not in probs:
                    continue
                value, seconds = timed(emms.score, feats, target, metric, source_probs=probs[model])
            elif info.needs_n_params:
                if n_params.get(model) is None:  # no torch module to count (ONNX, C engine): left out, as LEEP is
                    continue
                value, seconds = timed(emms.score, feats, target, metric, n_params=n_params[model])
            else:
                value, seconds = timed(emms.score, feats, target, metric)
            add(model, metric, value, seconds)
    return rows


def gcv_cost_ratio(features: dict[str, np.ndarray], flabels: list[np.ndarray], repeats: int) -> list[dict]:
    """Median seconds of EMMS(score="gcv").fit and EMMS(score="in_sample").fit per model (same features)."""
    rows = []
    for model, feats in features.items():
        seconds = {score: median_seconds(lambda score=score: EMMS(score=score).fit(feats, flabels), repeats)
                   for score in ("gcv", "in_sample")}
        rows.append({"model": model, "width": feats.shape[1], "gcv_s": seconds["gcv"], "in_sample_s": seconds["in_sample"]})
    return rows


def correlations(scores: pd.DataFrame, truth: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """evaluate_scores on the full pool (metrics that scored every model) and on the source-head sub-pool."""
    full_models = set(truth.model)
    per_metric_models = scores.groupby("metric").model.apply(set)
    full = [m for m, models in per_metric_models.items() if models == full_models]
    sub_models = sorted(set(scores[scores.metric == "leep"].model)) if "leep" in per_metric_models else []
    parts = []
    if full:
        table = evaluate_scores(scores[scores.metric.isin(full)], truth, n_resamples=n_resamples)
        parts.append(table.assign(pool=f"all {len(full_models)}"))
    if sub_models:
        sub_scores = scores[scores.model.isin(sub_models)]
        table = evaluate_scores(sub_scores, truth[truth.model.isin(sub_models)], n_resamples=n_resamples)
        parts.append(table.assign(pool=f"{len(sub_models)} with a source head"))
    return pd.concat(parts, ignore_index=True)


def machine() -> str:
    """Platform, numpy, thread setting and the code's git commit (``+dirty`` with uncommitted changes)."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.machine()}, numpy {np.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"code {commit or 'unknown'}{'+dirty' if dirty else ''}")


def markdown_report(scores: pd.DataFrame, corr: pd.DataFrame, cost: pd.DataFrame, meta: dict,
                    truth: pd.DataFrame | None = None) -> str:
    lines = [f"{meta['title']}: {meta['n_models']} candidates x {meta['n_targets']} target(s), "
             f"N = {meta['n_probe']} probe samples per target; {meta['machine']}", ""]
    for pool, part in corr.groupby("pool", sort=False):
        lines += [f"### Pool: {pool} models — mean over targets (95 % bootstrap CI over models)", ""]
        mean = part[part.target == ("mean" if meta["n_targets"] > 1 else part.target.iloc[0])]
        lines += ["| metric | weighted τ symmetric | weighted τ truth-weighted | Kendall τ | Pearson | rel@1 | regret@1 | top-1 hits |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        order = (mean[mean.statistic == "weighted_tau_symmetric"].sort_values("value", ascending=False).metric)
        for metric in order:
            cell = mean[mean.metric == metric].set_index("statistic")

            def ci(stat: str) -> str:
                r = cell.loc[stat]
                return f"{r.value:+.3f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"

            lines.append(f"| {metric} | {ci('weighted_tau_symmetric')} | {ci('weighted_tau_truth_weighted')} | "
                         f"{cell.loc['kendall_tau'].value:+.3f} | {cell.loc['pearson'].value:+.3f} | "
                         f"{cell.loc['rel@1'].value:.4f} | {cell.loc['regret@1'].value:.4f} | "
                         f"{cell.loc['top1_hit'].value * meta['n_targets']:.0f}/{meta['n_targets']} |")
        lines.append("")
        per_target = part[(part.target != "mean") & part.statistic.isin(
            ["weighted_tau_symmetric", "weighted_tau_truth_weighted", "rel@1"])]
        wide = per_target.pivot_table(index="metric", columns=["target", "statistic"], values="value")
        targets = sorted(per_target.target.unique())
        lines += [f"Per target (wτ sym / wτ truth-weighted / rel@1), pool: {pool}", "",
                  "| metric | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for metric in order:
            cells = [f"{wide.loc[metric, (t, 'weighted_tau_symmetric')]:+.2f} / "
                     f"{wide.loc[metric, (t, 'weighted_tau_truth_weighted')]:+.2f} / {wide.loc[metric, (t, 'rel@1')]:.3f}"
                     for t in targets]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    if "noise_ceiling" in meta:
        lines += ["Noise ceiling of the truth (expected weighted τ symmetric of a perfect scorer; see noise_ceiling)", "",
                  "| pool | " + " | ".join(sorted(next(iter(meta["noise_ceiling"].values())))) + " |",
                  "|---|" + "---:|" * len(next(iter(meta["noise_ceiling"].values())))]
        lines += [f"| {pool} | " + " | ".join(f"{v:.2f}" for _, v in sorted(values.items())) + " |"
                  for pool, values in meta["noise_ceiling"].items()]
        lines.append("")
    if truth is not None:
        lines += per_model_tables(scores, truth, meta.get("truth_label", "fine-tuned accuracy"))
        if meta["n_models"] > 2:
            lines += leave_one_out_tables(scores, truth)
    seconds = scores.groupby("metric").seconds.agg(["mean", "sum"]).sort_values("mean")
    lines += ["### Wall-clock per metric (seconds per model and target; pool-relative: pool time / pool size)", "",
              "| metric | mean s per model | total s (all targets) |", "|---|---:|---:|"]
    lines += [f"| {m} | {r['mean']:.3f} | {r['sum']:.1f} |" for m, r in seconds.iterrows()]
    lines.append("")
    if not cost.empty:
        total = cost[["gcv_s", "in_sample_s"]].sum()
        lines += [f"### Issue 10: cost of EMMS's default GCV score vs the in-sample solve (median of {meta['repeats']})", "",
                  "| feature width | (target, model) pairs | GCV s | in-sample s | ratio |", "|---:|---:|---:|---:|---:|"]
        for width, part in cost.groupby("width"):
            s = part[["gcv_s", "in_sample_s"]].sum()
            lines.append(f"| {width} | {len(part)} | {s.gcv_s:.3f} | {s.in_sample_s:.3f} | {s.gcv_s / s.in_sample_s:.2f}x |")
        lines.append(f"| all | {len(cost)} | {total.gcv_s:.3f} | {total.in_sample_s:.3f} | "
                     f"{total.gcv_s / total.in_sample_s:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def per_model_tables(scores: pd.DataFrame, truth: pd.DataFrame, truth_label: str = "fine-tuned accuracy") -> list[str]:
    """Per target: truth and the :data:`DETAIL_METRICS` scores of every model, best truth first."""
    metrics = [m for m in DETAIL_METRICS if m in set(scores.metric)]
    lines = []
    for target, part in scores[scores.metric.isin(metrics)].groupby("target"):
        wide = part.pivot_table(index="model", columns="metric", values="score")[metrics]
        values = truth[truth.target == target].set_index("model").value
        wide = wide.assign(truth=values.reindex(wide.index)).sort_values("truth", ascending=False)
        lines += [f"Scores on {target} (truth = {truth_label}; metric ranks in brackets)", "",
                  "| model | truth | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
        ranks = wide[metrics].rank(ascending=False, method="min")
        for model, row in wide.iterrows():
            cells = [f"{row[m]:.4g} ({ranks.loc[model, m]:.0f})" if np.isfinite(row[m]) else "–" for m in metrics]
            lines.append(f"| {model} | {row.truth:.4f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def noise_ceiling(truth_table: pd.DataFrame, models: list[str], draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """Expected symmetric weighted tau between the truth and a replicate of it, per target.

    The replicate is value + N(0, (value_std / sqrt(n_seeds))²): how well a perfect scorer could
    agree with a truth measured with this much seed noise (the columns of finetune_truth.csv).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for target, part in truth_table[truth_table.model.isin(models)].groupby("target"):
        value = part.value.to_numpy(float)
        sem = (part.value_std / np.sqrt(part.n_seeds)).to_numpy(float)
        out[target] = float(np.mean([weighted_tau(value, value + rng.normal(0.0, sem), variant="symmetric")
                                     for _ in range(draws)]))
    return out


def leave_one_out_tables(scores: pd.DataFrame, truth: pd.DataFrame, metrics: tuple[str, ...] = DETAIL_METRICS) -> list[str]:
    """Mean symmetric weighted tau over targets with each candidate left out in turn (a sensitivity check)."""
    metrics = [m for m in metrics if m in set(scores.metric)]
    models = sorted(truth.model.unique())
    lines = ["Sensitivity: mean weighted τ (symmetric) over targets with one candidate left out", "",
             "| left out | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for left_out in [None, *models]:
        cells = []
        for metric in metrics:
            taus = []
            for target, part in truth.groupby("target"):
                pair = scores[(scores.metric == metric) & (scores.target == target)].merge(part, on="model")
                pair = pair[pair.model != left_out]
                taus.append(weighted_tau(pair.score.to_numpy(), pair.value.to_numpy(), variant="symmetric"))
            cells.append(f"{np.mean(taus):+.3f}")
        lines.append(f"| {left_out or '(none)'} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-benchmark-cache"),
                        help="feature / embedding store (outside the repository)")
    parser.add_argument("--truth", type=Path, default=ROOT / "data" / "finetune_truth.csv")
    parser.add_argument("--scores", type=Path, default=ROOT / "data" / "offline_scores.csv")
    parser.add_argument("--correlations", type=Path, default=ROOT / "data" / "offline_correlations.csv")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    parser.add_argument("--metrics", default="all", help="comma-separated registry names, or 'all'")
    parser.add_argument("--update", action="store_true", help="replace only these metrics' rows in --scores")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the GCV vs in-sample timing (0: skip)")
    parser.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--cost", type=Path, default=ROOT / "data" / "offline_emms_cost.csv")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--report-only", action="store_true",
                        help="skip extraction and scoring: re-evaluate --scores (and --cost) and print the report")
    args = parser.parse_args(argv)
    truth = read_truth(args.truth)
    meta = {"title": f"Offline image benchmark ({IMAGE_SIZE} px)", "n_models": len(CANDIDATES),
            "n_probe": SPLIT_SIZES["n_probe"], "repeats": args.repeats, "machine": machine()}
    if args.report_only:
        scores = pd.read_csv(args.scores)
        cost = pd.read_csv(args.cost) if args.cost.is_file() else pd.DataFrame()
        write_report(scores, truth, cost, meta, args)
        return

    metrics = ([m.name for m in emms.available_metrics()] if args.metrics == "all"
               else [get_metric(m.strip()).name for m in args.metrics.split(",")])
    store = Store(args.cache)
    targets = benchmark_targets(**SPLIT_SIZES)
    extractors = {name: load_extractor(spec) for name, spec in CANDIDATES.items()}

    rows, cost_rows = [], []
    for target_name, target in targets.items():
        task_data = target.task_data("probe")
        features, probs = {}, {}
        for name, extractor in extractors.items():
            print(f"{target_name}: features of {name}", file=sys.stderr, flush=True)
            features[name], source_probs = probe_features(extractor, task_data, store, args.batch_size)
            if source_probs is not None and name not in WITHOUT_SOURCE_HEAD:
                probs[name] = source_probs
        classes = native_target(task_data.task, task_data.labels, task_data.class_names)
        flabels = embed_f_labels(task_data.task, task_data.labels, task_data.class_names, encoders="offline",
                                 store=store).arrays
        counts = {name: parameter_count(extractor) for name, extractor in extractors.items()}
        rows += score_target(target_name, features, probs, classes, flabels, metrics, counts)
        if args.repeats > 0 and "emms" in metrics:
            cost_rows += [{"target": target_name, **r} for r in gcv_cost_ratio(features, flabels, args.repeats)]

    scores = pd.DataFrame(rows, columns=["target", "model", "metric", "score", "seconds"])
    if args.update and args.scores.is_file():
        old = pd.read_csv(args.scores)
        scores = pd.concat([old[~old.metric.isin(scores.metric.unique())], scores], ignore_index=True)
    scores = scores.sort_values(["target", "metric", "model"], kind="stable").reset_index(drop=True)
    args.scores.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.scores, index=False, float_format="%.10g")
    cost = pd.DataFrame(cost_rows)
    if not cost.empty:
        cost.to_csv(args.cost, index=False, float_format="%.6g")
    write_report(scores, truth, cost, meta, args)


def write_report(scores: pd.DataFrame, truth: pd.DataFrame, cost: pd.DataFrame, meta: dict, args) -> None:
    meta = {**meta, "n_targets": scores.target.nunique()}
    if {"value_std", "n_seeds"} <= set(pd.read_csv(args.truth, nrows=1).columns):
        raw = pd.read_csv(args.truth)
        with_head = sorted(set(scores[scores.metric == "leep"].model))
        meta["noise_ceiling"] = {f"all {len(CANDIDATES)}": noise_ceiling(raw, list(CANDIDATES)),
                                 **({f"{len(with_head)} with a source head": noise_ceiling(raw, with_head)} if with_head else {})}
    corr = correlations(scores, truth, args.n_resamples)
    corr.to_csv(args.correlations, index=False, float_format="%.6g")
    report = markdown_report(scores, corr, cost, meta, truth)
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report + "\n")


if __name__ == "__main__":
    main()
