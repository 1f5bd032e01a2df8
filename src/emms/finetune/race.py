"""The budgeted race of :func:`emms.select`: successive halving over continued fine-tuning runs.

Rule (measured in BENCHMARKS.md "select"; docs/select.md says why):

* **Screen** (before the race, :mod:`emms.finetune.screen`): short runs with schedules of their own
  order the race's entrants.
* **Rungs** at epochs 1, 2, 4, ... up to the protocol's last epoch (doubling, the last one always
  included). A run promoted from one rung to the next *continues* (:func:`emms.finetune.finetune_run`
  with a checkpoint): the one-cycle schedule is the full protocol's, so a model that reaches the last
  rung has had exactly the full fine-tuning and costs no more than one full run.
* **Entrants.** The candidates enter in recall order (the frozen scores, :func:`recall_order`); the
  race takes as many as the budget allows with the whole ladder, planned so that it fits whatever
  gets promoted (the most expensive entrants are assumed promoted), at least 2. When no two entrants
  fit the whole ladder, the deepest ladder that two or more fit is taken. Less than one epoch of the
  two first candidates is an InputError.
* **Promotion** keeps the best ``1/eta`` (rounded up) by validation score at the rung's epoch: every
  survivor is compared at the same point of the same schedule.
* **Top-up.** Budget left after the ladder finishes the best unfinished models (best predicted first),
  so the budget is spent at the top of the ranking.
* **Prediction** (:func:`predict`): a finished run's predicted score is its final validation score,
  with a sampling interval; a run stopped at epoch e is extrapolated by the median gap
  ``val(last epoch) - val(e)`` of the finished runs, the interval widened by the spread of those gaps.

Costs are the runs' own measured seconds (cumulative, setup included), so a race resumed from its
records, or replayed from recorded learning curves, spends and reports exactly what they recorded.
Plans use :class:`RunCosts`: every round of training pays a model's setup (building the network,
encoding the data) again, plus its epochs; once a model has trained, its estimate is rescaled to
what it measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from emms.errors import InputError

EventCallback = Callable[[str], None]
Z_95 = 1.959964


class Trainer(Protocol):
    """Trains (or replays) runs: ``train(models, until_epoch)`` -> each model's record viewed at that epoch."""

    def train(self, models: Sequence[str], until_epoch: int) -> dict[str, dict]: ...


@dataclass
class RacePlan:
    """Who enters, the rung epochs, and the planned (worst-case) cost in seconds."""

    entrants: list[str]
    rungs: list[int]
    eta: int
    planned_seconds: float


@dataclass
class RaceResult:
    """Every model's last record (viewed at the epoch it reached), the rung history and the spend."""

    plan: RacePlan | None  # None: no race was run (the budget paid only the screen)
    records: dict[str, dict]
    history: list[dict] = field(default_factory=list)

    @property
    def spent_seconds(self) -> float:
        """Seconds of every raced run so far (each record's cumulative cost)."""
        return float(sum(r["seconds"] for r in self.records.values()))


@dataclass
class RunCosts:
    """Estimated seconds of each candidate's fine-tuning under a protocol of ``epochs`` epochs:
    ``full[m]`` one full run from scratch, ``setup[m]`` (default 0) the part of it that every round
    of training pays (building the network, encoding the data; a continued run pays it again). A
    round from epoch d to e costs ``setup + (e - d) * (full - setup) / epochs``."""

    full: dict[str, float]
    epochs: int
    setup: dict[str, float] = field(default_factory=dict)

    def round(self, model: str, done: int, epoch: int) -> float:
        """Seconds of training ``model`` from epoch ``done`` to ``epoch`` in one round (0 if nothing to do)."""
        if epoch <= done:
            return 0.0
        setup = min(self.setup.get(model, 0.0), self.full[model])
        return setup + (self.full[model] - setup) * (epoch - done) / self.epochs

    def grid(self, models: Sequence[str]) -> float:
        """The full grid of ``models``: each fine-tuned once, fully."""
        return float(sum(self.full[m] for m in models))

    def scaled(self, factor: float) -> RunCosts:
        """Every estimate multiplied by ``factor`` (a measured pace)."""
        return RunCosts({m: v * factor for m, v in self.full.items()}, self.epochs,
                        {m: v * factor for m, v in self.setup.items()})

    def refresh(self, model: str, record: dict) -> None:
        """Rescale ``model``'s estimate to its measured pace: ``record["seconds"]`` for its epochs so far
        (counted as one round, so a record of several rounds makes the estimate cautious)."""
        estimated = self.round(model, 0, record["epochs_done"])
        if estimated > 0 and record["seconds"] > 0:
            ratio = record["seconds"] / estimated
            self.full[model] *= ratio
            if model in self.setup:
                self.setup[model] *= ratio


def rung_epochs(epochs: int) -> list[int]:
    """1, 2, 4, ... below ``epochs``, then ``epochs``."""
    out, e = [], 1
    while e < epochs:
        out.append(e)
        e *= 2
    return [*out, epochs]


def recall_order(frozen: dict[str, dict[str, float]], models: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """Interleave the orders of ``metrics`` (higher first; ``frozen[metric][model]``): the first model
    of each metric in turn, then the second, ... skipping models already taken (a hybrid shortlist:
    one metric's blind spot is another's pick). Models without a score come last, in input order."""
    orders = []
    for metric in metrics:
        scores = frozen.get(metric, {})
        scored = [m for m in models if m in scores and np.isfinite(scores[m])]
        orders.append(sorted(scored, key=lambda m: (-scores[m], models.index(m))))
    out: list[str] = []
    for position in range(len(models)):
        for order in orders:
            if position < len(order) and order[position] not in out:
                out.append(order[position])
    return out + [m for m in models if m not in out]


def plan_race(order: Sequence[str], costs: RunCosts, budget_seconds: float, eta: int = 2) -> RacePlan:
    """Entrants and rungs within ``budget_seconds`` (see the module docstring), rounds costed by ``costs``."""
    if eta < 2:
        raise InputError(f"eta: expected an integer >= 2, got {eta!r}")
    rungs = rung_epochs(costs.epochs)

    def cost(k: int, depth: int) -> float:
        entrants = list(order[:k])
        total = sum(costs.round(m, 0, rungs[0]) for m in entrants)
        for level in range(1, depth + 1):  # the most expensive entrants assumed promoted
            rounds = sorted((costs.round(m, rungs[level - 1], rungs[level]) for m in entrants), reverse=True)
            total += sum(rounds[:math.ceil(k / eta ** level)])
        return total

    for depth in range(len(rungs) - 1, -1, -1):
        fits = [k for k in range(2, len(order) + 1) if cost(k, depth) <= budget_seconds]
        if fits:
            k = max(fits)
            return RacePlan(entrants=list(order[:k]), rungs=rungs[:depth + 1], eta=eta, planned_seconds=cost(k, depth))
    need, grid = cost(2, 0), costs.grid(order)
    raise InputError(f"budget: too small to train anything: one epoch of the first two candidates "
                     f"({', '.join(order[:2])}) is estimated at {need:.0f} s ({need / grid:.1%} of the full grid), "
                     f"the budget allows {budget_seconds:.0f} s")


def run_race(plan: RacePlan, trainer: Trainer, costs: RunCosts, budget_seconds: float, *,
             on_event: EventCallback | None = None, deadline: Callable[[], bool] | None = None) -> RaceResult:
    """Run ``plan``: rungs with promotion, then the top-up; never start a round estimated (``costs``,
    rescaled as models train) to overshoot ``budget_seconds``, nor one after ``deadline()`` turns true."""
    say = on_event or (lambda _: None)
    stop = deadline or (lambda: False)
    costs = RunCosts(dict(costs.full), costs.epochs, dict(costs.setup))  # rescaled below: the caller's stays
    epochs = costs.epochs
    result = RaceResult(plan=plan, records={})
    alive = list(plan.entrants)

    def extra(model: str, epoch: int) -> float:
        return costs.round(model, result.records.get(model, {}).get("epochs_done", 0), epoch)

    def train(models: list[str], epoch: int, label: str) -> list[str]:
        remaining = budget_seconds - result.spent_seconds
        chosen, planned = [], 0.0
        for model in models:  # best first: cut from the bottom when the measured costs ran over
            if planned + extra(model, epoch) <= remaining + 1e-9:
                chosen.append(model)
                planned += extra(model, epoch)
        if not chosen or stop():
            return []
        say(f"{label}: {len(chosen)} model(s) to epoch {epoch}/{epochs} (estimated {planned:.0f} s, "
            f"{remaining:.0f} s of budget left)")
        records = trainer.train(chosen, epoch)
        result.records.update(records)
        for model in chosen:
            record = result.records[model]
            say(f"  {model}: epoch {record['epochs_done']} val {record['val_score']:.4f} "
                f"({record['seconds']:.0f} s so far)")
            costs.refresh(model, record)
        return chosen

    for level, epoch in enumerate(plan.rungs):
        trained = train(alive, epoch, f"rung {level + 1}/{len(plan.rungs)}")
        if not trained:
            break
        ranked = sorted(trained, key=lambda m: -result.records[m]["val_score"])
        keep = ranked if level == len(plan.rungs) - 1 else ranked[:math.ceil(len(ranked) / plan.eta)]
        result.history.append({"rung": level + 1, "epoch": epoch, "trained": ranked, "promoted": keep,
                               "seconds": result.spent_seconds})
        alive = keep
    while not stop():  # top-up: finish the best unfinished model that fits
        table = predict(result.records, epochs)
        unfinished = [m for m in table["model"] if not result.records[m]["complete"]]
        fitting = [m for m in unfinished if extra(m, epochs) <= budget_seconds - result.spent_seconds + 1e-9]
        if not fitting or not train(fitting[:1], epochs, "top-up"):
            break
        result.history.append({"rung": "top-up", "epoch": epochs, "trained": fitting[:1], "promoted": [],
                               "seconds": result.spent_seconds})
    return result


def predict(records: dict[str, dict], epochs: int, *, z: float = Z_95,
            standard_error: Callable[[float, int], float] | None = None) -> pd.DataFrame:
    """Predicted final validation score per raced model, best first.

    Columns: model, predicted, low, high, epochs_done, complete, extrapolated, observed (the last
    validation score). ``standard_error(value, n_val)`` is the head's (default: a proportion's).
    """
    from emms.finetune.heads import proportion_standard_error

    se = standard_error or proportion_standard_error
    finished = {m: r for m, r in records.items() if r["complete"] and len(r["curve"]) == epochs}
    rows = []
    for model, record in records.items():
        e, observed = record["epochs_done"], float(record["val_score"])
        noise = z * se(observed, int(record["n_val"]))
        if record["complete"]:
            predicted, half, extrapolated = observed, noise, False
        else:
            gaps = [r["curve"][-1]["val"] - r["curve"][e - 1]["val"] for r in finished.values()]
            if gaps:
                spread = (max(gaps) - min(gaps)) / 2 if len(gaps) > 1 else abs(gaps[0]) / 2
                predicted, half, extrapolated = observed + float(np.median(gaps)), noise + spread, True
            else:
                predicted, half, extrapolated = observed, noise, False
        rows.append({"model": model, "predicted": predicted, "low": predicted - half, "high": predicted + half,
                     "epochs_done": e, "complete": bool(record["complete"]), "extrapolated": extrapolated,
                     "observed": observed})
    table = pd.DataFrame(rows, columns=["model", "predicted", "low", "high", "epochs_done", "complete",
                                        "extrapolated", "observed"])
    return table.sort_values(["predicted", "epochs_done"], ascending=[False, False], kind="stable").reset_index(drop=True)


class RecordTrainer:
    """A :class:`Trainer` over the run records in ``out_dir`` (one lr, one seed): a model whose record
    has reached the epoch is viewed there (its recorded cost and score at that point); the others are
    trained (continued from their checkpoints, in parallel over ``workers``), unless ``replay_only``,
    where a missing record is an InputError."""

    def __init__(self, data, protocol, *, lr: float, seed: int, out_dir, device: str = "cpu",  # noqa: ANN001
                 workers: int = 1, threads: int = 1, replay_only: bool = False,
                 on_progress: Callable | None = None) -> None:
        self.data, self.protocol, self.lr, self.seed = data, protocol, lr, seed
        self.out_dir, self.device, self.workers, self.threads = out_dir, device, workers, threads
        self.replay_only, self.on_progress = replay_only, on_progress
        self.trained_seconds = 0.0  # seconds of training done by this trainer (not replayed)

    def key(self, model: str):  # noqa: ANN201 - RunKey
        from emms.finetune.run import RunKey

        return RunKey(self.data.name, model, self.lr, self.seed)

    def recorded(self, model: str) -> dict | None:
        from emms.finetune.run import load_record

        return load_record(self.key(model), self.out_dir, self.data.fingerprint, self.protocol)

    def train(self, models: Sequence[str], until_epoch: int) -> dict[str, dict]:
        from emms.finetune.grid import run_jobs

        out, todo = {}, []
        for model in models:
            record = self.recorded(model)
            if record is not None and record["epochs_done"] >= until_epoch and (record["curve"] or record["complete"]):
                out[model] = view_at(record, until_epoch, self.protocol.epochs)
            elif self.replay_only:
                raise InputError(f"records: no record of {model} up to epoch {until_epoch} in {self.out_dir}")
            else:
                todo.append((model, 0.0 if record is None else record["seconds"]))
        jobs = [(self.data, self.key(model)) for model, _ in todo]
        before = dict(todo)
        for key, outcome in run_jobs(jobs, self.protocol, device=self.device, out_dir=self.out_dir, workers=self.workers,
                                     threads=self.threads, until_epoch=until_epoch, on_progress=self.on_progress):
            if not isinstance(outcome, dict):
                raise InputError(f"models: fine-tuning {key.model} failed: {outcome}")
            out[key.model] = outcome
            self.trained_seconds += outcome["seconds"] - before[key.model]
        return out


def view_at(record: dict, epoch: int, epochs: int) -> dict:
    """``record`` as it was after ``epoch`` epochs (its curve's prefix, cost and score at that point)."""
    if record["epochs_done"] == epoch:
        return record
    if not record["curve"] or record["epochs_done"] < epoch:
        raise InputError(f"records: {record['model']} has no learning curve up to epoch {epoch}")
    point = record["curve"][epoch - 1]
    return {**record, "curve": record["curve"][:epoch], "epochs_done": epoch, "complete": epoch == epochs,
            "val_score": point["val"], "seconds": point["seconds"], "steps": point["steps"],
            "test_score": record["test_score"] if epoch == epochs else None}
