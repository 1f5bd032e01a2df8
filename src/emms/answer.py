"""The answer a ranking gives: which model to pick, how sure that is, and what the scores mean.

Built from a :class:`emms.pipeline.Ranking` alone, so the terminal, the JSON document and the HTML
report say the same thing:

* **recommended** — the first metric's top model (the first metric is the one the user put first;
  EMMS by default).
* **how often best** — the share of resamples (random halves of the samples, re-scored by the first
  metric) in which each model scored best; the spread of its scores there gives each model an
  interval. Missing when ``resamples=0``.
* **agreement** — which model every other metric puts first, and Kendall's tau between the first
  metric's order and each other metric's order (on the models both scored; too few models: none).
* **truth** — with a fine-tuned ground truth: where the pick really came, and the regret.
* **race** — with a fine-tuning race (``Ranking.selection``, a ``Selection.to_dict()``): the model it
  recommends and every model's predicted fine-tuned score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEANING = ("Higher scores predict better fine-tuned performance; only the order within one metric "
           "means something — the sizes of the gaps and the units differ between metrics.")
#: Central coverage of the resample intervals.
INTERVAL = 0.9


def answer(ranking) -> dict:
    """JSON-ready: ``recommended``, ``metric``, ``p_best``, ``intervals``, ``agreement``, ``truth``,
    ``race`` (``None`` where they do not apply), and ``sentences`` (the same, said in plain words)."""
    from emms.evaluate.correlations import MIN_MODELS, kendall_tau

    table = ranking.table
    metric = ranking.metrics[0]
    rows = table[table["metric"] == metric].sort_values(["rank", "model"])
    pick = str(rows.iloc[0]["model"])
    n_models = len(rows)
    doc: dict = {"recommended": pick, "metric": metric, "n_models": n_models, "meaning": MEANING,
                 "p_best": None, "intervals": None, "agreement": None, "truth": None, "race": None}
    sentences = [f"Recommended: {pick} — ranked first by {metric} among {n_models} model(s)."]
    if n_models < 2:
        sentences.append("Only one model was scored, so there was nothing to choose between.")
    resampled = ranking.resampled
    if resampled is not None and len(resampled) and n_models >= 2:
        doc["p_best"] = p_best(resampled, list(rows["model"]))
        doc["intervals"] = intervals(resampled, dict(zip(rows["model"], rows["score"])))
        n = int(resampled["resample"].nunique())
        share = doc["p_best"][pick]
        runner = max((m for m in doc["p_best"] if m != pick), key=lambda m: doc["p_best"][m])
        text = (f"How sure: {pick} scored best in {round(share * n)} of {n} random halves of the samples "
                f"({share:.0%}); ")
        if doc["p_best"][runner] > share:
            text += (f"{runner} did more often ({doc['p_best'][runner]:.0%}), so the pick is not stable: "
                     "the two are within the score noise.")
        else:
            text += f"next {runner} ({doc['p_best'][runner]:.0%})."
        sentences.append(text + f" This is how stable {metric}'s pick is on this data, not whether fine-tuning agrees.")
    elif n_models >= 2:
        sentences.append("How sure: not measured (no resamples were run).")
    if len(ranking.metrics) > 1 and n_models >= 2:
        doc["agreement"] = _agreement(table, metric, pick, MIN_MODELS, kendall_tau)
        sentences.append(_agreement_sentence(doc["agreement"], pick, metric, MIN_MODELS))
    if ranking.truth:
        doc["truth"] = _truth_check(ranking.truth, pick)
        t = doc["truth"]
        sentences.append(f"Against the fine-tuned truth given: {pick} came {_ordinal(t['pick_place'])} of "
                         f"{t['n_models']} ({t['pick_value']:.4g}; best {t['best']} {t['best_value']:.4g}, "
                         f"regret {t['regret']:.3g}).")
    if ranking.selection:
        doc["race"] = race(ranking.selection)
        sentences.append(f"Fine-tuning race: {doc['race']['summary']}")
        if doc["race"]["how_sure"]:
            sentences.append(doc["race"]["how_sure"])
    sentences.append(MEANING)
    doc["sentences"] = sentences
    return doc


def p_best(resampled: pd.DataFrame, models: list[str]) -> dict[str, float]:
    """Share of resamples in which each model has the top score (a tie shares the win; a model a
    resample could not score does not win it)."""
    wide = resampled.pivot(index="resample", columns="model", values="score").reindex(columns=models)
    top = wide.to_numpy(float)
    top = top[np.isfinite(top).any(axis=1)]  # a resample where no model could be scored says nothing
    if not len(top):
        return dict.fromkeys(models, 0.0)
    winners = (top == np.nanmax(top, axis=1, keepdims=True)).astype(float)
    share = (winners / winners.sum(axis=1, keepdims=True)).mean(axis=0)
    return {m: float(s) for m, s in zip(models, share)}


def intervals(resampled: pd.DataFrame, scores: dict[str, float]) -> dict[str, list[float]]:
    """Per model, score + the central :data:`INTERVAL` range of its resampled scores' deviations from
    their mean (the half-sample spread stands for the full sample's sampling spread)."""
    out = {}
    alpha = (1 - INTERVAL) / 2
    for model, group in resampled.groupby("model", sort=False):
        values = group["score"].to_numpy(float)
        values = values[np.isfinite(values)]
        if values.size < 2 or model not in scores:
            continue
        low, high = np.quantile(values - values.mean(), [alpha, 1 - alpha])
        out[str(model)] = [float(scores[model] + low), float(scores[model] + high)]
    return out


def _agreement(table: pd.DataFrame, metric: str, pick: str, min_models: int, kendall_tau) -> dict:
    first = table[table["metric"] == metric].set_index("model")["score"]
    top, taus = {}, {}
    for other, rows in table.groupby("metric", sort=False):
        ordered = rows.sort_values(["rank", "model"])
        top[str(other)] = str(ordered.iloc[0]["model"])
        if other == metric:
            continue
        common = [m for m in rows["model"] if m in first.index]
        if len(common) < min_models:
            taus[str(other)] = None
            continue
        tau = kendall_tau(first[common].to_numpy(float), rows.set_index("model")["score"][common].to_numpy(float))
        taus[str(other)] = None if not np.isfinite(tau) else float(tau)
    agreeing = [m for m, best in top.items() if best == pick]
    return {"top_by_metric": top, "agreeing": agreeing, "kendall_tau_with_first": taus}


def _agreement_sentence(agreement: dict, pick: str, metric: str, min_models: int) -> str:
    top, agreeing = agreement["top_by_metric"], agreement["agreeing"]
    others = [f"{m} → {best}" for m, best in top.items() if best != pick]
    text = f"Agreement: {len(agreeing)} of {len(top)} metrics put {pick} first ({', '.join(agreeing)})"
    text += f"; {', '.join(others)}." if others else "."
    taus = {m: t for m, t in agreement["kendall_tau_with_first"].items() if t is not None}
    if taus:
        text += f" Kendall τ of {metric}'s order with " + ", ".join(f"{m} {t:+.2f}" for m, t in taus.items()) + "."
    elif agreement["kendall_tau_with_first"]:
        text += f" Too few models (under {min_models}) to correlate the metrics' orders."
    return text


def _truth_check(truth: dict[str, float], pick: str) -> dict:
    order = sorted(truth, key=lambda m: -truth[m])
    best = order[0]
    place = 1 + sum(truth[m] > truth[pick] for m in truth)
    return {"best": best, "best_value": truth[best], "pick_value": truth[pick], "pick_place": place,
            "n_models": len(truth), "regret": truth[best] - truth[pick]}


def race(selection: dict) -> dict:
    """What the answer shows of a fine-tuning race (``emms.selection.Selection.to_dict()``): the model
    it recommends, its one-sentence summary, per model the predicted fine-tuned score with its
    interval, how far it was trained and its screen score (with the share of the train split that
    screen run used), the raced models' learning curves, and the protocol's epochs."""
    keys = ("predicted", "low", "high", "status", "screen", "screen_fraction", "epochs_done", "epochs")
    rows = [{"model": r["model"], **{k: r.get(k) for k in keys}} for r in selection.get("results", [])]
    return {"recommended": selection.get("recommended"), "summary": selection.get("summary", ""),
            "how_sure": selection.get("how_sure", ""),
            "metric": selection.get("meta", {}).get("primary"), "models": rows,
            "curves": selection.get("curves", {}), "epochs": selection.get("meta", {}).get("protocol", {}).get("epochs")}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
