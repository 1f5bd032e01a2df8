"""emms select on the offline image targets (fm10, fm4, fm-tops4) and the text-QA target against fine-tuned truth.

Three measurements; A and B against ``benchmarks/data/finetune_truth.csv`` (mean test accuracy over
seeds 0-2, n_train 4000):

A. **Full budget, from the truth's own records** (``benchmarks/data/finetune_runs``, version 1, no
   curves): what a race that fine-tunes every candidate once, fully, and ranks by **validation**
   accuracy reaches, when the truth is rebuilt from the *other* seeds (leave one seed out). This is the
   race's ceiling at 100 % of the full grid.
B. **A curve over budgets, replayed from recorded learning curves** (``--runs``, default
   ``benchmarks/data/select_runs``: full 4-epoch runs with validation after every epoch, seed 3, split
   seed 1, n_train 2000, CPU): the race of :mod:`emms.finetune.race` is run on the records (a run
   viewed at epoch e costs the CPU seconds it had used by epoch e), for each budget, beside the same-cost
   baselines "one epoch each, then the top K to the end" and "random candidates fully trained", and
   the free ones: every frozen metric (``offline_scores.csv``) and the size prior (parameter count).

C. **The text target** (text QA, :data:`TEXT_TARGET`), replayed the same way from the multi-task benchmark's
   records (``benchmarks/data/multitask_runs``: 4 text candidates x seeds 0 and 1, 3-epoch runs with
   validation after every epoch): each seed's curves are raced, the truth is the other seed's test
   accuracy, beside the frozen scores of ``multitask_scores.csv`` and the size prior; with screen records,
   also the screen then the race (D's rule).
D. **The screen, then the race** (``--runs``/screen: one-epoch screen runs per candidate and train fraction):
   :func:`emms.finetune.screen.screen_and_race`, the function :func:`emms.select` runs, replayed at each
   budget for the default rungs, other ladders and single fractions.

Nothing here trains unless ``--record-screen F`` is given (then it records screen runs and stops). Run
(``--markdown`` writes the tables; D needs the full Fashion-MNIST images, ``EMMS_FASHION_MNIST_DIR``)::

    python benchmarks/select_benchmark.py --markdown select_report.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.evaluate import regret_at_k, top1_hit, weighted_tau
from emms.finetune import FinetuneProtocol
from emms.finetune.race import RecordTrainer, RunCosts, plan_race, predict, recall_order, run_race, view_at
from emms.finetune.screen import SCREEN_FRACTIONS, screen_and_race, screen_data, screen_protocol, screen_ranking

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
TARGETS = ("fm10", "fm4", "fm-tops4")
MODELS = ("mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "efflite1_imagenet", "efflite2_imagenet",
          "effb0_photo_vs_drawing", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn", "mnv2_imagenet_random")
BUDGETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
RECALLS = {"emms+params": ("emms", "params"), "emms": ("emms",), "params": ("params",)}
#: how the replayed runs were made (benchmarks/data/select_runs; see BENCHMARKS.md "select")
RUN_SPLIT = {"n_train": 2000, "n_val": 500, "n_test": 1, "seed": 1}
RUN_SEED, RUN_LR = 3, 1e-3
#: the text target: the multi-task benchmark's text-QA runs (benchmarks/data/multitask_runs)
TEXT_TARGET = "mt-text_qa"


def statistics(scores: dict[str, float], truth: dict[str, float], pick: str | None = None) -> dict[str, float]:
    """Weighted tau (both variants), top-1 and regret@1 of ``scores`` against ``truth`` (same models);
    ``pick``: the recommended model when it is not simply the top score."""
    models = sorted(truth)
    s = np.array([scores[m] for m in models], dtype=float)
    t = np.array([truth[m] for m in models], dtype=float)
    if pick is not None:
        s = s.copy()
        s[models.index(pick)] = np.nanmax(s) + 1.0
    return {"wtau": weighted_tau(s, t, variant="symmetric"), "wtau_truth": weighted_tau(s, t, variant="truth_weighted"),
            "top1": float(top1_hit(s, t)), "regret1": regret_at_k(s, t, 1)}


def ranked(ranking: list[str]) -> dict[str, float]:
    """Scores of a ranking given best first (its length down to 1), for :func:`statistics`."""
    return {m: float(len(ranking) - i) for i, m in enumerate(ranking)}


def parameter_counts() -> dict[str, int]:
    """The size prior as rank() computes it: parameters of each packaged module as loaded."""
    from emms.models import load_extractor, parameter_count

    return {m: parameter_count(load_extractor(f"builtin:{m.removesuffix('_random')}?pretrained=false")) for m in MODELS}


def full_budget_from_truth_records(truth: pd.DataFrame) -> pd.DataFrame:
    """A: per target and held-out seed, rank by that seed's val accuracy against the other seeds' mean test."""
    results = pd.read_csv(DATA / "finetune_results.csv")
    rows = []
    for target in TARGETS:
        runs = results[results.target == target]
        for seed in sorted(runs.seed.unique()):
            mine = runs[runs.seed == seed].set_index("model")
            others = runs[runs.seed != seed].groupby("model").test_accuracy.mean()
            models = [m for m in MODELS if m in mine.index and m in others.index]
            if len(models) < len(MODELS):
                continue
            stats = statistics(mine.val_accuracy.to_dict(), others[models].to_dict())
            by_test = statistics(mine.test_accuracy.to_dict(), others[models].to_dict())["wtau"]
            rows.append({"target": target, "held_out_seed": int(seed), **stats, "wtau_by_test": by_test})
    return pd.DataFrame(rows)


class CpuReplay:
    """Serves recorded runs viewed at an epoch, with costs in CPU seconds: the curves were recorded on
    a shared machine whose load changed the wall time several-fold, so each point's cost is its
    ``cpu_seconds`` (older records: wall seconds scaled by the run's CPU / wall ratio)."""

    def __init__(self, records: dict[str, dict], epochs: int = 4) -> None:
        self.records = {m: self._in_cpu_seconds(r) for m, r in records.items()}
        self.epochs = epochs

    @staticmethod
    def _in_cpu_seconds(record: dict) -> dict:
        ratio = record["cpu_seconds"] / record["seconds"]
        curve = [{**p, "seconds": p.get("cpu_seconds", p["seconds"] * ratio)} for p in record["curve"]]
        return {**record, "curve": curve, "seconds": record["cpu_seconds"]}

    def train(self, models, until_epoch):  # noqa: ANN001, ANN201
        return {m: view_at(self.records[m], until_epoch, self.epochs) for m in models}

    def costs(self) -> RunCosts:
        """What the race plans with: each run's recorded cost, its setup the first epoch's excess over
        the later epochs' mean (what a timing probe estimates; a replayed continuation pays none)."""
        full = {m: r["seconds"] for m, r in self.records.items()}
        setup = {}
        for m, r in self.records.items():
            first, last = r["curve"][0]["seconds"], r["curve"][-1]["seconds"]
            setup[m] = min(max(first - (last - first) / (self.epochs - 1), 0.0), first)
        return RunCosts(full, self.epochs, setup)


def complete_replay(trainer: RecordTrainer, models, epochs: int) -> CpuReplay | None:  # noqa: ANN001
    """The replay of ``trainer``'s records of every one of ``models``, if all are complete with a curve of
    ``epochs`` points; None otherwise."""
    records = {m: trainer.recorded(m) for m in models}
    if all(r is not None and r["complete"] and len(r["curve"]) == epochs for r in records.values()):
        return CpuReplay(records, epochs)
    return None


def screen_trainer(target: str, fraction: float, runs_dir: Path, *, replay_only: bool = True) -> RecordTrainer:
    """The screen runs of ``target`` (``runs_dir/screen``): the select code path's screen
    (:func:`emms.finetune.screen.screen_data` / :func:`~emms.finetune.screen.screen_protocol`) on the
    replayed runs' split (seed, n_train, n_val as :data:`RUN_SPLIT`), fine-tuning seed :data:`RUN_SEED`."""
    from emms.data.fashion_targets import benchmark_targets
    from emms.finetune.data import FinetuneData

    split = FinetuneData.from_benchmark(benchmark_targets([target], n_probe=1, **RUN_SPLIT)[target])
    data = screen_data(split, fraction, RUN_SPLIT["seed"])
    return RecordTrainer(data, screen_protocol(FinetuneProtocol()), lr=RUN_LR, seed=RUN_SEED,
                         out_dir=runs_dir / "screen", replay_only=replay_only)


def text_screen_trainer(fraction: float, seed: int, runs_dir: Path, *, replay_only: bool = True) -> RecordTrainer:
    """The screen runs of the text target (``runs_dir/screen``): the select code path's screen on the multi-task
    benchmark's text-QA split (split seed 0) and protocol, fine-tuning seed ``seed`` (one per replayed seed, C)."""
    import multitask_benchmark as mt

    data, _ = mt.finetune_data("text_qa")
    _, _, lr = mt.SETTINGS["text_qa"]
    return RecordTrainer(screen_data(data, fraction, 0), screen_protocol(mt.protocol("text_qa")), lr=lr, seed=seed,
                         out_dir=runs_dir / "screen", replay_only=replay_only)


def record_screens(targets: list[str], fraction: float, runs_dir: Path) -> None:
    """Fine-tune the screen run of every candidate on ``targets`` (resumable: recorded runs are kept);
    :data:`TEXT_TARGET`: the text candidates, once per fine-tuning seed of the multi-task grid."""
    import multitask_benchmark as mt

    for target in targets:
        if target == TEXT_TARGET:
            jobs = [(text_screen_trainer(fraction, seed, runs_dir, replay_only=False), mt.TEXT_MODELS) for seed in mt.SEEDS]
        else:
            jobs = [(screen_trainer(target, fraction, runs_dir, replay_only=False), MODELS)]
        for trainer, models in jobs:
            for model in models:  # one at a time, so a kill loses at most one short run
                record = trainer.train([model], 1)[model]
                print(f"{target} (seed {trainer.seed}) screen {fraction:g} {model}: val {record['val_score']:.4f} "
                      f"cpu {record['cpu_seconds']:.1f} s", flush=True)


def screen_replays(runs_dir: Path, fraction: float, targets) -> dict[str, CpuReplay]:  # noqa: ANN001
    """Targets whose every candidate has a screen record at ``fraction`` (costs in CPU seconds)."""
    out = {}
    for target in targets:
        try:
            trainer = screen_trainer(target, fraction, runs_dir)
        except (InputError, OSError) as exc:  # e.g. the full Fashion-MNIST images are not here
            print(f"screen {fraction:g} on {target}: not replayed ({exc})", file=sys.stderr)
            continue
        if (replay := complete_replay(trainer, MODELS, 1)) is not None:
            out[target] = replay
    return out


def replayed_targets(runs_dir: Path) -> dict[str, CpuReplay]:
    """Targets whose every candidate has a complete recorded curve under ``runs_dir``."""
    from emms.data.fashion_targets import benchmark_targets

    out = {}
    for target in TARGETS:
        split = benchmark_targets([target], n_probe=1, **RUN_SPLIT)[target]
        data = SimpleNamespace(name=target, fingerprint=split.fingerprint(("train", "val", "test")))
        trainer = RecordTrainer(data, FinetuneProtocol(), lr=RUN_LR, seed=RUN_SEED, out_dir=runs_dir, replay_only=True)
        if (replay := complete_replay(trainer, MODELS, 4)) is not None:
            out[target] = replay
    return out


def text_replays(runs_dir: Path = DATA / "multitask_runs") -> dict[int, CpuReplay]:
    """C: per fine-tuning seed, the recorded text-QA runs of every text candidate (the multi-task
    benchmark's grid, ``benchmarks/multitask_benchmark.py``: 3 epochs, validation after each), if all
    are complete; the records are checked against that benchmark's split and protocol."""
    import multitask_benchmark as mt

    data, _ = mt.finetune_data("text_qa")
    epochs, _, lr = mt.SETTINGS["text_qa"]
    out = {}
    for seed in mt.SEEDS:
        trainer = RecordTrainer(data, mt.protocol("text_qa"), lr=lr, seed=seed, out_dir=runs_dir, replay_only=True)
        if (replay := complete_replay(trainer, mt.TEXT_MODELS, epochs)) is not None:
            out[seed] = replay
    return out


def text_screen_curves(seed: int, models: list[str], frozen: dict, truth: dict, replay: CpuReplay,
                       runs_dir: Path = DATA / "select_runs") -> list[dict]:
    """C: the screen's rungs, then the race, on the text target (the screens of fine-tuning seed ``seed``),
    for the default rungs and each single fraction whose records are all there."""
    screens = {}
    for fraction in (0.1, 0.25):
        if (screen := complete_replay(text_screen_trainer(fraction, seed, runs_dir), models, 1)) is not None:
            screens[fraction] = screen
    rows = []
    for ladder in (tuple(SCREEN_FRACTIONS), *((f,) for f in screens)):
        if all(f in screens for f in ladder):
            label = f"screen {','.join(f'{f:g}' for f in ladder)} + race" + (" (default)" if ladder == SCREEN_FRACTIONS else "")
            rows += screened_curve(replay, [screens[f] for f in ladder], list(ladder), frozen, truth, label)
    return rows


def text_target(lines: list[str], rng: np.random.Generator) -> list[dict]:
    """C: the text-QA budget curve; each seed's curves are raced, the truth is the *other* seed's test accuracy."""
    from emms.finetune.backbones import frozen_extractor
    from emms.models import parameter_count

    replays = text_replays()
    if len(replays) < 2:
        lines.append("Text target: the multi-task text-QA records of two seeds are not all there; skipped.")
        return []
    scores = pd.read_csv(DATA / "multitask_scores.csv")
    scores = scores[scores.target == TEXT_TARGET]
    models = list(next(iter(replays.values())).records)
    sizes = {m: float(parameter_count(frozen_extractor(m))) for m in models}
    frozen = {metric: g.set_index("model").score.to_dict() for metric, g in scores.groupby("metric")}
    frozen["params"] = sizes
    rows, free = [], []
    for seed, replay in replays.items():
        other = [r for s, r in replays.items() if s != seed]
        truth = {m: float(np.mean([r.records[m]["test_score"] for r in other])) for m in models}
        for metric, values in frozen.items():
            free.append({"seed": seed, "method": metric, **statistics(values, truth)})
        for row in race_curve(replay, frozen, truth) + baselines(replay, truth, rng) + \
                text_screen_curves(seed, models, frozen, truth, replay):
            rows.append({"target": f"{TEXT_TARGET}/seed{seed}", "race_seed": seed, **row})
    free_table = pd.DataFrame(free).groupby("method").mean(numeric_only=True).sort_values("wtau", ascending=False)
    lines += [f"#### C. Text target ({TEXT_TARGET}: {len(models)} text candidates, 3-epoch runs, lr 1e-4; the race "
              "replays one seed's recorded CPU curves, the truth is the other seed's test accuracy; mean over the "
              f"{len(replays)} seeds)", "",
              "Free baselines:", "", "| method | weighted τ sym | weighted τ truth-w. | top-1 hits | regret@1 |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {r.wtau:+.3f} | {r.wtau_truth:+.3f} | {r.top1:.2f} | {r.regret1:.4f} |"
              for m, r in free_table.iterrows()]
    curve = pd.DataFrame(rows)
    mean = (curve.groupby(["method", "budget"], sort=False)
            .agg(spent=("spent", "mean"), entrants=("entrants", "mean"), wtau=("wtau", "mean"),
                 wtau_truth=("wtau_truth", "mean"), top1=("top1", "mean"), regret1=("regret1", "mean"),
                 runs=("wtau", "count")).reset_index())
    lines += ["", "Budget curve:", "",
              "| method | budget | spent | entrants | weighted τ sym | weighted τ truth-w. | top-1 | regret@1 | seeds |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in mean.itertuples():
        def fmt(v, f):  # noqa: ANN001, ANN202
            return "—" if pd.isna(v) else format(v, f)
        lines.append(f"| {r.method} | {r.budget:.0%} | {fmt(r.spent, '.1%')} | {fmt(r.entrants, '.1f')} | "
                     f"{fmt(r.wtau, '+.3f')} | {fmt(r.wtau_truth, '+.3f')} | {fmt(r.top1, '.2f')} | "
                     f"{fmt(r.regret1, '.4f')} | {r.runs} |")
    lines += ["", f"Text parameter counts: {json.dumps({m: int(v) for m, v in sizes.items()})}", ""]
    return rows


def race_curve(replay: CpuReplay, frozen: dict[str, dict[str, float]], truth: dict[str, float]) -> list[dict]:
    """B: the race at each budget and recall rule, replayed."""
    costs, epochs, models = replay.costs(), replay.epochs, list(replay.records)
    grid = costs.grid(models)
    rows = []
    for recall_name, recall in RECALLS.items():
        order = recall_order(frozen, models, recall)
        for budget in BUDGETS:
            try:
                plan = plan_race(order, costs, budget * grid)
            except InputError as exc:  # the budget trains nothing
                rows.append({"method": f"race ({recall_name})", "budget": budget, "spent": 0.0, "note": str(exc)[:60]})
                continue
            result = run_race(plan, replay, costs, budget * grid)
            table = predict(result.records, epochs)
            finished = table[table.complete]
            pick = str((finished if len(finished) else table).iloc[0]["model"])
            scores = {m: float(v) for m, v in zip(table.model, table.predicted)}
            floor = min(scores.values()) - 1.0
            scores.update({m: floor - order.index(m) * 1e-3 for m in models if m not in scores})
            rows.append({"method": f"race ({recall_name})", "budget": budget, "spent": result.spent_seconds / grid,
                         "entrants": len(plan.entrants), **statistics(scores, truth, pick)})
    return rows


def screened_curve(replay: CpuReplay, screens: list[CpuReplay], fractions: list[float],
                   frozen: dict[str, dict[str, float]], truth: dict[str, float], label: str,
                   recall: tuple[str, ...] = ("emms", "params")) -> list[dict]:
    """D: at each budget, the fine-tuning stages of :func:`emms.select` (:func:`emms.finetune.screen.screen_and_race`)
    on the records: the screen's rungs (``screens[r]``: the runs on ``fractions[r]`` of the train split), then the
    race on what is left; ranking as :func:`emms.select` ranks: raced models by prediction, then the screen's
    order. Costs: CPU seconds of the recorded runs (a run's recorded cost is also its estimate)."""
    costs, models = replay.costs(), list(replay.records)
    grid = costs.grid(models)
    order = recall_order(frozen, models, recall)
    estimates = [{m: r["seconds"] for m, r in screen.records.items()} for screen in screens]
    rows = []
    for budget in BUDGETS:
        try:
            screened, raced = screen_and_race(order, costs, budget * grid, replay, fractions=fractions,
                                              screen_trainers=screens, screen_estimates=estimates)
        except InputError as exc:
            rows.append({"method": label, "budget": budget, "spent": 0.0, "note": str(exc)[:60]})
            continue
        table = predict(raced.records, replay.epochs)
        finished = list(table[table.complete.astype(bool)].model)
        ranking = [*table.model, *[m for m in screened.order if m not in set(table.model)]]
        status = "raced (screen skipped)" if not screened.records else "raced" if raced.records else "screened"
        rows.append({"method": label, "budget": budget, "spent": (screened.spent_seconds + raced.spent_seconds) / grid,
                     "entrants": len(raced.records), "screened": len(screened.records),
                     "rescreened": len(screened.rungs[-1]["trained"]) if len(screened.rungs) > 1 else 0,
                     "status": status, **statistics(ranked(ranking), truth, finished[0] if finished else ranking[0])})
    return rows


def baselines(replay: CpuReplay, truth: dict[str, float], rng: np.random.Generator) -> list[dict]:
    """B: one epoch each then top-K; random candidates fully trained; both at each budget."""
    records, models = replay.records, list(replay.records)
    full = {m: r["seconds"] for m, r in records.items()}
    epoch1 = {m: r["curve"][0]["seconds"] for m, r in records.items()}
    grid = sum(full.values())
    final = {m: r["curve"][-1]["val"] for m, r in records.items()}
    rows = []
    for budget in BUDGETS:
        limit = budget * grid
        first = sum(epoch1.values())
        if first <= limit:
            ranked = sorted(models, key=lambda m: -records[m]["curve"][0]["val"])
            spent, chosen = first, []
            for model in ranked:
                if spent + full[model] - epoch1[model] <= limit:
                    chosen.append(model)
                    spent += full[model] - epoch1[model]
            scores = {m: (2.0 + final[m]) if m in chosen else records[m]["curve"][0]["val"] for m in models}
            rows.append({"method": "one epoch each, then top-K", "budget": budget, "spent": spent / grid,
                         "entrants": len(chosen), **statistics(scores, truth)})
        else:
            rows.append({"method": "one epoch each, then top-K", "budget": budget, "spent": 0.0,
                         "note": f"one epoch of all costs {first / grid:.0%}"})
        draws = []
        for _ in range(1000):
            order = list(rng.permutation(models))
            spent, trained = 0.0, []
            for model in order:
                if spent + full[model] <= limit:
                    trained.append(model)
                    spent += full[model]
            if not trained:
                continue
            scores = {m: (2.0 + final[m]) if m in trained else -float(order.index(m)) for m in models}
            draws.append(statistics(scores, truth))
        mean = pd.DataFrame(draws).mean().to_dict() if draws else {}
        rows.append({"method": "random, fully trained", "budget": budget, "spent": np.nan, "entrants": np.nan, **mean,
                     "note": f"{len(draws)} of 1000 draws could train a model (mean over those)"})
    return rows


def screen_fractions(runs_dir: Path) -> list[float]:
    """The screen fractions with records under ``runs_dir/screen`` (directories ``<target>_screen<f>``)."""
    found = {float(d.name.rsplit("_screen", 1)[1]) for d in (runs_dir / "screen" / "runs").glob("*_screen*")}
    return sorted(found)


def screen_section(runs_dir: Path, replays: dict[str, CpuReplay], truth_table: pd.DataFrame, scores: pd.DataFrame,
                   sizes: dict[str, int], curve_rows: list[dict], free_rows: list[dict], out: Path) -> list[str]:
    """D: the screen (each recorded fraction), then the race, replayed; the screen alone; mean over the
    targets that have both screen and full records, beside part B's rows at the same budgets."""
    rows, screens = [], {f: screen_replays(runs_dir, f, TARGETS) for f in screen_fractions(runs_dir)}
    frozen_of = {}
    for target in TARGETS:
        frozen_of[target] = {metric: g.set_index("model").score.to_dict()
                             for metric, g in scores[scores.target == target].groupby("metric")}
        frozen_of[target]["params"] = {m: float(v) for m, v in sizes.items()}
    for fraction, by_target in screens.items():  # each fraction's whole screen, alone and fused with the recall
        for target, screen in by_target.items():
            truth = truth_table[truth_table.target == target].set_index("model").value.to_dict()
            cost = sum(r["seconds"] for r in screen.records.values())
            grid = sum(r["seconds"] for r in replays[target].records.values()) if target in replays else np.nan
            for fuse, what in ((False, "alone"), (True, "fused with recall")):
                recall = recall_order(frozen_of[target], list(MODELS), ("emms", "params")) if fuse else list(MODELS)
                ranking = screen_ranking(screen.records, recall, fuse=fuse)
                rows.append({"target": target, "method": f"screen {fraction:g} {what} (all 10)", "budget": np.nan,
                             "spent": cost / grid, "screen_cpu_seconds": cost, "screened": len(ranking),
                             **statistics(ranked(ranking), truth)})
    for target in [t for t in TARGETS if t in screens.get(0.1, {}) and t in screens.get(0.25, {})]:  # look-ahead
        truth = truth_table[truth_table.target == target].set_index("model").value.to_dict()
        first, second = (screens[f][target].records for f in (0.1, 0.25))
        rung1 = screen_ranking(first, recall_order(frozen_of[target], list(MODELS), ("emms", "params")))
        for k in (0.0, 0.5, 1.0, 2.0):  # score on 0.25 + k x its gain from 0.1: a linear look ahead
            ahead = {m: {"val_score": second[m]["val_score"] + k * (second[m]["val_score"] - first[m]["val_score"])}
                     for m in MODELS}
            ranking = screen_ranking(ahead, rung1)
            rows.append({"target": target, "method": f"0.25 + {k:g} x gain from 0.1, fused with rung 1 (all 10)",
                         "budget": np.nan, "screened": len(ranking),
                         **statistics(ranked(ranking), truth)})
    ladders = [tuple(SCREEN_FRACTIONS), (0.1, 0.25, 0.5), (0.1, 0.5), *((f,) for f in screens)]
    for target, replay in replays.items():  # the budget curve of each screen ladder, then the race
        truth = truth_table[truth_table.target == target].set_index("model").value.to_dict()
        for ladder in ladders:
            if not all(target in screens.get(f, {}) for f in ladder):
                continue
            label = f"screen {','.join(f'{f:g}' for f in ladder)} + race" + (" (default)" if ladder == SCREEN_FRACTIONS else "")
            curve = screened_curve(replay, [screens[f][target] for f in ladder], list(ladder), frozen_of[target], truth,
                                   label)
            rows += [{"target": target, **row} for row in curve]
    if not rows:
        return ["#### D. Screen: no screen records under " + str(runs_dir / "screen"), ""]
    table = pd.DataFrame(rows)
    table.to_csv(out.with_name(out.stem + "_screen.csv"), index=False)

    def fmt(v, f):  # noqa: ANN001, ANN202
        return "—" if pd.isna(v) else format(v, f)

    lines = ["#### D. Screen, then race (replayed from recorded screen and full runs)", "",
             "| target | method | budget | spent | screened | raced | answer | weighted τ sym | weighted τ truth-w. | top-1 | regret@1 | note |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.target} | {r.method} | {fmt(r.budget, '.0%')} | {fmt(r.spent, '.1%')} | "
                     f"{fmt(getattr(r, 'screened', np.nan), '.0f')} | {fmt(getattr(r, 'entrants', np.nan), '.0f')} | "
                     f"{'' if pd.isna(getattr(r, 'status', np.nan)) else r.status} | {fmt(r.wtau, '+.3f')} | "
                     f"{fmt(r.wtau_truth, '+.3f')} | {fmt(r.top1, '.0f')} | {fmt(r.regret1, '.4f')} | "
                     f"{'' if pd.isna(getattr(r, 'note', np.nan)) else r.note} |")
    both = sorted(set(table.dropna(subset=["budget"]).target) & set(replays))
    if both:
        image = pd.DataFrame([r for r in curve_rows if r.get("target") in both])
        mixed = pd.concat([table.dropna(subset=["budget"]), image], ignore_index=True)
        mixed = mixed[mixed.budget.isin([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0])]
        lines += ["", f"Mean over the targets with a value (B's rows and the free metrics: {', '.join(both)}; the "
                  "screen's: also a target without full runs where the answer is the screen's); cell: weighted τ sym / "
                  "truth-w. / top-1 hits of n / regret@1 (mean share of the grid spent); — : refused", "",
                  "| method | " + " | ".join(f"{b:.0%}" for b in sorted(mixed.budget.unique())) + " |",
                  "|---|" + "---:|" * mixed.budget.nunique()]
        for method, g in mixed.groupby("method", sort=False):
            cells = []
            for budget in sorted(mixed.budget.unique()):
                h = g[g.budget == budget].dropna(subset=["wtau"])
                if h.empty:
                    cells.append("—")
                    continue
                spent = "" if h.spent.isna().all() else f" ({h.spent.mean():.0%})"
                cells.append(f"{h.wtau.mean():+.2f} / {h.wtau_truth.mean():+.2f} / {h.top1.sum():.2g}/{len(h)} / "
                             f"{h.regret1.mean():.3f}{spent}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        for group in [both] + ([sorted(set(table.target))] if set(table.target) != set(both) else []):
            free = pd.DataFrame([r for r in free_rows if r["target"] in group]).groupby("method").mean(numeric_only=True)
            for method in ("params", "nleep", "emms"):
                if method in free.index:
                    r = free.loc[method]
                    lines.append(f"| free: {method} ({', '.join(group)}) | {r.wtau:+.2f} / {r.wtau_truth:+.2f} / "
                                 f"{r.top1 * len(group):.0f}/{len(group)} / {r.regret1:.3f} |"
                                 + " |" * (mixed.budget.nunique() - 1))
    return [*lines, ""]


def live_select(target: str, budget: float, out: Path) -> None:
    """A live ``emms.select`` (not a replay) on ``target``'s 2,500 images of part B (train + val, split seed 1),
    split again by select itself (val_fraction 0.2: 2,000 / 500), fine-tuning seed 3, the default protocol,
    recall and screen (records and checkpoints in /tmp/emms-live); writes the selection's JSON to ``out`` and prints its
    ranking against the truth."""
    import emms
    from emms.data import TaskData
    from emms.data.fashion_targets import benchmark_targets

    split = benchmark_targets([target], n_probe=1, **RUN_SPLIT)[target]
    train, val = split.task_data("train"), split.task_data("val")
    data = TaskData(name=f"{target}-train+val", modality="image", inputs=np.concatenate([train.inputs, val.inputs]),
                    task="classification", labels=pd.concat([train.labels, val.labels], ignore_index=True),
                    class_names=train.class_names)
    selection = emms.select(data, list(MODELS), budget=budget, finetune_seed=RUN_SEED, seed=RUN_SPLIT["seed"],
                            out_dir=Path("/tmp/emms-live") / out.stem, workers=2, on_event=print)
    selection.to_json(out)
    truth = pd.read_csv(DATA / "finetune_truth.csv")
    truth = truth[truth.target == target].set_index("model").value.to_dict()
    ranking = list(selection.table.model)
    stats = statistics(ranked(ranking), truth, selection.recommended)
    print(selection.summary())
    print(selection.how_sure())
    print(f"{target}, budget {budget:g}: weighted tau sym {stats['wtau']:+.3f} / truth-w. {stats['wtau_truth']:+.3f}, "
          f"top-1 {stats['top1']:.0f}, regret@1 {stats['regret1']:.4f}; spent {selection.cost['fraction_of_full_grid']:.1%} "
          f"of the estimated grid ({selection.cost['spent_seconds']:.0f} s of {selection.cost['full_grid_seconds']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=DATA / "select_runs")
    parser.add_argument("--out", type=Path, default=DATA / "select_benchmark.csv")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--record-screen", type=float, metavar="FRACTION",
                        help="fine-tune (not replay) the screen runs at this train fraction on --targets, then stop")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--live", metavar="TARGET", help="run emms.select live on TARGET (trains), then stop")
    parser.add_argument("--budget", type=float, default=0.1, help="--live's budget (fraction of the full grid)")
    args = parser.parse_args()
    if args.live is not None:
        live_select(args.live, args.budget, args.runs / "live" / f"{args.live}-budget{args.budget:g}.json")
        return
    if args.record_screen is not None:
        record_screens(args.targets.split(","), args.record_screen, args.runs)
        return

    truth_table = pd.read_csv(DATA / "finetune_truth.csv")
    scores = pd.read_csv(DATA / "offline_scores.csv")
    sizes = parameter_counts()
    lines = []

    full = full_budget_from_truth_records(truth_table)
    lines += ["#### A. Full budget (every candidate fine-tuned once, ranked by validation accuracy), truth from the other seeds",
              "", "| target | held-out seed | weighted τ sym | weighted τ truth-w. | top-1 | regret@1 | (ranked by its test accuracy: weighted τ sym) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.target} | {r.held_out_seed} | {r.wtau:+.3f} | {r.wtau_truth:+.3f} | {r.top1:.0f} | {r.regret1:.4f} | "
              f"{r.wtau_by_test:+.3f} |" for r in full.itertuples()]
    lines += [f"| **mean** | | **{full.wtau.mean():+.3f}** | {full.wtau_truth.mean():+.3f} | {full.top1.mean():.2f} | "
              f"{full.regret1.mean():.4f} | {full.wtau_by_test.mean():+.3f} |", ""]

    free_rows = []
    for target in TARGETS:
        truth = truth_table[truth_table.target == target].set_index("model").value.to_dict()
        here = scores[scores.target == target]
        for metric, group in here.groupby("metric"):
            values = group.set_index("model").score.to_dict()
            if set(values) >= set(MODELS):
                free_rows.append({"target": target, "method": metric, **statistics(values, truth)})
        if "params" not in set(here.metric):  # older score tables have no size prior
            free_rows.append({"target": target, "method": "params", **statistics(sizes, truth)})
    free = pd.DataFrame(free_rows).groupby("method").mean(numeric_only=True).sort_values("wtau", ascending=False)
    lines += ["#### Free baselines on the same truth (mean over the 3 targets; 10 models)", "",
              "| method | weighted τ sym | weighted τ truth-w. | top-1 hits | regret@1 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {r.wtau:+.3f} | {r.wtau_truth:+.3f} | {3 * r.top1:.0f}/3 | {r.regret1:.4f} |" for m, r in free.iterrows()]
    lines.append("")

    replays = replayed_targets(args.runs)
    curve_rows = []
    rng = np.random.default_rng(0)
    for target, replay in replays.items():
        truth = truth_table[truth_table.target == target].set_index("model").value.to_dict()
        frozen = {metric: g.set_index("model").score.to_dict() for metric, g in scores[scores.target == target].groupby("metric")}
        frozen["params"] = {m: float(v) for m, v in sizes.items()}
        for row in race_curve(replay, frozen, truth) + baselines(replay, truth, rng):
            curve_rows.append({"target": target, **row})
    missing = [t for t in TARGETS if t not in replays]
    text_lines: list[str] = []
    curve_rows += text_target(text_lines, rng)
    if curve_rows:
        curve = pd.DataFrame(curve_rows)
        curve.to_csv(args.out, index=False)
        lines += [f"#### B. Budget curve, replayed from recorded CPU learning curves ({', '.join(replays)}; "
                  f"seed {RUN_SEED}, split seed {RUN_SPLIT['seed']}, n_train {RUN_SPLIT['n_train']})", "",
                  "| target | method | budget | spent | entrants | weighted τ sym | weighted τ truth-w. | top-1 | regret@1 | note |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in curve[curve.target.isin(TARGETS)].itertuples():  # the text target: its own table (C)
            def fmt(v, f):  # noqa: ANN001, ANN202
                return "—" if pd.isna(v) else format(v, f)
            lines.append(f"| {r.target} | {r.method} | {r.budget:.0%} | {fmt(r.spent, '.1%')} | {fmt(r.entrants, '.0f')} | "
                         f"{fmt(getattr(r, 'wtau', np.nan), '+.3f')} | {fmt(getattr(r, 'wtau_truth', np.nan), '+.3f')} | "
                         f"{fmt(getattr(r, 'top1', np.nan), '.2f')} | {fmt(getattr(r, 'regret1', np.nan), '.4f')} | "
                         f"{'' if pd.isna(getattr(r, 'note', np.nan)) else r.note} |")
        lines.append("")
    lines += text_lines
    lines += screen_section(args.runs, replays, truth_table, scores, sizes, curve_rows, free_rows, args.out)
    lines.append(f"Replayed targets: {', '.join(replays) or 'none'}; without complete curves: {', '.join(missing) or 'none'}.")
    lines.append(f"Parameter counts: {json.dumps(sizes)}")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
