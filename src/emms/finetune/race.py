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
    spent_seconds: float = 0.0


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


def plan_race(order: Sequence[str], full_seconds: dict[str, float], epochs: int, budget_seconds: float,
              eta: int = 2) -> RacePlan:
    """Entrants and rungs within ``budget_seconds`` (see the module docstring).

    ``full_seconds[model]``: estimated seconds of one full run; a run to epoch e costs e/epochs of it.
    """
    if eta < 2:
        raise InputError(f"eta: expected an integer >= 2, got {eta!r}")
    rungs = rung_epochs(epochs)
    per_epoch = {m: full_seconds[m] / epochs for m in order}

    def cost(k: int, depth: int) -> float:
        entrants = list(order[:k])
        total = sum(per_epoch[m] for m in entrants) * rungs[0]
        by_cost = sorted(entrants, key=lambda m: -per_epoch[m])
        for level in range(1, depth + 1):
            n = math.ceil(k / eta ** level)
            total += sum(per_epoch[m] for m in by_cost[:n]) * (rungs[level] - rungs[level - 1])
        return total

    for depth in range(len(rungs) - 1, -1, -1):
        fits = [k for k in range(2, len(order) + 1) if cost(k, depth) <= budget_seconds]
        if fits:
            k = max(fits)
            return RacePlan(entrants=list(order[:k]), rungs=rungs[:depth + 1], eta=eta, planned_seconds=cost(k, depth))
    need, grid = cost(2, 0), sum(full_seconds[m] for m in order)
    raise InputError(f"budget: too small to train anything: one epoch of the first two candidates "
                     f"({', '.join(order[:2])}) is estimated at {need:.0f} s ({need / grid:.1%} of the full grid), "
                     f"the budget allows {budget_seconds:.0f} s")


def run_race(plan: RacePlan, trainer: Trainer, full_seconds: dict[str, float], epochs: int, budget_seconds: float,
             *, on_event: EventCallback | None = None, deadline: Callable[[], bool] | None = None) -> RaceResult:
    """Run ``plan``: rungs with promotion, then the top-up; never start work estimated to overshoot
    ``budget_seconds`` (or after ``deadline()`` turns true)."""
    say = on_event or (lambda _: None)
    stop = deadline or (lambda: False)
    result = RaceResult(plan=plan, records={})
    alive = list(plan.entrants)

    def spent() -> float:
        return sum(r["seconds"] for r in result.records.values())

    def extra(model: str, epoch: int) -> float:
        done = result.records.get(model, {}).get("epochs_done", 0)
        return full_seconds[model] * max(epoch - done, 0) / epochs

    def train(models: list[str], epoch: int, label: str) -> list[str]:
        remaining = budget_seconds - spent()
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
            self_record = result.records[model]
            say(f"  {model}: epoch {self_record['epochs_done']} val {self_record['val_score']:.4f} "
                f"({self_record['seconds']:.0f} s so far)")
            _refresh_estimate(full_seconds, model, self_record, epochs)
        return chosen

    for level, epoch in enumerate(plan.rungs):
        trained = train(alive, epoch, f"rung {level + 1}/{len(plan.rungs)}")
        if not trained:
            break
        ranked = sorted(trained, key=lambda m: -result.records[m]["val_score"])
        keep = ranked if level == len(plan.rungs) - 1 else ranked[:math.ceil(len(ranked) / plan.eta)]
        result.history.append({"rung": level + 1, "epoch": epoch, "trained": ranked, "promoted": keep,
                               "seconds": spent()})
        alive = keep
    while not stop():  # top-up: finish the best unfinished model that fits
        table = predict(result.records, epochs)
        unfinished = [m for m in table["model"] if not result.records[m]["complete"]]
        fitting = [m for m in unfinished if extra(m, epochs) <= budget_seconds - spent() + 1e-9]
        if not fitting or not train(fitting[:1], epochs, "top-up"):
            break
        result.history.append({"rung": "top-up", "epoch": epochs, "trained": fitting[:1], "promoted": [],
                               "seconds": spent()})
    result.spent_seconds = spent()
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


def _refresh_estimate(full_seconds: dict[str, float], model: str, record: dict, epochs: int) -> None:
    """Replace a model's full-run estimate by its measured pace once it has trained."""
    if record["epochs_done"]:
        full_seconds[model] = record["seconds"] / record["epochs_done"] * epochs
