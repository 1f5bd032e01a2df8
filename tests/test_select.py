"""emms.select: the race's planning, promotion, budget and extrapolation on synthetic learning curves;
one real (tiny) select on the bundled Fashion-MNIST sample, replayed from its records on a rerun; bad
input; the size-prior metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emms.errors import InputError
from emms.finetune.race import RunCosts, plan_race, predict, recall_order, rung_epochs, run_race, view_at
from emms.finetune.screen import (check_screen_fractions, plan_screen, run_screen, screen_and_race, screen_data,
                                  screen_protocol, screen_ranking)

EPOCHS = 4


def _record(model: str, curve: list[float], full_seconds: float, epochs: int = EPOCHS) -> dict:
    points = [{"epoch": e + 1, "steps": 10 * (e + 1), "seconds": full_seconds * (e + 1) / epochs, "val": v,
               "train_loss": 1.0} for e, v in enumerate(curve)]
    return {"model": model, "curve": points, "epochs_done": len(curve), "complete": len(curve) == epochs,
            "val_score": curve[-1], "seconds": points[-1]["seconds"], "steps": 10 * len(curve), "n_val": 500,
            "test_score": None}


class FakeTrainer:
    """Serves prefixes of fixed 4-epoch curves and counts what was asked."""

    def __init__(self, curves: dict[str, list[float]], costs: dict[str, float]) -> None:
        self.full = {m: _record(m, c, costs[m]) for m, c in curves.items()}
        self.calls: list[tuple[tuple[str, ...], int]] = []

    def train(self, models, until_epoch):  # noqa: ANN001, ANN201
        self.calls.append((tuple(models), until_epoch))
        return {m: view_at(self.full[m], until_epoch, EPOCHS) for m in models}


CURVES = {  # "late" starts worst and ends best: the case a one-epoch snapshot gets wrong
    "late": [0.50, 0.70, 0.85, 0.93], "steady": [0.80, 0.85, 0.88, 0.90], "fast": [0.85, 0.86, 0.87, 0.88],
    "weak": [0.40, 0.50, 0.60, 0.70],
}
COSTS = {"late": 40.0, "steady": 10.0, "fast": 10.0, "weak": 5.0}
LINEAR = RunCosts(COSTS, EPOCHS)  # no setup: a round costs its share of the full run


def test_rungs_double_up_to_the_last_epoch():
    assert rung_epochs(4) == [1, 2, 4] and rung_epochs(3) == [1, 2, 3] and rung_epochs(1) == [1]
    assert rung_epochs(6) == [1, 2, 4, 6]


def test_recall_interleaves_the_metric_orders():
    frozen = {"emms": {"a": 3.0, "b": 2.0, "c": 1.0, "d": np.nan}, "params": {"a": 1.0, "b": 2.0, "c": 9.0, "d": 5.0}}
    assert recall_order(frozen, ["a", "b", "c", "d"], ["emms", "params"]) == ["a", "c", "b", "d"]
    assert recall_order(frozen, ["a", "b", "c", "d"], ["emms"]) == ["a", "b", "c", "d"]  # unscored d last


def test_the_plan_fits_the_budget_whatever_gets_promoted():
    order = ["fast", "steady", "weak", "late"]
    full_grid = sum(COSTS.values())
    everything = plan_race(order, LINEAR, full_grid)
    assert everything.entrants == order and everything.rungs == [1, 2, 4]
    for fraction in (0.2, 0.35, 0.5, 0.8):
        plan = plan_race(order, LINEAR, fraction * full_grid)
        assert len(plan.entrants) >= 2 and plan.planned_seconds <= fraction * full_grid
    small = plan_race(order, LINEAR, 0.1 * full_grid)  # 6.5 s: one epoch of the first three (6.25 s), no more
    assert small.entrants == ["fast", "steady", "weak"] and small.rungs == [1]
    with pytest.raises(InputError, match="budget: too small to train anything"):
        plan_race(order, LINEAR, 4.0)


def test_the_race_spends_within_budget_promotes_at_equal_epochs_and_tops_up():
    order = ["fast", "steady", "weak", "late"]
    budget = 0.8 * sum(COSTS.values())
    trainer = FakeTrainer(CURVES, COSTS)
    plan = plan_race(order, LINEAR, budget)
    result = run_race(plan, trainer, LINEAR, budget)
    assert result.spent_seconds <= budget
    first = result.history[0]
    assert first["epoch"] == 1 and first["trained"] == ["fast", "steady", "late", "weak"]
    assert first["promoted"] == ["fast", "steady"]  # late (0.50 at epoch 1) is dropped by a naive rung
    table = predict(result.records, EPOCHS)
    assert table.iloc[0]["model"] in ("steady", "fast") and table.iloc[0]["complete"]
    assert all(call[1] in (1, 2, 4) for call in trainer.calls)
    # with the whole grid as budget the top-up finishes the dropped models too: the late bloomer wins
    generous = run_race(plan_race(order, LINEAR, 2 * sum(COSTS.values())), FakeTrainer(CURVES, COSTS),
                        LINEAR, 2 * sum(COSTS.values()))
    assert predict(generous.records, EPOCHS).iloc[0]["model"] == "late"


class SetupTrainer:
    """Charges what a real round costs: the setup (build, encoding) every round, then the epochs."""

    def __init__(self, setup: float, per_epoch: float) -> None:
        self.setup, self.per_epoch, self.records = setup, per_epoch, {}

    def train(self, models, until_epoch):  # noqa: ANN001, ANN201
        for m in models:
            done = self.records.get(m, {"epochs_done": 0, "seconds": 0.0})
            seconds = done["seconds"] + self.setup + self.per_epoch * (until_epoch - done["epochs_done"])
            self.records[m] = {**_record(m, CURVES[m][:until_epoch], 0.0), "seconds": seconds}
        return {m: self.records[m] for m in models}


def test_rounds_pay_their_setup_so_the_race_stays_within_budget():
    costs = RunCosts(dict.fromkeys(CURVES, 20.0), EPOCHS, dict.fromkeys(CURVES, 8.0))  # 8 s setup + 3 s an epoch
    assert costs.round("late", 0, 1) == 11.0 and costs.round("late", 1, 2) == 11.0 and costs.round("late", 2, 2) == 0
    assert costs.round("late", 0, 4) == 20.0 and costs.scaled(2.0).round("late", 0, 1) == 22.0
    order = ["fast", "steady", "weak", "late"]
    plan = plan_race(order, costs, 40.0)
    # two entrants (2 x 11 s) and one promoted to epoch 2 (11 s: its setup again): 33 s; a third entrant: 44 s
    assert plan.entrants == ["fast", "steady"] and plan.rungs == [1, 2] and plan.planned_seconds == 33.0
    result = run_race(plan, SetupTrainer(8.0, 3.0), costs, 40.0)
    assert result.spent_seconds == 33.0 <= 40.0
    linear = RunCosts(dict.fromkeys(CURVES, 20.0), EPOCHS)  # the same runs costed as shares of a full run
    overshoot = run_race(plan_race(order, linear, 40.0), SetupTrainer(8.0, 3.0), linear, 40.0)
    assert overshoot.spent_seconds > 40.0  # what ignoring the setup did
    measured = RunCosts({"late": 20.0}, EPOCHS, {"late": 8.0})
    measured.refresh("late", {"epochs_done": 1, "seconds": 22.0})  # twice the estimate: both parts doubled
    assert measured.full["late"] == 40.0 and measured.setup["late"] == 16.0


def test_a_deadline_stops_the_race_before_the_next_round():
    trainer = FakeTrainer(CURVES, COSTS)
    plan = plan_race(list(CURVES), LINEAR, 1e9)
    result = run_race(plan, trainer, LINEAR, 1e9, deadline=lambda: len(trainer.calls) >= 1)
    assert len(trainer.calls) == 1 and all(r["epochs_done"] == 1 for r in result.records.values())


def test_stopped_runs_are_extrapolated_by_the_finished_runs_gains():
    records = {"a": _record("a", [0.80, 0.85, 0.88, 0.90], 10), "b": _record("b", [0.70, 0.80, 0.86, 0.88], 10),
               "c": _record("c", [0.75, 0.79], 10), "d": _record("d", [0.60], 10)}
    table = predict(records, EPOCHS).set_index("model")
    assert table.loc["a", "predicted"] == 0.90 and not table.loc["a", "extrapolated"]
    assert table.loc["c", "predicted"] == pytest.approx(0.79 + np.median([0.05, 0.08]))
    assert table.loc["d", "predicted"] == pytest.approx(0.60 + np.median([0.10, 0.18]))
    assert table.loc["c", "extrapolated"] and table.loc["d", "high"] - table.loc["d", "low"] > \
        table.loc["a", "high"] - table.loc["a", "low"]
    se = np.sqrt(0.9 * 0.1 / 500)
    assert table.loc["a", "high"] - table.loc["a", "predicted"] == pytest.approx(1.959964 * se)
    only_partial = predict({"c": records["c"], "d": records["d"]}, EPOCHS).set_index("model")
    assert only_partial.loc["c", "predicted"] == 0.79 and not only_partial.loc["c", "extrapolated"]


def test_view_at_is_the_prefix_of_a_recorded_curve():
    record = _record("a", [0.1, 0.2, 0.3, 0.4], 8.0)
    view = view_at(record, 2, EPOCHS)
    assert view["val_score"] == 0.2 and view["seconds"] == 4.0 and not view["complete"] and len(view["curve"]) == 2
    with pytest.raises(InputError, match="learning curve"):
        view_at(_record("b", [0.1], 2.0), 2, EPOCHS)


def test_the_screen_takes_what_fits_in_recall_order_and_orders_the_race():
    order = ["a", "b", "c", "d"]
    cost = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    assert plan_screen(order, cost, 100.0, 100.0) == order
    assert plan_screen(order, cost, 9.5, 100.0) == ["a", "b", "c"]  # a prefix: d would fit, but after c
    with pytest.raises(InputError, match="budget: too small to train anything: the screen of the first two"):
        plan_screen(order, cost, 6.9, 100.0)
    records = {"a": {"val_score": 0.5}, "b": {"val_score": 0.7}, "c": {"val_score": 0.5}}
    assert screen_ranking(records, order, fuse=False) == ["b", "a", "c", "d"]  # ties: recall order; unscreened last
    assert screen_ranking(records, order) == ["b", "a", "c", "d"]
    late = {"a": {"val_score": 0.1}, "b": {"val_score": 0.9}, "c": {"val_score": 0.8}}  # a: first by recall, last screened
    assert screen_ranking(late, order, fuse=False) == ["b", "c", "a", "d"]
    assert screen_ranking(late, order) == ["b", "a", "c", "d"]  # Borda: b 0+1, a 2+0, c 1+2


class ScreenTrainer:
    """Serves one-epoch screen records of fixed scores and costs, and counts what was asked."""

    def __init__(self, scores: dict[str, float], seconds: dict[str, float]) -> None:
        self.scores, self.seconds, self.calls = scores, seconds, []

    def train(self, models, until_epoch):  # noqa: ANN001, ANN201
        self.calls.append(tuple(models))
        return {m: {**_record(m, [self.scores[m]], self.seconds[m], epochs=1)} for m in models}


def test_the_screen_ladder_rescreens_the_best_half_on_a_larger_share_as_far_as_the_budget_goes():
    order = ["a", "b", "c", "d", "e", "f"]  # the recall order
    small = ScreenTrainer(dict(zip(order, [0.5, 0.6, 0.7, 0.1, 0.2, 0.3])), dict.fromkeys(order, 1.0))
    large = ScreenTrainer(dict(zip(order, [0.9, 0.6, 0.8, 0.5, 0.5, 0.5])), dict.fromkeys(order, 2.0))
    estimates = [dict.fromkeys(order, 1.0), dict.fromkeys(order, 2.0)]
    result = run_screen(order, [small, large], estimates, [0.1, 0.25], 100.0, 100.0)
    # rung 1 (Borda of screen and recall ranks): b 1+1, c 0+2, a 2+0 tie at 2 (better screen first: c, b, a), then d, e, f
    assert small.calls == [tuple(order)] and result.rungs[0]["trained"] == ["c", "b", "a", "f", "e", "d"]
    # rung 2: the best half of rung 1's order, fused with that order: a 0+2, c 1+0, b 2+1
    assert large.calls == [("c", "b", "a")] and result.order == ["c", "a", "b", "f", "e", "d"]
    assert result.records["a"]["fraction"] == 0.25 and result.records["d"]["fraction"] == 0.1
    assert result.seconds == {"a": 3.0, "b": 3.0, "c": 3.0, "d": 1.0, "e": 1.0, "f": 1.0}
    assert result.spent_seconds == 12.0 and [r["fraction"] for r in result.rungs] == [0.1, 0.25]
    # a budget that pays rung 1 and two of rung 2: the prefix that fits; one would not: the ladder ends at rung 1
    small.calls, large.calls = [], []
    assert run_screen(order, [small, large], estimates, [0.1, 0.25], 10.5, 100.0).seconds["b"] == 3.0
    assert large.calls == [("c", "b")]
    short = run_screen(order, [small, large], estimates, [0.1, 0.25], 7.9, 100.0)
    assert short.order == ["c", "b", "a", "f", "e", "d"] and len(short.rungs) == 1 and short.spent_seconds == 6.0
    with pytest.raises(InputError, match="budget: too small to train anything: the screen of the first two"):
        run_screen(order, [small, large], estimates, [0.1, 0.25], 1.5, 100.0)


def test_a_screen_slower_than_its_estimates_scales_the_estimates_after_it():
    order = ["a", "b", "c", "d"]
    small = ScreenTrainer(dict(zip(order, [0.4, 0.3, 0.2, 0.1])), dict.fromkeys(order, 2.0))  # estimated 1 s each
    large = ScreenTrainer(dict(zip(order, [0.9, 0.8, 0.7, 0.6])), dict.fromkeys(order, 2.0))
    estimates = [dict.fromkeys(order, 1.0), dict.fromkeys(order, 1.0)]
    slow = run_screen(order, [small, large], estimates, [0.1, 0.25], 11.0, 100.0)
    # rung 1 spent 8 s against 4 estimated: rung 2 (a, b) is planned at 2 s each, which 3 s left cannot pay for two
    assert slow.pace == 2.0 and len(slow.rungs) == 1 and not large.calls
    costs = dict.fromkeys(order, 8.0)  # one epoch: 2 s
    race = FakeTrainer({m: CURVES[c] for m, c in zip(order, ["late", "steady", "fast", "weak"])}, costs)
    kwargs = dict(fractions=[0.1], screen_trainers=[small], screen_estimates=[estimates[0]])
    screened, raced = screen_and_race(order, RunCosts(costs, EPOCHS), 8.0 + 6.0, race, **kwargs)
    # 6 s left would pay one epoch of three at the estimated 2 s, but at the screen's pace (4 s) only of one
    assert screened.pace == 2.0 and raced.plan is None


def test_screen_fractions_are_checked():
    assert check_screen_fractions(None) == () and check_screen_fractions(0) == ()
    assert check_screen_fractions(0.2) == (0.2,) and check_screen_fractions([0.1, 0.25]) == (0.1, 0.25)
    for bad in ([0.25, 0.1], [0.1, 0.1], 1.5, -0.1, [0.1, 0], True, "0.1"):
        with pytest.raises(InputError, match="screen"):
            check_screen_fractions(bad)


def test_screen_and_race_skips_the_screen_when_the_race_takes_everyone_and_answers_from_it_when_no_race_fits():
    costs = {"late": 40.0, "steady": 40.0, "fast": 40.0, "weak": 40.0}
    screen = ScreenTrainer({"late": 0.5, "steady": 0.6, "fast": 0.7, "weak": 0.1}, dict.fromkeys(costs, 2.0))
    race = FakeTrainer(CURVES, costs)
    order = ["late", "steady", "fast", "weak"]
    estimates = [dict.fromkeys(costs, 2.0)]
    kwargs = dict(fractions=[0.1], screen_trainers=[screen], screen_estimates=estimates)
    screened, raced = screen_and_race(order, RunCosts(costs, EPOCHS), 1000.0, race, **kwargs)
    assert not screened.records and not screen.calls and len(raced.plan.entrants) == 4  # the race alone takes all
    screened, raced = screen_and_race(order, RunCosts(costs, EPOCHS), 15.0, race, **kwargs)
    assert raced.plan is None and not raced.records and screened.spent_seconds == 8.0  # 7 s left: no epoch of two
    assert screened.order[0] == "fast"
    screened, raced = screen_and_race(order, RunCosts(costs, EPOCHS), 40.0, race, **kwargs)
    assert raced.plan.entrants[:2] == screened.order[:2] and raced.spent_seconds <= 32.0
    with pytest.raises(InputError, match="budget: too small"):
        screen_and_race(order, RunCosts(costs, EPOCHS), 3.0, race, **kwargs)


def test_screen_data_is_a_stratified_share_with_its_own_key():
    from emms.finetune.data import FinetuneData
    from emms.finetune.run import FinetuneProtocol

    labels = np.repeat(np.arange(4), 25)
    data = FinetuneData(name="t", class_names=list("abcd"), train=(np.zeros((100, 8, 8), np.uint8), labels),
                        val=(np.zeros((20, 8, 8), np.uint8), np.arange(20) % 4), test=None, fingerprint="f")
    small = screen_data(data, 0.2, seed=0)
    assert len(small.train[1]) == 20 and np.bincount(small.train[1]).tolist() == [5, 5, 5, 5]
    assert small.val is data.val and small.name == "t@screen0.2" and small.fingerprint != data.fingerprint
    assert screen_data(data, 0.2, seed=0).fingerprint == small.fingerprint  # the same rows: the same key
    # other rows under the same data fingerprint and seed (here: the labels in another order) get another key
    shuffled = FinetuneData(name="t", class_names=list("abcd"), train=(data.train[0], np.tile(np.arange(4), 25)),
                            val=data.val, test=None, fingerprint="f")
    assert screen_data(shuffled, 0.2, seed=0).fingerprint != small.fingerprint
    assert screen_protocol(FinetuneProtocol()) == FinetuneProtocol(epochs=1, batch_size=32)
    with pytest.raises(InputError, match="screen"):
        screen_data(data, 0.0, seed=0)


def _selection(rows: list[dict], recommended: str):  # noqa: ANN202 - a Selection with just its table
    import pandas as pd

    from emms.selection import Selection

    columns = {"predicted": np.nan, "low": np.nan, "high": np.nan, "screen": np.nan, "screen_low": np.nan,
               "screen_high": np.nan, "screen_fraction": np.nan}
    table = pd.DataFrame([{**columns, **row} for row in rows])
    return Selection(table=table, recommended=recommended, cost={}, curves={}, history=[], frozen=None,
                     meta={"n_val": 500})


def test_how_sure_compares_the_pick_with_models_judged_the_same_way():
    clear = _selection([{"model": "a", "status": "finished", "predicted": 0.9, "low": 0.88, "high": 0.92},
                        {"model": "b", "status": "finished", "predicted": 0.8, "low": 0.78, "high": 0.82},
                        {"model": "c", "status": "not raced"}], "a")
    assert "lies above that of every other model judged by fine-tuning (1)" in clear.how_sure()
    close = _selection([{"model": "a", "status": "finished", "predicted": 0.9, "low": 0.88, "high": 0.92},
                        {"model": "b", "status": "stopped at epoch 1", "predicted": 0.89, "low": 0.85, "high": 0.93},
                        {"model": "c", "status": "finished", "predicted": 0.7, "low": 0.68, "high": 0.72}], "a")
    assert "overlaps that of b (1 of the 2 other models judged by fine-tuning): within the validation noise of 500 " \
        "rows" in close.how_sure()
    # a screened answer is compared with the screen runs on the same share only (0.25 vs 0.1 scores are not comparable)
    screened = _selection([
        {"model": "a", "status": "screened", "screen": 0.6, "screen_low": 0.56, "screen_high": 0.64, "screen_fraction": 0.25},
        {"model": "b", "status": "screened", "screen": 0.5, "screen_low": 0.46, "screen_high": 0.54, "screen_fraction": 0.25},
        {"model": "c", "status": "screened", "screen": 0.62, "screen_low": 0.58, "screen_high": 0.66, "screen_fraction": 0.1},
    ], "a")
    assert "every other model judged by a screen run on 0.25 of the train split (1)" in screened.how_sure()
    alone = _selection([{"model": "a", "status": "finished", "predicted": 0.9, "low": 0.88, "high": 0.92},
                        {"model": "b", "status": "not raced"}], "a")
    assert "the only model judged by fine-tuning" in alone.how_sure()


def test_params_is_the_parameter_count_and_needs_it():
    import emms

    x, y = np.zeros((6, 2)), np.arange(6) % 2
    assert emms.score(x, y, metric="params", n_params=1234) == 1234.0
    assert emms.get_metric("params").needs_n_params and not emms.get_metric("logme").needs_n_params
    with pytest.raises(InputError, match="n_params"):
        emms.score(x, y, metric="params")


# -- a real select, tiny -----------------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_select(tmp_path_factory):
    import emms
    from emms.finetune import FinetuneProtocol

    out_dir = tmp_path_factory.mktemp("select")
    kwargs = dict(budget=None, max_seconds=600, max_samples=300, val_fraction=0.2, score_samples=None, out_dir=out_dir,
                  cache=tmp_path_factory.mktemp("cache"), protocol=FinetuneProtocol(epochs=2, image_size=32))
    models = ["onet_mtcnn", "ocrvgg_easyocr"]
    first = emms.select("builtin:fashion-mnist", models, **kwargs)
    again = emms.select("builtin:fashion-mnist", models, **kwargs)
    return first, again, out_dir, kwargs


def test_the_race_appears_in_the_frozen_rankings_report(tiny_select):
    # what `emms select --report` writes: the frozen ranking's report with the race's predictions
    first, *_ = tiny_select
    page = first.to_html()
    assert "<h2>Fine-tuning race</h2>" in page and first.summary() in page.replace("&#x27;", "'")
    assert "Learning curves of the raced models" in page and first.curves  # the race's curves, plotted
    assert first.frozen.answer()["race"]["recommended"] == first.recommended


def test_select_races_on_a_held_out_split_and_reports_cost(tiny_select):
    first, _, out_dir, _ = tiny_select
    table = first.table
    assert list(table["model"])[0] == first.recommended and set(table["model"]) == {"onet_mtcnn", "ocrvgg_easyocr"}
    assert first.meta["n_val"] == 60 and first.meta["n_train"] == 240
    assert (table["status"] == "finished").all()  # no fraction limit: the top-up finishes every run
    best = table.iloc[0]
    assert best.low <= best.predicted <= best.high and 0 <= best.predicted <= 1
    assert {"frozen:emms", "frozen:params"} <= set(table.columns)
    assert first.how_sure().startswith(f"How sure: {first.recommended}") and first.to_dict()["how_sure"] == first.how_sure()
    assert table.set_index("model").loc["ocrvgg_easyocr", "frozen:params"] > 1e6
    cost = first.cost
    assert cost["trained_seconds"] > 0 and cost["budget_seconds"] == np.inf
    assert cost["trained_seconds"] == pytest.approx(table["seconds"].sum())
    assert 0 < cost["fraction_of_full_grid"] == pytest.approx(cost["spent_seconds"] / cost["full_grid_seconds"])
    assert len(list(out_dir.glob("costs-*.json"))) == 1 and list((out_dir / "runs").rglob("*.json"))
    doc = json.loads(first.to_json())
    assert doc["recommended"] == first.recommended and len(doc["results"]) == 2 and doc["curves"]
    assert first.to_csv().splitlines()[0].startswith("model,rank,predicted,low,high")
    html = first.to_html()
    assert "Fine-tuning race" in html and first.recommended in html


def test_a_rerun_replays_the_records_and_gives_the_same_answer(tiny_select):
    first, again, *_ = tiny_select
    assert again.cost["trained_seconds"] == 0 and again.cost["probe_seconds"] == first.cost["probe_seconds"]
    assert again.recommended == first.recommended
    assert list(again.table["predicted"].fillna(-1)) == list(first.table["predicted"].fillna(-1))


@pytest.mark.parametrize(("models", "kwargs", "match"), [
    (["onet_mtcnn"], {}, "models: select needs at least 2"),
    (["onet_mtcnn", "file:feats.npy"], {}, "cannot be fine-tuned"),
    (["onet_mtcnn", "ocrvgg_easyocr"], {"budget": -0.5}, "budget: expected a positive number"),
    (["onet_mtcnn", "ocrvgg_easyocr"], {"budget": None}, "budget: give a fraction"),
    (["onet_mtcnn", "ocrvgg_easyocr"], {"screen": [0.25, 0.1]}, "screen: expected increasing fractions"),
    (["onet_mtcnn", "ocrvgg_easyocr"], {"max_samples": 60, "val_fraction": 0.2},
     "val_fraction: the validation split has 12 rows"),
])
def test_bad_input_is_one_input_error_naming_the_argument(models, kwargs, match, tmp_path):
    import emms

    with pytest.raises(InputError, match=match):
        emms.select("builtin:fashion-mnist", models, out_dir=tmp_path / "o", cache=tmp_path / "c", **kwargs)
    assert not (tmp_path / "o" / "runs").exists()


def test_a_budget_too_small_to_train_anything_says_so(tmp_path):
    from typer.testing import CliRunner

    from emms.cli import app

    result = CliRunner().invoke(app, ["select", "--data", "builtin:fashion-mnist", "--models", "onet_mtcnn,ocrvgg_easyocr",
                                      "--max-samples", "200", "--image-size", "32", "--epochs", "2", "--budget", "0.01",
                                      "--score-samples", "100", "--out-dir", str(tmp_path / "o"),
                                      "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2, result.output
    assert "budget: too small to train anything" in result.output
    assert not list((tmp_path / "o").rglob("*.json")) or not (tmp_path / "o" / "runs").exists()


def test_a_bad_screen_option_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from emms.cli import app

    result = CliRunner().invoke(app, ["select", "--data", "builtin:fashion-mnist", "--models", "onet_mtcnn,ocrvgg_easyocr",
                                      "--screen", "0.1,x", "--out-dir", str(tmp_path / "o"), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "--screen: expected comma-separated fractions" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_a_killed_select_resumes_from_its_records(tmp_path):
    import emms
    from _sigkill import sigkill_when
    from emms.finetune import FinetuneProtocol

    out_dir, cache = tmp_path / "o", tmp_path / "c"
    args = ["select", "--data", "builtin:fashion-mnist", "--models", "onet_mtcnn,ocrvgg_easyocr", "--max-samples", "300",
            "--epochs", "2", "--image-size", "32", "--budget", "0", "--max-seconds", "600", "--score-samples", "240",
            "--out-dir", str(out_dir), "--cache", str(cache)]
    sigkill_when(["-c", "from emms.cli import main; main()", *args], lambda: any(out_dir.glob("runs/*/*.json")),
                 tmp_path / "child.err", timeout=300)
    killed = {p: json.loads(p.read_text())["curve"] for p in out_dir.glob("runs/*/*.json")}
    resumed = emms.select("builtin:fashion-mnist", ["onet_mtcnn", "ocrvgg_easyocr"], budget=None, max_seconds=600,
                          max_samples=300, score_samples=240, out_dir=out_dir, cache=cache,
                          protocol=FinetuneProtocol(epochs=2, image_size=32))
    assert resumed.cost["replayed_seconds"] > 0  # what the killed call recorded was not trained again
    assert (resumed.table["status"] == "finished").all()
    [costs] = out_dir.glob("costs-*.json")
    assert resumed.cost["probe_seconds"] == pytest.approx(sum(json.loads(costs.read_text())[m]["probe_seconds"]
                                                              for m in ("onet_mtcnn", "ocrvgg_easyocr")))
    for path, curve in killed.items():  # kept and continued, not redone: the recorded epochs are unchanged
        assert json.loads(path.read_text())["curve"][:len(curve)] == curve


def test_the_screen_is_recorded_apart_counted_and_replayed(tiny_select):
    first, again, out_dir, _ = tiny_select
    files = sorted((out_dir / "screen" / "runs").rglob("*.json"))
    records = [json.loads(p.read_text()) for p in files]
    # its own records, next to (never mixed with) the full runs: both candidates at both rungs (two: both rescreened)
    assert sorted((r["target"].rsplit("@", 1)[1], r["n_train"]) for r in records) == \
        [("screen0.1", 24), ("screen0.1", 24), ("screen0.25", 60), ("screen0.25", 60)]  # of the 240 train rows
    assert all(r["protocol"]["epochs"] == 1 and r["n_val"] == 60 and r["complete"] for r in records)
    cost = first.cost
    assert cost["screen_seconds"] == pytest.approx(sum(r["seconds"] for r in records))
    assert cost["spent_seconds"] == pytest.approx(cost["probe_seconds"] + cost["screen_seconds"] + cost["race_seconds"])
    assert [h["rung"] for h in first.history[:2]] == ["screen 1", "screen 2"]
    assert first.table["screen"].notna().all() and (first.table["screen_fraction"] == 0.25).all()
    assert first.meta["screen"]["fractions"] == [0.1, 0.25] and first.meta["screen"]["n_train"] == [24, 60]
    # the rerun replays the screen too: nothing trained, the same screen scores and cost
    assert again.cost["trained_seconds"] == 0 and again.cost["screen_seconds"] == cost["screen_seconds"]
    assert list(again.table["screen"]) == list(first.table["screen"])


def _budgets(out_dir, kwargs):  # noqa: ANN001, ANN202
    """The cached timing probes of the tiny select: the full grid, the probes' and each screen rung's estimated
    seconds, one full-protocol epoch of both candidates."""
    from emms.selection import _screen_seconds

    [costs] = out_dir.glob("costs-*.json")
    probes = json.loads(costs.read_text())
    grid = sum(p["full_seconds"] for p in probes.values())
    probe = sum(p["probe_seconds"] for p in probes.values())
    screens = [sum(_screen_seconds(p, n_train, 60) for p in probes.values()) for n_train in (24, 60)]
    rung = grid / kwargs["protocol"].epochs
    return costs, grid, probe, screens, rung


def test_a_budget_that_affords_only_the_screen_answers_from_it_and_below_it_refuses(tiny_select, tmp_path):
    import shutil

    import emms

    _, _, out_dir, kwargs = tiny_select
    costs, grid, probe, screens, rung = _budgets(out_dir, kwargs)
    models = ["onet_mtcnn", "ocrvgg_easyocr"]
    fresh = tmp_path / "o"
    shutil.copytree(out_dir / "screen", fresh / "screen")  # the screen runs are replayed: their cost is known
    recorded = {r["model"]: r["seconds"] for r in map(json.loads, map(Path.read_text, fresh.rglob("*screen0.1/*.json")))}
    probes = json.loads(costs.read_text())
    for model, p in probes.items():  # screen estimates equal to the recorded costs: pace 1, the budget below is exact
        p.update(build_seconds=recorded[model], encode_per_row=0.0, train_per_row=0.0, eval_per_row=0.0)
    (fresh / costs.name).write_text(json.dumps(probes))
    budget = (probe + sum(recorded.values()) + 0.4 * rung) / grid  # the screen fits; one epoch of two runs cannot after it
    sel = emms.select("builtin:fashion-mnist", models, **{**kwargs, "out_dir": fresh, "budget": budget,
                                                          "max_seconds": None, "screen": 0.1})
    assert (sel.table["status"] == "screened").all() and sel.recommended == sel.table.iloc[0]["model"]
    assert sel.table["predicted"].isna().all() and sel.table["screen"].notna().all()  # no fake fine-tuned number
    top = sel.table.iloc[0]
    assert top.screen_low < top.screen <= top.screen_high and top.screen == sel.table["screen"].max()
    assert sel.cost["race_seconds"] == 0 and sel.cost["screen_seconds"] == pytest.approx(sum(recorded.values()))
    assert sel.cost["spent_seconds"] == pytest.approx(probe + sel.cost["screen_seconds"])
    assert "screened:" in sel.summary() and any("only the screen" in note for note in sel.notes)
    assert not (fresh / "runs").exists()
    below = tmp_path / "below"
    below.mkdir()
    shutil.copy(costs, below / costs.name)
    with pytest.raises(InputError, match="budget: too small to train anything: the screen of the first two"):
        emms.select("builtin:fashion-mnist", models, **{**kwargs, "out_dir": below, "budget": (probe + 0.5 * screens[0]) / grid,
                                                        "max_seconds": None})
    assert not (below / "screen").exists() and not (below / "runs").exists()
