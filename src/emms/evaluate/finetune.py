"""Ground truth by real fine-tuning: every candidate backbone on every target, over an lr x seed grid.

Protocol (:class:`FinetuneProtocol`, from the shared calibration notes): the packaged backbone
(``emms.models.backbones.build_backbone``) plus a linear head on its pooled features, all layers
trained; AdamW (weight decay 0.05); one-cycle schedule (``torch.optim.lr_scheduler.OneCycleLR``:
cosine warm-up from lr/25 to lr over the first 10% of steps, cosine decay to lr/2.5e5 after, no
momentum cycling); batch 64; random horizontal flip; BatchNorm momentum
0.1 on every backbone; images resized once to ``image_size`` (a fixed-size network such as the
MTCNN O-Net uses its native size). Seeds fix the head initialisation, the data order and the flips.

The learning rate of each (target, model) is chosen by mean validation accuracy over seeds; the
ground truth is the mean test accuracy over seeds at that lr (:func:`aggregate_truth`).

Resumable: each finished (target, model, lr, seed) is written atomically to its own JSON record
``<out_dir>/runs/<target>/<model>__lr<lr>__seed<seed>.json`` and never redone; a killed grid loses at
most the runs in progress. A model named ``NAME_random`` is a randomly initialised copy of backbone
NAME (initialisation seed 0, the same network for every fine-tuning seed): a clearly weak candidate.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emms._io import atomic_write_text
from emms._validation import as_class_labels, as_torch_device, check_positive_int, check_seed
from emms.errors import InputError, ResourceError

RANDOM_SUFFIX = "_random"
RECORD_VERSION = 1


@dataclass(frozen=True)
class FinetuneProtocol:
    """Training settings shared by every run of a grid (stored in each record)."""

    epochs: int = 4
    image_size: int = 64
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    bn_momentum: float = 0.1
    hflip: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("epochs", "image_size", "batch_size", "eval_batch_size"):
            check_positive_int(getattr(self, name), name)
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(f"warmup_fraction: expected a number in [0, 1), got {self.warmup_fraction!r}")
        if not 0 < self.bn_momentum <= 1:
            raise InputError(f"bn_momentum: expected a number in (0, 1], got {self.bn_momentum!r}")
        if self.weight_decay < 0:
            raise InputError(f"weight_decay: expected a non-negative number, got {self.weight_decay!r}")


@dataclass
class FinetuneData:
    """One target: images (uint8 arrays or lists of paths) and integer labels 0..C-1 per split."""

    name: str
    class_names: list[str]
    train: tuple[object, np.ndarray]
    val: tuple[object, np.ndarray]
    test: tuple[object, np.ndarray]
    fingerprint: str
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_benchmark(cls, target) -> FinetuneData:  # noqa: ANN001 - emms.evaluate.targets.BenchmarkTarget
        """Train / val / test of a :class:`emms.evaluate.targets.BenchmarkTarget`."""
        return cls(name=target.name, class_names=list(target.definition.class_names),
                   train=target.arrays("train"), val=target.arrays("val"), test=target.arrays("test"),
                   fingerprint=target.fingerprint(("train", "val", "test")), description=target.definition.description)

    @classmethod
    def from_task_data(cls, data, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                       seed: int = 0) -> FinetuneData:  # noqa: ANN001 - emms.data.TaskData
        """A classification :class:`emms.data.TaskData` split stratified into train / val / test."""
        from sklearn.model_selection import train_test_split

        if data.task != "classification" or data.modality != "image":
            raise InputError(f"data: fine-tuning needs an image classification dataset, got {data.modality} {data.task}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 1:
                raise InputError(f"{name}: expected a fraction strictly between 0 and 1, got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise InputError("val_fraction + test_fraction: expected less than 1, leaving images to train on")
        seed = check_seed(seed)
        codes, classes = as_class_labels(data.labels["label"].to_numpy(), "labels")
        rows = np.arange(len(codes))
        try:
            rest, test = train_test_split(rows, test_size=test_fraction, stratify=codes, random_state=seed)
            train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                          stratify=codes[rest], random_state=seed)
        except ValueError as exc:
            raise InputError(f"data: too few images per class for a stratified train/val/test split ({exc})") from None

        def part(idx: np.ndarray) -> tuple[object, np.ndarray]:
            inputs = data.inputs[idx] if isinstance(data.inputs, np.ndarray) else [data.inputs[i] for i in idx]
            return inputs, codes[idx]

        names = list(data.class_names) if data.class_names and len(data.class_names) == len(classes) else [str(c) for c in classes]
        return cls(name=data.name, class_names=names, train=part(train), val=part(val), test=part(test),
                   fingerprint=f"{data.fingerprint[:16]}-{seed}-{val_fraction}-{test_fraction}",
                   description=getattr(data, "description", ""))


@dataclass(frozen=True)
class RunKey:
    """One cell of the grid."""

    target: str
    model: str
    lr: float
    seed: int

    def record_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / "runs" / _safe(self.target) / f"{_safe(self.model)}__lr{self.lr:g}__seed{self.seed}.json"


@dataclass
class GridResult:
    """What :func:`run_grid` did: every record of the grid, the truth table, and counts."""

    results: pd.DataFrame
    truth: pd.DataFrame
    n_trained: int
    n_reused: int
    failures: list[str] = field(default_factory=list)


ProgressCallback = Callable[[RunKey, int, int], None]


def parse_model(name: str) -> tuple[str, bool]:
    """``"NAME"`` -> (NAME, pretrained=True); ``"NAME_random"`` -> (NAME, False). Unknown -> InputError."""
    from emms.models.backbones import BACKBONES, get_backbone_spec

    if name not in BACKBONES and name.endswith(RANDOM_SUFFIX):
        base = name[: -len(RANDOM_SUFFIX)]
        get_backbone_spec(base)
        return base, False
    get_backbone_spec(name)
    return name, True


def finetune_run(data: FinetuneData, model: str, lr: float, seed: int, protocol: FinetuneProtocol = FinetuneProtocol(),
                 *, device: str = "cpu", on_step: Callable[[int, int], None] | None = None) -> dict:
    """Fine-tune ``model`` on ``data`` once; return the record (val/test accuracy, timings, settings).

    ``on_step(steps_done, steps_total)`` is called after every optimisation step.
    """
    import torch
    from torch import nn

    from emms.models.architectures import set_bn_momentum
    from emms.models.backbones import build_backbone, get_backbone_spec, preprocess_images

    base, pretrained = parse_model(model)
    lr, seed = _check_lr(lr, "lr"), check_seed(seed)
    spec = get_backbone_spec(base)
    size = spec.native_size if spec.fixed_size else protocol.image_size
    started, cpu_started = time.perf_counter(), time.process_time()
    torch_device = as_torch_device(device, kinds=("cpu", "cuda"))

    def tensors(part: tuple[object, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = part
        return (preprocess_images(images, spec, size).to(torch_device),
                torch.as_tensor(np.asarray(labels, dtype=np.int64), device=torch_device))

    x_train, y_train = tensors(data.train)
    x_val, y_val = tensors(data.val)
    x_test, y_test = tensors(data.test)

    torch.manual_seed(seed)
    backbone = build_backbone(base, pretrained=pretrained, seed=0)
    set_bn_momentum(backbone, protocol.bn_momentum)
    network = nn.Sequential(backbone, nn.Linear(spec.feature_dim, data.num_classes)).to(torch_device)
    batches_per_epoch = _batches_per_epoch(len(y_train), protocol.batch_size)
    total_steps = protocol.epochs * batches_per_epoch
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=protocol.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total_steps,
                                                   pct_start=max(protocol.warmup_fraction, 1e-9),
                                                   anneal_strategy="cos", cycle_momentum=False)
    order_rng = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    step, last_epoch_losses = 0, []
    network.train()
    for _ in range(protocol.epochs):
        last_epoch_losses = []
        order = torch.randperm(len(y_train), generator=order_rng)
        flips = torch.rand(len(y_train), generator=order_rng) < 0.5
        for b in range(batches_per_epoch):
            rows = order[b * protocol.batch_size:(b + 1) * protocol.batch_size]
            x, y = x_train[rows.to(torch_device)], y_train[rows.to(torch_device)]
            if protocol.hflip:
                x = torch.where(flips[rows].to(torch_device).view(-1, 1, 1, 1), x.flip(-1), x)
            loss = loss_fn(network(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            last_epoch_losses.append(float(loss.detach()))
            step += 1
            if on_step is not None:
                on_step(step, total_steps)
    network.eval()
    val_accuracy = _accuracy(network, x_val, y_val, protocol.eval_batch_size)
    test_accuracy = _accuracy(network, x_test, y_test, protocol.eval_batch_size)
    return {
        "version": RECORD_VERSION, "target": data.name, "model": model, "lr": float(lr), "seed": int(seed),
        "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
        "final_train_loss": float(np.mean(last_epoch_losses)), "image_size_used": int(size),
        "n_train": int(len(y_train)), "n_val": int(len(y_val)), "n_test": int(len(y_test)), "steps": total_steps,
        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
        "device": str(torch_device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "data_fingerprint": data.fingerprint, "protocol": asdict(protocol),
    }


def run_grid(data: Sequence[FinetuneData], models: Sequence[str], *, lrs: Sequence[float], seeds: Sequence[int],
             out_dir: str | Path, protocol: FinetuneProtocol = FinetuneProtocol(), device: str = "cpu",
             workers: int = 1, threads: int = 1, on_progress: ProgressCallback | None = None,
             on_record: Callable[[dict, bool], None] | None = None) -> GridResult:
    """Fine-tune every (target, model, lr, seed) not yet recorded under ``out_dir``; aggregate all.

    ``workers`` > 1 runs that many processes (spawned, each ``torch.set_num_threads(threads)``);
    ``workers == 1`` runs in this process (and sets its torch threads to ``threads``).
    ``on_progress(key, steps_done, steps_total)`` reports training steps; ``on_record(record, reused)``
    is called once per grid cell. A failed run is
    reported in ``failures`` (the others still run) and has no record.
    """
    out_dir = Path(out_dir)
    keys, by_name = _grid(data, models, lrs, seeds)
    workers, threads = check_positive_int(workers, "workers"), check_positive_int(threads, "threads")
    as_torch_device(device, kinds=("cpu", "cuda"))
    records, todo = _partition(keys, by_name, out_dir, protocol)
    if on_record is not None:
        for record in records:
            on_record(record, True)
    n_reused = len(records)
    failures: list[str] = []

    def finished(record: dict) -> None:
        records.append(record)
        if on_record is not None:
            on_record(record, False)

    if todo and workers == 1:
        _set_threads(threads)
        for key in todo:
            try:
                finished(_run_and_record(by_name[key.target], key, protocol, device, str(out_dir), on_progress))
            except (ResourceError, InputError, RuntimeError) as exc:
                failures.append(f"{key.target}/{key.model}/lr={key.lr:g}/seed={key.seed}: {exc}")
    elif todo:
        _run_pool(todo, by_name, protocol, device, out_dir, workers, threads, on_progress, finished, failures)
    results = _results_table(records, keys)
    return GridResult(results=results, truth=aggregate_truth(results), n_trained=len(records) - n_reused,
                      n_reused=n_reused, failures=failures)


def plan_grid(data: Sequence[FinetuneData], models: Sequence[str], *, lrs: Sequence[float], seeds: Sequence[int],
              out_dir: str | Path, protocol: FinetuneProtocol = FinetuneProtocol()) -> tuple[list[RunKey], int]:
    """The runs :func:`run_grid` would train (not yet recorded under ``out_dir``) and how many are done."""
    keys, by_name = _grid(data, models, lrs, seeds)
    records, todo = _partition(keys, by_name, Path(out_dir), protocol)
    return todo, len(records)


def aggregate_truth(results: pd.DataFrame) -> pd.DataFrame:
    """Per (target, model): the lr with the best mean validation accuracy over seeds (ties: the
    smaller lr) and the mean test accuracy over seeds at that lr.

    ``results``: columns target, model, lr, seed, val_accuracy, test_accuracy. Returns columns
    target, model, value (mean test accuracy), value_std (over seeds), lr, val_accuracy, n_seeds.
    """
    columns = ["target", "model", "value", "value_std", "lr", "val_accuracy", "n_seeds"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    per_lr = (results.groupby(["target", "model", "lr"], sort=True)
              .agg(val_accuracy=("val_accuracy", "mean"), value=("test_accuracy", "mean"),
                   value_std=("test_accuracy", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")),
                   n_seeds=("seed", "nunique"))
              .reset_index())
    per_lr = per_lr.sort_values(["target", "model", "val_accuracy", "lr"], ascending=[True, True, False, True])
    best = per_lr.groupby(["target", "model"], sort=True).head(1)
    return best[columns].reset_index(drop=True)


def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` as CSV to ``path`` atomically (temporary file, fsync, rename)."""
    atomic_write_text(path, table.to_csv(index=False))


def estimate_steps(data: Sequence[FinetuneData], protocol: FinetuneProtocol) -> dict[str, int]:
    """Optimisation steps of one run per target (for progress totals)."""
    return {item.name: protocol.epochs * _batches_per_epoch(len(item.train[1]), protocol.batch_size) for item in data}


# -- internals -------------------------------------------------------------------------------------

def _grid(data: Sequence[FinetuneData], models: Sequence[str], lrs: Sequence[float],
          seeds: Sequence[int]) -> tuple[list[RunKey], dict[str, FinetuneData]]:
    if not data:
        raise InputError("data: expected at least one target, got none")
    by_name = {}
    for item in data:
        if item.name in by_name:
            raise InputError(f"data: target name {item.name!r} appears twice")
        by_name[item.name] = item
    if not models:
        raise InputError("models: expected at least one backbone name, got none")
    for model in models:
        parse_model(model)
    lr_values = [_check_lr(lr, "lrs") for lr in lrs]
    if not lr_values:
        raise InputError("lrs: expected at least one learning rate, got none")
    seed_values = [check_seed(s, "seeds") for s in seeds]
    if not seed_values:
        raise InputError("seeds: expected at least one seed, got none")
    keys = [RunKey(item.name, model, lr, seed) for item in data for model in dict.fromkeys(models)
            for lr in dict.fromkeys(lr_values) for seed in dict.fromkeys(seed_values)]
    return keys, by_name


def _check_lr(lr: object, name: str) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not 0 < float(lr) < 1:
        raise InputError(f"{name}: expected learning rates in (0, 1), got {lr!r}")
    return float(lr)


def _partition(keys: list[RunKey], by_name: dict[str, FinetuneData], out_dir: Path,
               protocol: FinetuneProtocol) -> tuple[list[dict], list[RunKey]]:
    """Split the grid into finished records and the keys still to run."""
    records, todo = [], []
    for key in keys:
        record = _load_record(key, out_dir, by_name[key.target].fingerprint, protocol)
        if record is None:
            todo.append(key)
        else:
            records.append(record)
    return records, todo


def _load_record(key: RunKey, out_dir: Path, fingerprint: str, protocol: FinetuneProtocol) -> dict | None:
    path = key.record_path(out_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable (cannot happen with atomic writes, but never trust it): redo the run
    if record.get("protocol") != asdict(protocol) or record.get("data_fingerprint") != fingerprint:
        raise InputError(f"out_dir: {path} was recorded with a different protocol or data split "
                         f"(protocol {record.get('protocol')}, data {record.get('data_fingerprint')}); "
                         "use another output directory for a different grid")
    return record


def _run_and_record(data: FinetuneData, key: RunKey, protocol: FinetuneProtocol, device: str, out_dir: str,
                    on_progress: ProgressCallback | None) -> dict:
    step_callback = None if on_progress is None else (lambda done, total: on_progress(key, done, total))
    record = finetune_run(data, key.model, key.lr, key.seed, protocol, device=device, on_step=step_callback)
    atomic_write_text(key.record_path(Path(out_dir)), json.dumps(record, indent=1))
    return record


def _worker_init(threads: int) -> None:
    import emms.models.backbones  # noqa: F401  (import torch and the models once, outside the timed runs)

    _set_threads(threads)


def _worker_run(data: FinetuneData, key: RunKey, protocol: FinetuneProtocol, device: str, out_dir: str,
                messages) -> dict:  # noqa: ANN001 - a multiprocessing queue proxy
    def report(run_key: RunKey, done: int, total: int) -> None:
        if done == total or done % 5 == 0:
            messages.put((run_key, done, total))

    return _run_and_record(data, key, protocol, device, out_dir, report)


def _run_pool(todo: list[RunKey], by_name: dict[str, FinetuneData], protocol: FinetuneProtocol, device: str,
              out_dir: Path, workers: int, threads: int, on_progress: ProgressCallback | None,
              finished: Callable[[dict], None], failures: list[str]) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                            initializer=_worker_init, initargs=(threads,)) as pool:
        messages = manager.Queue()
        pending = {pool.submit(_worker_run, by_name[key.target], key, protocol, device, str(out_dir), messages): key
                   for key in todo}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(messages, on_progress)
            for future in done:
                key = pending.pop(future)
                try:
                    finished(future.result())
                except (ResourceError, InputError, RuntimeError) as exc:
                    failures.append(f"{key.target}/{key.model}/lr={key.lr:g}/seed={key.seed}: {exc}")
        _drain(messages, on_progress)


def _drain(messages, on_progress: ProgressCallback | None) -> None:  # noqa: ANN001
    while True:
        try:
            key, done, total = messages.get_nowait()
        except queue.Empty:
            return
        if on_progress is not None:
            on_progress(key, done, total)


def _results_table(records: list[dict], keys: list[RunKey]) -> pd.DataFrame:
    order = {(k.target, k.model, k.lr, k.seed): i for i, k in enumerate(keys)}
    columns = ["target", "model", "lr", "seed", "val_accuracy", "test_accuracy", "final_train_loss",
               "n_train", "n_val", "n_test", "image_size_used", "seconds", "cpu_seconds", "device"]
    rows = sorted(records, key=lambda r: order[(r["target"], r["model"], r["lr"], r["seed"])])
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches plus the remainder, unless the remainder is a single image (BatchNorm needs 2)."""
    if n < 2:
        raise InputError(f"data: expected at least 2 training images, got {n}")
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def _accuracy(network, x, y, batch_size: int) -> float:  # noqa: ANN001 - torch objects
    import torch

    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = network(x[start:start + batch_size])
            correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return correct / len(y)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _safe(name: str) -> str:
    """A file-name-safe version of a target or model name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
