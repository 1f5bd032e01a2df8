"""Layer-wise features (issue 22): what extracting every layer costs, and what scoring them buys.

``timing``: per model, the median seconds of a last-layer-only pass (``extractor.extract``) and of an
all-layers pass (``extractor.extract_layers(inputs, all layers)``, one forward pass with hooks or
hidden states), interleaved round by round in the same process (so load changes hit both alike);
the ratio all / last is the figure (goal <= 1.3). The load average is printed before and after.

``images`` / ``text``: the offline benchmarks of BENCHMARKS.md §1 (same candidates, targets and
ground truth), every candidate's layers extracted once (``emms.compute.extract.extract_layer_features``,
cached per layer) and scored by a subset of metrics per layer; ``last`` / ``mean`` / ``best`` are
then formed exactly as ``rank(layers=...)`` forms them (``emms.models.layers``) and correlated with
the truth side by side. Images use a seeded stratified subsample of each target's probe split
(``--n-probe``, default 1,000 of 2,000) to fit the shared CPU; ``last`` is re-measured on the same
subsample, so the three columns are comparable with each other (not with §1's N = 2,000 rows).

    OMP_NUM_THREADS=1 python benchmarks/bench_layers.py timing
    OMP_NUM_THREADS=1 EMMS_FASHION_MNIST_DIR=... python benchmarks/bench_layers.py images
    OMP_NUM_THREADS=1 python benchmarks/bench_layers.py text --fortunes-dir DIR
    python benchmarks/bench_layers.py images --report-only      # re-evaluate the committed scores

Outputs (images/text): ``benchmarks/data/layers_{images,text}_scores.csv`` (target, model, metric,
layer, score) and ``layers_{images,text}_correlations.csv``, and a markdown report on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import emms
from _timing import interleaved_medians
from emms.data.taskdata import subsample
from emms.flabels import embed_f_labels
from emms.evaluate import evaluate_scores, read_truth
from emms.compute.extract import extract_layer_features
from emms.flabels import native_target
from emms.metrics import get_metric
from emms.models import load_extractor
from emms.models.layers import LayerPlan, collapse_rows, mean_features, plan_layers
from emms.compute.store import Store

ROOT = Path(__file__).resolve().parent
METRICS = ("emms", "logme_flabels", "logme", "hscore_reg", "gbc", "nleep", "linear_probe")
CHOICES = ("last", "mean", "best")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# timing ---------------------------------------------------------------------------------------------

def timing(args) -> None:
    from emms.flabels.encoders.sentence import packaged_minilm_path

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n_images, 28, 28), dtype=np.uint8)
    words = "the a dog cat market fell rose sharply today park ball plays runs quickly over under".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 30)))) for _ in range(args.n_texts)]
    minilm = packaged_minilm_path()
    models = {f"builtin:{name}?image_size={args.image_size}": images for name in (
        "mnv2_imagenet", "efflite0_imagenet", "effb0_photo_vs_drawing", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn")}
    models.update({f"hf:{minilm}": texts, f"st:{minilm}": texts})
    print(f"load average before: {load_average()}; {args.n_images} images at {args.image_size} px, "
          f"{args.n_texts} texts, batch {args.batch_size}, {args.repeats} interleaved rounds", flush=True)
    print("\n| model | layers | last-layer pass s | all-layers pass s | ratio |\n|---|---:|---:|---:|---:|")
    for spec, inputs in models.items():
        extractor = load_extractor(spec)
        n = len(extractor.layer_names)
        extractor.extract_layers(inputs[:args.batch_size], range(n), args.batch_size)  # warm-up
        seconds, results = interleaved_medians({
            "last": lambda: extractor.extract(inputs, batch_size=args.batch_size),
            "all": lambda: extractor.extract_layers(inputs, range(n), batch_size=args.batch_size)}, args.repeats)
        assert np.allclose(results["all"][-1], results["last"], rtol=1e-5, atol=1e-6)
        print(f"| {spec.replace(str(minilm), 'MiniLM-L6')} | {n} | {seconds['last']:.3f} | {seconds['all']:.3f} | "
              f"{seconds['all'] / seconds['last']:.2f} |", flush=True)
    print(f"\nload average after: {load_average()}")


# ranking --------------------------------------------------------------------------------------------

def score_layers(target: str, layers: dict[str, dict[int, np.ndarray]], classes: np.ndarray, flabels: list,
                 metrics: list[str]) -> pd.DataFrame:
    """Scores of last / mean / best per (model, metric), formed as rank(layers=...) forms them."""
    widths = {model: {k: f.shape[1] for k, f in by_layer.items()} for model, by_layer in layers.items()}
    per_layer = plan_layers("all", widths)
    mean_plan = plan_layers("mean", widths)
    features = {name: layers[model][k] for name, (model, k) in per_layer.scored.items()}
    features.update({model: mean_features(list(layers[model].values()))
                     for model, (_, layer) in mean_plan.scored.items() if layer == "mean"})
    rows = []
    for metric in metrics:
        info = get_metric(metric)
        y = flabels if "flabels" in info.targets else classes
        print(f"  {target}: {metric} on {len(features)} feature sets", file=sys.stderr, flush=True)
        for name, feats in features.items():
            rows.append({"model": name, "metric": metric, "score": float(emms.score(feats, y, metric)),
                         "seconds": 0.0, "weights": None})
    averaged = {model for model, (_, layer) in mean_plan.scored.items() if layer == "mean"}
    layer_entries = {name: v for name, v in per_layer.scored.items() if v[0] not in averaged}
    plans = {"last": LayerPlan("best", {f"{m}#layer{max(ls)}": (m, max(ls)) for m, ls in layers.items()}),
             "mean": LayerPlan("mean", {**layer_entries, **{m: (m, "mean") for m in averaged}}),
             "best": LayerPlan("best", per_layer.scored)}  # "last": one entry per model, kept as it is
    out = []
    for choice, plan in plans.items():
        collapsed, _ = collapse_rows([r for r in rows if r["model"] in plan.scored], plan)
        out += [{"target": target, "model": r["model"], "metric": f"{r['metric']} [{choice}]", "base": r["metric"],
                 "choice": choice, "layer": r["layer"], "score": r["score"]} for r in collapsed]
    return pd.DataFrame(out)


def image_layers(args, store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    from emms.data.fashion_targets import benchmark_targets
    from offline_benchmark import CANDIDATES, SPLIT_SIZES

    parts = []
    for target_name, target in benchmark_targets(**SPLIT_SIZES).items():
        data = subsample(target.task_data("probe"), args.n_probe, seed=0)
        layers = {}
        for name, spec in CANDIDATES.items():
            print(f"{target_name}: layers of {name} (load {load_average()})", file=sys.stderr, flush=True)
            extractor = load_extractor(spec)
            got = extract_layer_features(extractor, data, range(len(extractor.layer_names)), store, args.batch_size)
            layers[name] = dict(enumerate(got.values()))
        classes = native_target(data.task, data.labels, data.class_names)
        flabels = embed_f_labels(data.task, data.labels, data.class_names, encoders="offline", store=store).arrays
        parts.append(score_layers(target_name, layers, classes, flabels, args.metrics))
    return pd.concat(parts, ignore_index=True), read_truth(ROOT / "data" / "finetune_truth.csv")


def text_layers(args, store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    from text_benchmark import TARGET, candidates, fortune_splits

    probe = fortune_splits(args.fortunes_dir, 0)["probe"]
    layers = {}
    for name, extractor in candidates().items():
        print(f"layers of {name}", file=sys.stderr, flush=True)
        got = extract_layer_features(extractor, probe, range(len(getattr(extractor, "layer_names", "x"))), store,
                                     args.batch_size)
        layers[name] = dict(enumerate(got.values()))
    classes = native_target(probe.task, probe.labels, probe.class_names)
    flabels = embed_f_labels(probe.task, probe.labels, probe.class_names, encoders="offline", store=store).arrays
    metrics = [m for m in args.metrics if not get_metric(m).needs_source_probs]
    return score_layers(TARGET, layers, classes, flabels, metrics), read_truth(ROOT / "data" / "text_truth.csv")


def report(scores: pd.DataFrame, corr: pd.DataFrame, truth: pd.DataFrame, title: str) -> str:
    mean = corr[corr.target == ("mean" if scores.target.nunique() > 1 else scores.target.iloc[0])]
    cell = mean.set_index(["metric", "statistic"])
    n_targets = scores.target.nunique()
    lines = [title, "", "| metric | " + " | ".join(f"{c}: wτ sym / wτ truth-w. / top-1" for c in CHOICES) + " |",
             "|---|" + "---|" * len(CHOICES)]
    for base in dict.fromkeys(scores.base):
        cells = []
        for choice in CHOICES:
            name = f"{base} [{choice}]"
            cells.append(f"{cell.loc[(name, 'weighted_tau_symmetric'), 'value']:+.3f} / "
                         f"{cell.loc[(name, 'weighted_tau_truth_weighted'), 'value']:+.3f} / "
                         f"{cell.loc[(name, 'top1_hit'), 'value'] * n_targets:.0f}/{n_targets}")
        lines.append(f"| {base} | " + " | ".join(cells) + " |")
    best = scores[scores.choice == "best"]
    picks = best.groupby(["base", "model"]).layer.agg(lambda v: "/".join(str(x) for x in v))
    lines += ["", "Layer picked by `best` (index per target, in target order):", "",
              "| model | " + " | ".join(dict.fromkeys(best.base)) + " |", "|---|" + "---|" * best.base.nunique()]
    for model in dict.fromkeys(best.model):
        lines.append(f"| {model} | " + " | ".join(picks.get((b, model), "–") for b in dict.fromkeys(best.base)) + " |")
    if scores.model.nunique() > 2:
        from offline_benchmark import leave_one_out_tables

        lines += [""] + leave_one_out_tables(scores, truth, tuple(dict.fromkeys(scores.metric)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("timing", "images", "text"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-benchmark-cache"))
    parser.add_argument("--metrics", type=lambda s: s.split(","), default=list(METRICS))
    parser.add_argument("--n-probe", type=int, default=1000, help="images: probe samples per target")
    parser.add_argument("--fortunes-dir", type=Path, default=Path("/usr/share/games/fortunes"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-resamples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5, help="timing: interleaved rounds")
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--n-texts", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--report-only", action="store_true", help="re-evaluate the committed scores CSV")
    parser.add_argument("--update", action="store_true", help="replace only these metrics' rows in the scores CSV")
    args = parser.parse_args(argv)
    if args.what == "timing":
        timing(args)
        return
    out = ROOT / "data"
    if args.report_only:
        scores = pd.read_csv(out / f"layers_{args.what}_scores.csv")
        truth = read_truth(ROOT / "data" / ("finetune_truth.csv" if args.what == "images" else "text_truth.csv"))
    else:
        scores, truth = (image_layers if args.what == "images" else text_layers)(args, Store(args.cache))
        path = out / f"layers_{args.what}_scores.csv"
        if args.update and path.is_file():
            old = pd.read_csv(path)
            scores = pd.concat([old[~old.base.isin(scores.base.unique())], scores], ignore_index=True)
        scores.to_csv(out / f"layers_{args.what}_scores.csv", index=False, float_format="%.10g")
    corr = evaluate_scores(scores[["target", "model", "metric", "score"]], truth, n_resamples=args.n_resamples)
    corr.to_csv(out / f"layers_{args.what}_correlations.csv", index=False, float_format="%.6g")
    title = (f"Layer choice on the offline {args.what} benchmark: {scores.model.nunique()} candidates x "
             f"{scores.target.nunique()} target(s)" + (f", N = {args.n_probe} probe images per target" if
                                                       args.what == "images" else ""))
    print(report(scores, corr, truth, title))


if __name__ == "__main__":
    main()
