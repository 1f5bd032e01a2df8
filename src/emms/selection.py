"""select(): frozen scores to recall, then a budgeted race of real fine-tuning -> Selection.

``emms.rank`` answers from frozen features; ``emms.select`` spends a compute budget on the answer
that matters, the fine-tuned score: the pool is ordered by frozen scores (free), the first
candidates are fine-tuned on a train split and judged on a held-out validation split in a
successive-halving race (:mod:`emms.finetune.race`), and every model gets a predicted fine-tuned
validation score with an interval. Records and checkpoints live in ``out_dir``: a killed call
re-run with the same arguments resumes where it stopped and replays what was recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emms._io import atomic_write_text, text_written_to
from emms.errors import InputError
from emms.finetune.screen import SCREEN_FRACTIONS  # light: numpy, pandas

DEFAULT_RECALL = ("emms", "params")
MIN_VAL_ROWS = 20
EventCallback = Callable[[str], None]


@dataclass
class Selection:
    """The result of :func:`select`.

    ``table``: one row per model, best first: ``model, rank, predicted, low, high`` (predicted
    fine-tuned validation score and its interval; empty for a model that was only screened),
    ``epochs_done`` / ``epochs``, ``status`` (``finished``, ``stopped at epoch e``, ``screened``
    (only the short screen run) or ``not raced``), ``extrapolated``, ``observed`` (last validation
    score of the full protocol), ``screen``, ``screen_low``, ``screen_high`` (validation score of
    the screen run and its sampling interval: a score of the screen's own short schedule, not a
    prediction of the fine-tuned one), ``screen_fraction`` (the share of the train split that
    screen run used: its last screen rung), ``seconds`` (fine-tuning cost, screen included),
    ``recall_rank`` and one ``frozen:<metric>`` column per frozen score. ``recommended``: the model
    to use. ``cost``: seconds spent (timing probes + screen + race: ``probe_seconds``,
    ``screen_seconds``, ``race_seconds``; reused records included), the full-grid estimate, the fraction spent, the
    budget, wall seconds of this call. ``curves``: per model, its learning curve (epoch, steps,
    seconds, val). ``frozen``: the :class:`emms.pipeline.Ranking` of the recall stage (its
    ``selection`` is this race's :meth:`to_dict`, so its report shows both).
    """

    table: pd.DataFrame
    recommended: str
    cost: dict
    curves: dict[str, list[dict]]
    history: list[dict]
    frozen: object
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The answer in one sentence."""
        row = self.table.set_index("model").loc[self.recommended]
        if row.status == "screened":
            what = (f"screened: {self.meta['primary']} {row.screen:.4f} after a screen run, interval "
                    f"{row.screen_low:.4f}-{row.screen_high:.4f}; no full fine-tuning within the budget")
        else:
            what = (f"predicted fine-tuned {self.meta['primary']} {row.predicted:.4f}, interval "
                    f"{row.low:.4f}-{row.high:.4f}, {row.status}")
        return (f"recommended: {self.recommended} ({what}); spent {self.cost['spent_seconds']:.0f} s = "
                f"{100 * self.cost['fraction_of_full_grid']:.1f}% of the full grid "
                f"(estimated {self.cost['full_grid_seconds']:.0f} s)")

    def how_sure(self) -> str:
        """How far the recommendation stands from its rivals, in one sentence: its interval against the
        intervals of the models judged the same way (the other fine-tuned runs; for a screened-only
        answer, the other screen runs on the same share of the data)."""
        table = self.table.set_index("model")
        pick = table.loc[self.recommended]
        if pick.status == "screened":
            peers = table[(table.status == "screened") & (table.screen_fraction == pick.screen_fraction)]
            low, high, what = "screen_low", "screen_high", f"a screen run on {pick.screen_fraction:g} of the train split"
        else:
            peers = table[table.predicted.notna()]
            low, high, what = "low", "high", "fine-tuning"
        rivals = peers.drop(index=self.recommended)
        if rivals.empty:
            return f"How sure: {self.recommended} is the only model judged by {what}; nothing to compare it with."
        close = [m for m, r in rivals.iterrows() if r[high] >= pick[low]]
        interval = f"{self.recommended}'s interval ({pick[low]:.3f}-{pick[high]:.3f})"
        if not close:
            return (f"How sure: {interval} lies above that of every other model judged by {what} ({len(rivals)}): "
                    "clear at this validation size (seed-to-seed variation not included).")
        return (f"How sure: {interval} overlaps that of {', '.join(close)} ({len(close)} of the {len(rivals)} other "
                f"models judged by {what}): within the validation noise of {self.meta['n_val']} rows; a larger "
                "validation split or budget would settle it.")

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (what ``--out x.json`` writes; the report reads it)."""
        return {"meta": self.meta, "recommended": self.recommended, "summary": self.summary(),
                "how_sure": self.how_sure(),
                "results": [{k: _json_value(v) for k, v in row.items()} for row in self.table.to_dict("records")],
                "cost": {k: _json_value(v) for k, v in self.cost.items()}, "curves": self.curves,
                "history": self.history, "notes": list(self.notes)}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (and write it atomically to ``path`` if given)."""
        return text_written_to(path, json.dumps(self.to_dict(), indent=2))

    def to_html(self, path: str | Path | None = None) -> str:
        """The HTML report of the recall stage with the race in it (see :mod:`emms.report`)."""
        return self.frozen.to_html(path)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text (and written atomically to ``path`` if given)."""
        return text_written_to(path, self.table.to_csv(index=False))


def select(data, models: Sequence[str], task: str | None = None, *, budget: float | None = 0.25,
           max_seconds: float | None = None, recall: Sequence[str] = DEFAULT_RECALL,
           metrics: Sequence[str] | None = None, encoders: str | Sequence[str] = "offline",
           val_fraction: float = 0.2, max_samples: int | None = None, score_samples: int | None = 2000,
           seed: int = 0, finetune_seed: int = 0, lr: float = 1e-3, protocol=None, eta: int = 2,  # noqa: ANN001
           screen: float | Sequence[float] | None = SCREEN_FRACTIONS,
           out_dir: str | Path | None = None, cache: str | Path | None = None, device: str = "cpu",
           workers: int = 1, threads: int = 1, on_event: EventCallback | None = None,
           progress: Callable[[str, str, int, int], None] | None = None) -> Selection:
    """Recall with frozen scores, then race real fine-tuning of the survivors within a budget.

    Args:
        data: what :func:`emms.rank` accepts (a dataset source or a TaskData) of a task kind with a
            fine-tuning head (:mod:`emms.finetune.heads`: classification, captioning, vqa, referring,
            text_qa), split by the fine-tuning harness's own helper
            (:func:`emms.finetune.heads._prepare.finetune_data`, no test split).
        models: at least 2 fine-tunable candidates of the data's modality (packaged image backbones:
            ``builtin:NAME``, ``NAME``, ``NAME_random``; text candidates of
            :mod:`emms.finetune.text_backbones`: ``minilm_l6``, ``minilm_l6_layer3``, ...);
            precomputed features or ONNX encoders cannot be raced.
        budget: fraction of the **full grid** (every candidate fine-tuned once, fully, one lr, one
            seed; estimated by timing a few steps of each) that the race may spend; None: no limit.
        max_seconds: a wall-clock limit for the race (checked before each training round).
        recall: frozen metrics whose orders are interleaved to order the pool (a hybrid shortlist).
        metrics: frozen metrics to compute and show (default: ``recall``).
        val_fraction: share of the data held out to judge the race (classification: stratified;
            other kinds: by image, so the captions / questions of one image stay together); never
            trained on.
        score_samples: rows of the train split the frozen metrics score (None: all), subsampled as
            ``max_samples`` is (:func:`emms.data.subsample`: stratified for classification, counted in
            images where several rows share one); scored against the kind's own targets (F-labels of
            captions, answers, expressions...).
        seed: seed of the split and of the frozen scores' subsample; ``finetune_seed``: of fine-tuning.
        lr, protocol, eta: the fine-tuning protocol (:class:`emms.finetune.FinetuneProtocol`) and the
            halving factor.
        screen: the screen's rungs, as shares of the train split (:mod:`emms.finetune.screen`):
            before the race, every candidate that fits the budget (in recall order) is fine-tuned
            briefly with a schedule of its own (one epoch, its own one-cycle, batch
            :data:`~emms.finetune.screen.SCREEN_BATCH_SIZE`) on the first share (stratified), judged
            on the same validation split; each later rung screens the best half of the previous
            rung's order on its larger share, as far as the budget allows. Each rung orders its
            models by its rank + the previous order's rank; the race takes the candidates in the
            final order. When the budget affords only the screen, the answer is the screen's (status
            ``screened``); when it races every candidate through the whole ladder, the screen is
            skipped. One fraction: one rung; None or 0: no screen (the race enters in recall order).
        out_dir: where run records and checkpoints go (default: ``<cache>/select/<split fingerprint>``);
            re-running the same call resumes.
        workers, threads, device: parallel fine-tuning processes, torch threads each, cpu or cuda.
        on_event: receives one line per step of the race; ``progress(stage, item, done, total)``
            follows the frozen scoring (as in :func:`emms.rank`) and the fine-tuning steps (stage
            ``fine-tune``, item the model).
    """
    from emms.data import TaskData, load_dataset, subsample
    from emms.finetune import FinetuneProtocol
    from emms.finetune.heads import head_class
    from emms.finetune.heads._prepare import finetune_data, split_rows
    from emms.finetune.race import RecordTrainer, RunCosts, predict, recall_order
    from emms.finetune.screen import check_screen_fractions, screen_and_race, screen_data, screen_protocol
    from emms.pipeline import rank
    from emms.compute.store import Store

    started = time.perf_counter()
    say = on_event or (lambda _: None)
    protocol = protocol or FinetuneProtocol()
    models = list(dict.fromkeys(models))
    if len(models) < 2:
        raise InputError(f"models: select needs at least 2 candidates to choose between, got {len(models)}")
    modality = {m: "text" if _text_candidate(m) else "image" for m in models}  # InputError: cannot be fine-tuned
    budget_fraction = _check_budget(budget, max_seconds)
    fractions = check_screen_fractions(screen)
    recall, metrics = list(recall), list(metrics) if metrics is not None else list(recall)
    if not recall:
        raise InputError("recall: expected at least one frozen metric to order the pool")
    metrics += [m for m in recall if m not in metrics]
    task_data = data if isinstance(data, TaskData) else load_dataset(data, task=task, max_samples=max_samples, seed=seed)
    if task is not None and task != task_data.task:
        raise InputError(f"task: the data holds a {task_data.task!r} task, not {task!r}")
    head_class(task_data.task)  # InputError for a kind without a head
    for model, kind in modality.items():
        if kind != task_data.modality:
            raise InputError(f"models: {model!r} is {'an' if kind == 'image' else 'a'} {kind} model; the data holds "
                             f"{task_data.modality} inputs")
    store = Store(cache)
    # the split the fine-tuning harness makes (emms finetune --task KIND), and its train rows for the recall
    split = finetune_data(task_data, val_fraction=val_fraction, test_fraction=0, seed=seed, store=store)
    train_rows = np.sort(split_rows(task_data, val_fraction=val_fraction, test_fraction=0, seed=seed)[0])
    n_val = len(split.val[1])
    if n_val < MIN_VAL_ROWS:
        raise InputError(f"val_fraction: the validation split has {n_val} rows; at least {MIN_VAL_ROWS} are needed "
                         "to judge the race (raise val_fraction or use more data)")
    protocol.batches_per_epoch(len(split.train[1]))
    out_dir = Path(out_dir) if out_dir is not None else store.root / "select" / split.fingerprint

    say(f"recall: frozen {', '.join(metrics)} of {len(models)} models on the train split")
    scored = subsample(task_data.take(train_rows, name=f"{task_data.name}-train"), score_samples, seed)
    candidates = {model: _frozen_candidate(model) for model in models}
    model_of = {(c if isinstance(c, str) else c.name): model for model, c in candidates.items()}
    frozen = rank(scored, list(candidates.values()), metrics=metrics,
                  encoders=encoders, cache=cache, device=device, image_size=protocol.image_size,
                  progress=progress, resamples=0)
    scores = {metric: {model_of[r.model]: float(r.score) for r in frozen.table.itertuples() if r.metric == metric}
              for metric in metrics}
    order = recall_order(scores, models, recall)

    probes = _probe_costs(split, models, protocol, device, out_dir, say)
    full = {m: probes[m]["full_seconds"] for m in models}
    probe_seconds = sum(p["probe_seconds"] for p in probes.values())
    full_grid = float(sum(full.values()))
    budget_seconds = np.inf if budget_fraction is None else budget_fraction * full_grid
    left = max(budget_seconds - probe_seconds, 0.0)
    on_progress = None if progress is None else (lambda key, done, total: progress("fine-tune", key.model, done, total))
    race_started = time.perf_counter()
    deadline = None if max_seconds is None else (lambda: time.perf_counter() - race_started >= max_seconds)
    head = head_class(task_data.task)(split)

    s_protocol = screen_protocol(protocol)
    s_data = [screen_data(split, fraction, seed) for fraction in fractions]
    screen_trainers = [RecordTrainer(d, s_protocol, lr=lr, seed=finetune_seed, out_dir=out_dir / "screen", device=device,
                                     workers=workers, threads=threads, on_progress=on_progress) for d in s_data]
    trainer = RecordTrainer(split, protocol, lr=lr, seed=finetune_seed, out_dir=out_dir, device=device,
                            workers=workers, threads=threads, on_progress=on_progress)
    say(f"full grid estimated {full_grid:.0f} s, budget {budget_seconds:.0f} s ({left:.0f} s after the timing probes)")
    costs = RunCosts(full, protocol.epochs, {m: p["build_seconds"] + p["encode_per_row"] * (len(split.train[1]) + n_val)
                                              for m, p in probes.items()})
    screened, result = screen_and_race(
        order, costs, left, trainer, fractions=fractions, screen_trainers=screen_trainers,
        screen_estimates=[{m: _screen_seconds(probes[m], len(d.train[1]), n_val) for m in models} for d in s_data],
        eta=eta, on_event=say, deadline=deadline)
    screen_records, race_order, screen_spent, plan = screened.records, screened.order, screened.spent_seconds, result.plan
    ran = [rung["fraction"] for rung in screened.rungs]
    predicted = predict(result.records, protocol.epochs, standard_error=head.standard_error)
    table = _table(predicted, order, scores, result.records, protocol.epochs, screened, head.standard_error)
    finished = table[table["status"] == "finished"]
    recommended = str((finished if len(finished) else table).iloc[0]["model"])
    spent = result.spent_seconds + screen_spent + probe_seconds
    trained = trainer.trained_seconds + sum(t.trained_seconds for t in screen_trainers)
    cost = {"spent_seconds": spent, "trained_seconds": trained,
            "replayed_seconds": result.spent_seconds + screen_spent - trained, "probe_seconds": probe_seconds,
            "screen_seconds": screen_spent, "race_seconds": result.spent_seconds,
            "full_grid_seconds": full_grid, "fraction_of_full_grid": spent / full_grid,
            "budget_fraction": budget_fraction, "budget_seconds": budget_seconds, "max_seconds": max_seconds,
            "wall_seconds": time.perf_counter() - started}
    meta = {"data": task_data.name, "task": task_data.task, "primary": head.primary, "models": models,
            "recall": recall, "metrics": metrics, "entrants": [] if plan is None else plan.entrants,
            "rungs": [] if plan is None else plan.rungs, "eta": eta,
            "screen": None if not screen_records else
            {"fractions": ran, "batch_size": s_protocol.batch_size, "epochs": 1,
             "n_train": [len(d.train[1]) for d in s_data[:len(ran)]], "screened": list(screen_records),
             "order": race_order},
            "n_train": len(split.train[1]), "n_val": n_val, "n_scored": int(len(scored)), "seed": seed,
            "finetune_seed": finetune_seed, "lr": lr, "protocol": asdict(protocol), "out_dir": str(out_dir),
            "device": device}
    notes = ["intervals: validation sampling (95 %) plus, for stopped runs, the spread of the finished runs' "
             "remaining gains; seed-to-seed variation is not included"]
    if screen_records:
        notes.append(f"screen: one epoch of its own schedule on {' then '.join(f'{f:g}' for f in ran)} of the train "
                     "split per candidate (each rung after the first: the best half of the previous one); its rank, "
                     "fused with the recall rank, orders the race and ranks the models the race did not train; its "
                     "score is not a prediction of the fine-tuned score")
    if not len(result.records):
        notes.append("the budget afforded only the screen: the recommendation is the screen's best model, with no "
                     "full fine-tuning behind it")
    elif not len(finished):
        notes.append("no model finished the full protocol within the budget: the recommendation is an extrapolation")
    elif table.iloc[0]["model"] != recommended:
        notes.append(f"{table.iloc[0]['model']} is predicted higher than {recommended} but was not fine-tuned to the end; "
                     f"{recommended} is recommended as the best model that was (a larger budget would settle it)")
    history = [{**rung, "epoch": 1} for rung in screened.rungs] + result.history
    selection = Selection(table=table, recommended=recommended, cost=cost,
                          curves={m: r["curve"] for m, r in result.records.items()}, history=history,
                          frozen=frozen, meta=meta, notes=notes)
    frozen.selection = selection.to_dict()  # the report shows the race beside the frozen scores
    return selection


def _check_budget(budget: float | None, max_seconds: float | None) -> float | None:
    if budget is None and max_seconds is None:
        raise InputError("budget: give a fraction of the full grid, max_seconds, or both")
    for name, value in (("budget", budget), ("max_seconds", max_seconds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                                  or not np.isfinite(value)):
            raise InputError(f"{name}: expected a positive number, got {value!r}")
    return None if budget is None else float(budget)


def _text_candidate(model: str) -> bool:
    """Whether ``model`` is a text candidate (InputError when it cannot be fine-tuned at all)."""
    from emms.finetune.backbones import parse_model
    from emms.finetune.text_backbones import TEXT_BACKBONES

    return parse_model(model)[0] in TEXT_BACKBONES


def _frozen_candidate(model: str):  # noqa: ANN202 - a spec string or a feature extractor
    """What :func:`emms.rank` scores for a fine-tunable model: the same network at the same size
    (a packaged backbone's ``builtin:`` spec; a text candidate's own network, named ``model``)."""
    from emms.finetune.backbones import frozen_extractor, parse_model
    from emms.finetune.text_backbones import TEXT_BACKBONES

    name, pretrained, options = parse_model(model)
    if name in TEXT_BACKBONES:
        return frozen_extractor(model)
    query = "&".join([*(f"{k}={v}" for k, v in options.items()), *([] if pretrained else ["pretrained=false"])])
    return f"builtin:{name}" + (f"?{query}" if query else "")


def _probe_costs(split, models: list[str], protocol, device: str, out_dir: Path, say: EventCallback) -> dict:  # noqa: ANN001
    """Each model's timing probe, cached in ``out_dir/costs-<protocol and device>.json`` so a resumed
    race plans the same."""
    import hashlib

    from emms.finetune.run import estimate_cost

    key = hashlib.sha256(json.dumps([asdict(protocol), str(device)], sort_keys=True).encode()).hexdigest()[:12]
    path = out_dir / f"costs-{key}.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    for model in models:
        if "train_per_row" not in cached.get(model, {}):  # missing, or an older cache without the parts
            cached[model] = estimate_cost(split, model, protocol, device=device)
            say(f"timing {model}: one full run estimated at {cached[model]['full_seconds']:.0f} s "
                f"(probe {cached[model]['probe_seconds']:.1f} s)")
            atomic_write_text(path, json.dumps(cached, indent=1))
    return {m: cached[m] for m in models}


def _screen_seconds(probe: dict, n_train: int, n_val: int) -> float:
    """A screen run's cost from a model's timing probe: build, encoding, one epoch over ``n_train``
    rows and one validation."""
    return (probe["build_seconds"] + probe["encode_per_row"] * (n_train + n_val) + probe["train_per_row"] * n_train
            + probe["eval_per_row"] * n_val)


def _table(predicted: pd.DataFrame, order: list[str], scores: dict, records: dict, epochs: int,
           screened, standard_error=None) -> pd.DataFrame:  # noqa: ANN001 - a ScreenResult
    """Raced models by prediction, then screened-only ones in the screen's (fused) order, then the rest in
    recall order (``order``; ``screened.order`` is the screen's)."""
    from emms.finetune.heads import proportion_standard_error
    from emms.finetune.race import Z_95

    se = standard_error or proportion_standard_error
    rows = []
    by_model = {r.model: r for r in predicted.itertuples(index=False)}
    for model in [*predicted["model"], *[m for m in screened.order if m not in by_model]]:
        p = by_model.get(model)
        done = 0 if p is None else int(p.epochs_done)
        status = ("screened" if model in screened.records else "not raced") if p is None else \
            "finished" if p.complete else f"stopped at epoch {done}"
        s = screened.records.get(model)
        s_val = np.nan if s is None else float(s["val_score"])
        s_half = np.nan if s is None else Z_95 * se(s_val, int(s["n_val"]))
        row = {"model": model, "predicted": np.nan if p is None else p.predicted,
               "low": np.nan if p is None else p.low, "high": np.nan if p is None else p.high,
               "epochs_done": done, "epochs": epochs, "status": status,
               "extrapolated": False if p is None else bool(p.extrapolated),
               "observed": np.nan if p is None else p.observed,
               "screen": s_val, "screen_low": s_val - s_half, "screen_high": s_val + s_half,
               "screen_fraction": np.nan if s is None else s["fraction"],
               "seconds": (records[model]["seconds"] if model in records else 0.0) + screened.seconds.get(model, 0.0),
               "recall_rank": order.index(model) + 1}
        row.update({f"frozen:{metric}": values.get(model, np.nan) for metric, values in scores.items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    return table


def _json_value(value: object) -> object:
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
