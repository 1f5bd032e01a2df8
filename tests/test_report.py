"""The answer (emms.answer), Ranking.wide and the HTML report, on hand-made rankings (no extraction)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from emms.answer import answer, intervals, p_best
from emms.errors import InputError
from emms.pipeline import Ranking, correlations_table
from emms.pipeline.result import with_ranks


def _ranking(scores: dict[str, dict[str, float]], resampled: pd.DataFrame | None = None,
             truth: dict[str, float] | None = None) -> Ranking:
    """scores: {metric: {model: score}}; EMMS rows get two encoder weights."""
    rows = [{"model": m, "metric": metric, "score": s, "seconds": 0.01,
             "weights": {"enc-a": 0.3, "enc-b": 0.7} if metric == "emms" else None}
            for metric, by_model in scores.items() for m, s in by_model.items()]
    table = with_ranks(pd.DataFrame(rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    meta = {"data": "toy", "task": "classification", "n_samples": 100, "models": models,
            "metrics": list(scores), "metrics_asked": list(scores), "encoders": ["enc-a", "enc-b"],
            "resamples": 0 if resampled is None else int(resampled["resample"].nunique())}
    timings = pd.DataFrame([{"stage": "load data", "model": "", "seconds": 0.1}])
    ranking = Ranking(table=table, timings=timings, meta=meta, resampled=resampled)
    if truth is not None:
        ranking.truth = truth
        ranking.correlations = correlations_table(table, truth)
    return ranking


def _resamples(wins: dict[str, int], n: int) -> pd.DataFrame:
    """n resamples over the models in ``wins``: model m has the top score in wins[m] of them."""
    rows, b = [], 0
    for winner, count in wins.items():
        for _ in range(count):
            rows += [{"resample": b, "model": m, "score": 1.0 if m == winner else 0.5 - 0.01 * i}
                     for i, m in enumerate(wins)]
            b += 1
    assert b == n
    return pd.DataFrame(rows)


FIVE = {f"builtin:m{i}": 1.0 - 0.1 * i for i in range(5)}


class _Structure(HTMLParser):
    """Records the element with id="recommended", the order of h2 headings and where the first table is."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self._capture = False
        self.recommended = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") == "answer":
            self.events.append(("answer", ""))
        if attrs.get("id") == "recommended":
            self._capture = True
        if tag in ("table", "h2", "img"):
            self.events.append((tag, ""))

    def handle_endtag(self, tag):
        if tag == "b":
            self._capture = False

    def handle_data(self, data):
        if self._capture:
            self.recommended += data
        if self.events and self.events[-1][0] == "h2" and not self.events[-1][1]:
            self.events[-1] = ("h2", data)


def test_report_leads_with_the_recommendation():
    ranking = _ranking({"emms": FIVE, "logme": {m: -s for m, s in FIVE.items()}},
                       resampled=_resamples(dict(zip(FIVE, (7, 3, 0, 0, 0))), 10))
    page = _Structure()
    page.feed(ranking.to_html())
    kinds = [kind for kind, _ in page.events]
    assert page.recommended == "builtin:m0" == ranking.answer()["recommended"]
    # the answer comes before every table and plot
    assert kinds.index("answer") < kinds.index("table") and kinds.index("answer") < kinds.index("img")
    headings = [text for kind, text in page.events if kind == "h2"]
    assert headings[:2] == ["How often each model came out best", "Ranking"]
    text = ranking.to_html()
    assert "scored best in 7 of 10 random halves" in text and "1 of 2 metrics put builtin:m0 first" in text


def test_report_without_resamples_says_it_did_not_measure():
    text = _ranking({"emms": FIVE}).to_html()
    assert "not measured" in text and "How often each model came out best" not in text


def test_identical_encoder_weights_are_a_sentence_not_a_chart():
    text = _ranking({"emms": FIVE}).to_html()
    assert "The weights are the same for every model" in text and "enc-a 0.30, enc-b 0.70" in text


def test_p_best_and_intervals():
    resampled = _resamples({"a": 6, "b": 4, "c": 0}, 10)
    shares = p_best(resampled, ["a", "b", "c"])
    assert shares == pytest.approx({"a": 0.6, "b": 0.4, "c": 0.0})
    tied = pd.DataFrame({"resample": [0, 0], "model": ["a", "b"], "score": [1.0, 1.0]})
    assert p_best(tied, ["a", "b"]) == {"a": 0.5, "b": 0.5}
    spread = pd.DataFrame({"resample": np.arange(11), "model": "a", "score": np.linspace(-1, 1, 11)})
    low, high = intervals(spread, {"a": 10.0})["a"]
    assert low == pytest.approx(10.0 - 0.9) and high == pytest.approx(10.0 + 0.9)  # 5% / 95% of -1..1


def test_agreement_and_truth_sentences():
    truth = {m: v for m, v in zip(FIVE, (0.80, 0.90, 0.85, 0.70, 0.60))}
    ranking = _ranking({"emms": FIVE, "logme": dict(zip(FIVE, (1, 5, 4, 3, 2)))}, truth=truth)
    doc = answer(ranking)
    assert doc["agreement"]["top_by_metric"] == {"emms": "builtin:m0", "logme": "builtin:m1"}
    assert doc["agreement"]["kendall_tau_with_first"]["logme"] == pytest.approx(0.2)  # 6 concordant, 4 discordant pairs
    assert doc["truth"] == {"best": "builtin:m1", "best_value": 0.9, "pick_value": 0.8, "pick_place": 3,
                            "n_models": 5, "regret": pytest.approx(0.1)}
    assert any("came 3rd of 5" in s for s in doc["sentences"])


def test_too_few_models_are_said_not_computed():
    two = {"a": 1.0, "b": 0.5}
    ranking = _ranking({"emms": two, "logme": {"a": 0.1, "b": 0.2}}, truth={"a": 0.9, "b": 0.8})
    doc = ranking.answer()
    assert doc["agreement"]["kendall_tau_with_first"] == {"logme": None}
    assert any("Too few models" in s for s in doc["sentences"])
    corr = ranking.correlations.set_index("metric")
    assert corr["weighted_tau"].isna().all() and corr["pearson"].isna().all()
    assert (corr["n_models"] == 2).all()
    assert "too few models for a rank correlation" in ranking.to_html()
    one = _ranking({"emms": {"a": 1.0}}).answer()
    assert any("nothing to choose between" in s for s in one["sentences"])


def test_wide_table_and_the_result_document(tmp_path):
    ranking = _ranking({"emms": FIVE, "leep": {"builtin:m1": -1.0, "builtin:m2": -2.0}})
    ranking.meta["metrics_asked"] = ["emms", "leep", "knn"]  # knn scored nothing
    wide = ranking.wide()
    assert list(wide.columns) == ["emms", "leep", "knn"] and list(wide.index) == list(FIVE)
    assert wide.loc["builtin:m1", "leep"] == -1.0 and np.isnan(wide.loc["builtin:m0", "leep"])
    assert wide["knn"].isna().all()
    assert ranking.wide("rank").loc["builtin:m2", "leep"] == 2
    with pytest.raises(InputError, match="values"):
        ranking.wide("seconds")
    ranking.write(tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["answer"]["recommended"] == "builtin:m0" and len(doc["results"]) == 7
    ranking.write(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().startswith("model,metric,score,rank,seconds")
    with pytest.raises(InputError, match="out: expected a file name ending in .json or .csv"):
        ranking.write(tmp_path / "r.txt")


def test_a_fine_tuning_race_appears_in_the_answer_and_the_report():
    ranking = _ranking({"emms": FIVE})
    ranking.selection = {  # the shape of emms.selection.Selection.to_dict()
        "meta": {"primary": "accuracy"}, "recommended": "builtin:m1",
        "summary": "recommended: builtin:m1 (predicted fine-tuned accuracy 0.9100, interval 0.9000-0.9200, finished)",
        "results": [{"model": "builtin:m1", "predicted": 0.91, "low": 0.90, "high": 0.92, "status": "finished",
                     "screen": 0.61, "screen_fraction": 0.25},
                    {"model": "builtin:m0", "predicted": 0.88, "low": None, "high": None, "status": "not raced"}]}
    doc = ranking.answer()
    assert doc["race"]["recommended"] == "builtin:m1"
    assert doc["sentences"][-2] == "Fine-tuning race: " + ranking.selection["summary"]
    page = ranking.to_html()
    assert "<h2>Fine-tuning race</h2>" in page and "predicted fine-tuned accuracy" in page
    assert "[0.900, 0.920]" in page and "not raced" in page and "<td>0.610 (0.25)</td>" in page
    assert "Learning curves" not in page  # no curve recorded: no figure
    ranking.selection["meta"]["protocol"] = {"epochs": 4}
    ranking.selection["curves"] = {"builtin:m1": [{"epoch": e, "val": v} for e, v in ((1, 0.8), (2, 0.85))]}
    with_curves = ranking.to_html()
    assert "Learning curves of the raced models" in with_curves and with_curves.count("<img") == page.count("<img") + 1


def test_a_pick_that_loses_most_resamples_is_called_unstable():
    ranking = _ranking({"emms": FIVE}, resampled=_resamples(dict(zip(FIVE, (4, 6, 0, 0, 0))), 10))
    sentence = ranking.answer()["sentences"][1]
    assert sentence.startswith("How sure: builtin:m0 scored best in 4 of 10 random halves")
    assert "builtin:m1 did more often (60%), so the pick is not stable" in sentence
    page = ranking.to_html()
    assert "<th>emms interval</th>" in page


def test_p_best_with_models_a_resample_could_not_score():
    resampled = pd.DataFrame({"resample": [0, 0, 1, 2, 2], "model": ["a", "b", "a", "a", "b"],
                              "score": [1.0, 2.0, 3.0, np.nan, np.nan]})
    assert p_best(resampled, ["a", "b"]) == {"a": 0.5, "b": 0.5}  # resample 2 scored nobody: left out


def test_the_recommended_models_layers_are_shown_with_the_kept_one():
    ranking = _ranking({"emms": FIVE})
    ranking.meta.update(layers="best", layer_chosen=[{"model": m, "metric": "emms", "layer": 1} for m in FIVE],
                        layer_scores=[{"model": m, "metric": "emms", "layer": k, "score": s - (k != 1)}
                                      for m, s in FIVE.items() for k in range(3)])
    text = ranking.to_html()
    pick = ranking.answer()["recommended"]
    section = text[text.index("<h2 id='layers'>"):]
    assert f"Layers of {pick}" in section and section.count("<td class='best'>") == 1
    assert "<h2 id='layers'>" not in _ranking({"emms": FIVE}).to_html()  # no layer choice, no section
