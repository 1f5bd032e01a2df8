"""The screen before the race of :func:`emms.select`: short fine-tuning runs of their own, in rungs.

Rule (measured in BENCHMARKS.md §11 D; docs/select.md says why):

* A **screen run** fine-tunes a candidate for one epoch with its own one-cycle schedule
  (:func:`screen_protocol`: batch :data:`SCREEN_BATCH_SIZE`, all layers) on a stratified share of
  the train split (:func:`screen_data`), judged on the same validation split as the race.
* **Rungs** (successive halving over the share of data, :data:`SCREEN_FRACTIONS`): rung 1 screens
  every candidate, in recall order, as far as the budget allows (fewer than 2: an InputError); each
  later rung screens the best ``max(2, ceil(n / eta))`` of the previous rung's order on a larger
  share, as many of them (a prefix) as the budget left allows; fewer than 2 ends the ladder.
* **Order** (:func:`screen_ranking`): each rung orders its models by a Borda count of their rank by
  this rung's score and their rank in the previous order (rung 1: the recall order), so a noisy
  short run and a blind frozen prior correct each other; the models a rung did not reach keep the
  previous rung's order below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from emms.errors import InputError
from emms.finetune.race import RaceResult, RunCosts, Trainer, plan_race, rung_epochs, run_race

#: Shares of the train split the screen's rungs train on (one epoch each, stratified for
#: classification); chosen by measurement (docs/select.md, BENCHMARKS.md §11 D).
SCREEN_FRACTIONS = (0.1, 0.25)
#: Batch size of a screen run (at most the protocol's): more optimiser steps for the same images.
SCREEN_BATCH_SIZE = 32


@dataclass
class ScreenResult:
    """The screen's outcome: ``order`` (screened models best first, then the rest in recall order),
    ``records`` (each screened model's record at the last rung it reached, with ``fraction``),
    ``seconds`` (each model's screen seconds over all its rungs), ``rungs`` (per rung: fraction,
    the models trained in its order, seconds), the total ``spent_seconds``, and ``pace``: measured
    over estimated seconds of the screen runs (> 1: the estimates were optimistic, e.g. on a busy
    machine; later estimates are multiplied by it)."""

    order: list[str]
    records: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rungs: list[dict] = field(default_factory=list)
    pace: float = 1.0

    @property
    def spent_seconds(self) -> float:
        """Seconds of every screen run so far."""
        return float(sum(self.seconds.values()))


def check_screen_fractions(screen: float | Sequence[float] | None) -> tuple[float, ...]:
    """The screen's rung fractions from ``screen`` (one fraction, several increasing ones, or None / 0
    for no screen: an empty tuple); an InputError naming ``screen`` otherwise."""
    fractions = (screen,) if isinstance(screen, (int, float)) else tuple(screen or ())
    if fractions in ((), (0,)) and not isinstance(screen, bool):
        return ()
    for value in fractions:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise InputError(f"screen: expected fractions of the train split in (0, 1], or 0 for none, got {screen!r}")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise InputError(f"screen: expected increasing fractions (one per rung), got {screen!r}")
    return tuple(float(f) for f in fractions)


def screen_protocol(protocol, batch_size: int = SCREEN_BATCH_SIZE):  # noqa: ANN001, ANN201 - FinetuneProtocol
    """The screen's own protocol: ``protocol`` with one epoch (so its one-cycle schedule is complete
    within the screen) and a batch of at most ``batch_size``. Its records never mix with full runs:
    :func:`emms.finetune.run.load_record` refuses a record of another protocol."""
    from dataclasses import replace

    return replace(protocol, epochs=1, batch_size=min(protocol.batch_size, batch_size))


def screen_data(data, fraction: float, seed: int):  # noqa: ANN001, ANN201 - FinetuneData
    """``data`` with its train split cut to ``fraction`` of its rows (stratified by label for
    classification, at random for the other kinds), the same validation split and no test split;
    its own name (``<name>@screen<fraction>``) and a fingerprint that names the rows it kept, so
    screen records have their own keys and a record of other rows is never replayed as this one."""
    import hashlib
    from dataclasses import replace

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InputError(f"screen: expected a fraction of the train split in (0, 1], got {fraction!r}")
    inputs, targets = data.train
    n = len(targets)
    k = max(min(n, int(round(fraction * n))), 2)
    rows = np.arange(n)
    if k < n and data.task == "classification":
        from sklearn.model_selection import train_test_split

        labels = np.asarray(targets)
        try:
            rows, _ = train_test_split(rows, train_size=k, stratify=labels, random_state=seed)
        except ValueError:  # a class too small to stratify: at random
            rows = np.random.default_rng(seed).choice(n, k, replace=False)
    elif k < n:
        rows = np.random.default_rng(seed).choice(n, k, replace=False)
    rows = np.sort(rows).astype(np.int64)
    part = inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows]
    kept = hashlib.sha256(rows.tobytes()).hexdigest()[:12]
    return replace(data, name=f"{data.name}@screen{fraction:g}", train=(part, targets[rows]), test=None,
                   fingerprint=f"{data.fingerprint}-screen{fraction:g}-{seed}-{kept}")


def affordable_prefix(order: Sequence[str], seconds: dict[str, float], budget_seconds: float) -> list[str]:
    """The longest prefix of ``order`` whose summed ``seconds`` fit ``budget_seconds``."""
    chosen, total = [], 0.0
    for model in order:
        if total + seconds[model] > budget_seconds + 1e-9:
            break
        chosen.append(model)
        total += seconds[model]
    return chosen


def plan_screen(order: Sequence[str], screen_seconds: dict[str, float], budget_seconds: float,
                full_grid_seconds: float) -> list[str]:
    """Rung 1's candidates: the longest prefix of ``order`` whose estimated screen cost fits
    ``budget_seconds`` (every candidate when the budget allows). Fewer than 2: an InputError."""
    chosen = affordable_prefix(order, screen_seconds, budget_seconds)
    if len(chosen) < 2:
        need = sum(screen_seconds[m] for m in order[:2])
        raise InputError(f"budget: too small to train anything: the screen of the first two candidates "
                         f"({', '.join(order[:2])}) is estimated at {need:.0f} s ({need / full_grid_seconds:.1%} of "
                         f"the full grid), the budget allows {budget_seconds:.0f} s")
    return chosen


def screen_ranking(records: dict[str, dict], order: Sequence[str], *, fuse: bool = True) -> list[str]:
    """The screened models best first, then the unscreened ones in ``order``.

    ``fuse`` (the default): the screened models are ordered by the sum of their rank by screen score
    and their rank in ``order`` among them (a Borda count of the two judges; ties: the better screen
    score first). A one-epoch screen on a share of the data under-rates backbones that adapt slowly
    (on the benchmark: the EfficientNets) and the frozen recall misses how a backbone adapts; fused,
    they beat either alone (BENCHMARKS.md §11 D). ``fuse=False``: by screen score alone (ties:
    ``order``)."""
    order = list(order)
    by_screen = sorted(records, key=lambda m: (-float(records[m]["val_score"]), order.index(m)))
    if fuse:
        by_order = sorted(records, key=order.index)
        by_screen = sorted(by_screen, key=lambda m: (by_screen.index(m) + by_order.index(m), by_screen.index(m)))
    return by_screen + [m for m in order if m not in records]


def run_screen(order: Sequence[str], trainers: Sequence[Trainer], estimates: Sequence[dict[str, float]],
               fractions: Sequence[float], budget_seconds: float, full_grid_seconds: float, *, eta: int = 2,
               on_event: Callable[[str], None] | None = None) -> ScreenResult:
    """The screen's rungs (module docstring): ``trainers[r]`` trains rung r's one-epoch runs (on
    ``fractions[r]`` of the train split), ``estimates[r]`` their estimated seconds; never starts a
    rung estimated to overshoot ``budget_seconds``; each rung's estimates are scaled by the measured
    pace of the rungs before it. Rung 1 not affordable for two: an InputError."""
    say = on_event or (lambda _: None)
    result = ScreenResult(order=list(order))
    previous, estimated = list(order), 0.0
    for level, (trainer, given, fraction) in enumerate(zip(trainers, estimates, fractions)):
        estimate = {m: seconds * result.pace for m, seconds in given.items()}
        left = budget_seconds - result.spent_seconds
        if level == 0:
            chosen = plan_screen(previous, estimate, left, full_grid_seconds)
        else:
            best = previous[:max(2, math.ceil(len(result.rungs[-1]["trained"]) / eta))]
            chosen = affordable_prefix(best, estimate, left)
            if len(chosen) < 2:
                say(f"screen rung {level + 1}: the {max(left, 0):.0f} s left do not pay it for two candidates; "
                    "the screen ends")
                break
        say(f"screen rung {level + 1}/{len(fractions)}: {len(chosen)} model(s), one epoch on {fraction:g} of the train "
            f"split (estimated {sum(estimate[m] for m in chosen):.0f} s, {max(left, 0):.0f} s of budget left)")
        records = trainer.train(chosen, 1)
        estimated += sum(given[m] for m in chosen)
        for model in chosen:
            record = {**records[model], "fraction": fraction}
            result.records[model] = record
            result.seconds[model] = result.seconds.get(model, 0.0) + float(record["seconds"])
            say(f"  {model}: screen val {record['val_score']:.4f} ({record['seconds']:.0f} s)")
        previous = screen_ranking(records, previous)
        result.pace = result.spent_seconds / estimated if estimated > 0 else 1.0
        result.rungs.append({"rung": f"screen {level + 1}", "fraction": fraction,
                             "trained": [m for m in previous if m in records], "seconds": result.spent_seconds})
    result.order = previous
    return result


def races_everything(order: Sequence[str], costs: RunCosts, budget_seconds: float, eta: int = 2) -> bool:
    """Whether the race alone enters every candidate with every rung within ``budget_seconds``."""
    try:
        plan = plan_race(order, costs, budget_seconds, eta)
    except InputError:
        return False
    return len(plan.entrants) == len(order) and plan.rungs == rung_epochs(costs.epochs)


def screen_and_race(order: Sequence[str], costs: RunCosts, budget_seconds: float, race_trainer: Trainer, *,
                    fractions: Sequence[float] = (), screen_trainers: Sequence[Trainer] = (),
                    screen_estimates: Sequence[dict[str, float]] = (), eta: int = 2,
                    on_event: Callable[[str], None] | None = None,
                    deadline: Callable[[], bool] | None = None) -> tuple[ScreenResult, RaceResult]:
    """The fine-tuning stages of :func:`emms.select` within ``budget_seconds``: the screen's rungs
    (:func:`run_screen`; skipped when a finite budget races every candidate through the whole ladder
    without it), then the race (:func:`emms.finetune.race.run_race`) on what is left, its entrants in
    the screen's order, the full runs' estimates (``costs``) scaled by the screen's measured pace.
    When the rest pays no race, the answer is the screen's (an empty race; its ``plan`` None); when
    nothing at all fits, an InputError."""
    say = on_event or (lambda _: None)
    screened = ScreenResult(order=list(order))
    if fractions and np.isfinite(budget_seconds) and races_everything(order, costs, budget_seconds, eta):
        say("screen: skipped, the budget races every candidate through the whole ladder without it")
    elif fractions:
        screened = run_screen(order, screen_trainers, screen_estimates, fractions, budget_seconds, costs.grid(order),
                              eta=eta, on_event=say)
    race_budget = max(budget_seconds - screened.spent_seconds, 0.0)
    if abs(screened.pace - 1.0) > 1e-6:
        say(f"race: the screen ran at {screened.pace:.2f}x its estimated seconds; the full runs' estimates are scaled so")
        costs = costs.scaled(screened.pace)
    try:
        plan = plan_race(screened.order, costs, race_budget, eta)
    except InputError:
        if not screened.records:
            raise
        say(f"race: the {race_budget:.0f} s left after the screen do not pay one epoch of the full protocol for two "
            "candidates; the answer is the screen's")
        return screened, RaceResult(plan=None, records={})
    say(f"race: {len(plan.entrants)} of {len(order)} enter ({', '.join(plan.entrants)}), rungs at epochs {plan.rungs}; "
        f"{race_budget:.0f} s of budget left")
    if deadline is not None and deadline():
        return screened, RaceResult(plan=plan, records={})
    return screened, run_race(plan, race_trainer, costs, race_budget, on_event=say, deadline=deadline)
