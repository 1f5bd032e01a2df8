"""One fine-tuning run: backbone + task head, AdamW + one-cycle, per-epoch validation, checkpoints.

Protocol (:class:`FinetuneProtocol`, from the shared calibration notes): all layers trained; AdamW
(weight decay 0.05); one-cycle schedule (``torch.optim.lr_scheduler.OneCycleLR``: cosine warm-up
from lr/25 to lr over the first 10% of steps, cosine decay to lr/2.5e5 after, no momentum cycling)
over the run's full length; batch 64; random horizontal flip where the head allows it; BatchNorm
momentum 0.1 on every backbone; images resized once to ``image_size`` (fixed-size networks such as
the MTCNN O-Net use their native size). The seed fixes the head initialisation, the data order and
the flips; validation after every epoch does not change the trajectory (eval mode, no grad, no RNG).

A run can stop at an epoch boundary (``until_epoch``) and continue later from its checkpoint: the
continued run is the same run (model, optimiser, schedule and RNG states are restored), so a race
that trains a model 1 epoch, then 2, then 4 pays for 4 epochs and ends with the full protocol's model.

Record (``RECORD_VERSION`` 2, JSON): target, model, lr, seed, task, primary (metric name),
``val_score`` / ``test_score`` (primary metric of the last epoch's model), ``val_metrics`` /
``test_metrics`` (every metric), ``curve`` (per finished epoch: epoch, steps, seconds and cpu_seconds
(cumulative wall and process time of the run so far, setup included), val (primary), train_loss), ``epochs_done``, ``complete``,
seconds / cpu_seconds / steps of the whole run so far, n_params, settings, ``head_revision`` (the head's
:attr:`~emms.finetune.heads.TaskHead.revision`; absent = 1). Classification records
keep ``val_accuracy`` / ``test_accuracy``. Version 1 records (no curve; the committed GPU truth)
are read as complete runs with an empty curve (:func:`upgrade_record`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emms._io import atomic_write_bytes, atomic_write_text
from emms._validation import as_torch_device, check_positive_int, check_seed
from emms.errors import InputError
from emms.finetune.data import FinetuneData

RECORD_VERSION = 2


@dataclass(frozen=True)
class FinetuneProtocol:
    """Training settings shared by every run of a grid or race (stored in each record)."""

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

    def batches_per_epoch(self, n_train: int) -> int:
        """Full batches plus the remainder, unless the remainder is a single row (BatchNorm needs 2)."""
        if n_train < 2:
            raise InputError(f"data: expected at least 2 training rows, got {n_train}")
        return n_train // self.batch_size + (1 if n_train % self.batch_size >= 2 else 0)


@dataclass(frozen=True)
class RunKey:
    """One (target, model, lr, seed) run."""

    target: str
    model: str
    lr: float
    seed: int

    def record_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / "runs" / safe_name(self.target) / f"{safe_name(self.model)}__lr{self.lr:g}__seed{self.seed}.json"

    def checkpoint_path(self, out_dir: str | Path) -> Path:
        return self.record_path(out_dir).with_suffix(".ckpt")

    def label(self) -> str:
        return f"{self.target}/{self.model}/lr={self.lr:g}/seed={self.seed}"


StepCallback = Callable[[int, int], None]


def check_lr(lr: object, name: str = "lr") -> float:
    """A learning rate in (0, 1)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not 0 < float(lr) < 1:
        raise InputError(f"{name}: expected learning rates in (0, 1), got {lr!r}")
    return float(lr)


def finetune_run(data: FinetuneData, model: str, lr: float, seed: int, protocol: FinetuneProtocol = FinetuneProtocol(),
                 *, device: str = "cpu", until_epoch: int | None = None, checkpoint: str | Path | None = None,
                 on_step: StepCallback | None = None) -> dict:
    """Fine-tune ``model`` on ``data`` (from ``checkpoint`` if it holds a partial run) up to
    ``until_epoch`` (default: all ``protocol.epochs``); return the record.

    When the run stops before its last epoch and ``checkpoint`` is given, the state is saved there
    (atomically) so a later call continues it; a finished run removes its checkpoint. The test split
    is evaluated only when the run is complete. ``on_step(steps_done, steps_total)`` follows every
    optimisation step.
    """
    import torch

    from emms.finetune.backbones import load_backbone
    from emms.finetune.heads import head_class, n_rows, take

    lr, seed = check_lr(lr), check_seed(seed)
    until = protocol.epochs if until_epoch is None else check_positive_int(until_epoch, "until_epoch")
    if until > protocol.epochs:
        raise InputError(f"until_epoch: expected at most protocol.epochs = {protocol.epochs}, got {until}")
    head = head_class(data.task)(data)
    started, cpu_started = time.perf_counter(), time.process_time()
    torch_device = as_torch_device(device, kinds=("cpu", "cuda"))

    torch.manual_seed(seed)
    backbone = load_backbone(model, protocol.image_size, protocol.bn_momentum, feature_map=head.needs_feature_map)
    head_module = head.build(backbone.feature_dim)
    network = torch.nn.ModuleDict({"backbone": backbone.module, "head": head_module}).to(torch_device)

    def split(part: tuple[object, object]) -> tuple[torch.Tensor, object]:
        inputs, targets = part
        return backbone.encode(inputs).to(torch_device), head.targets(targets, torch_device)

    x_train, y_train = split(data.train)
    x_val, y_val = split(data.val)
    n_train = n_rows(y_train)
    batches = protocol.batches_per_epoch(n_train)
    total_steps = protocol.epochs * batches
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=protocol.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total_steps,
                                                   pct_start=_warmup_share(protocol.warmup_fraction, total_steps),
                                                   anneal_strategy="cos", cycle_momentum=False)
    order_rng = torch.Generator().manual_seed(seed)
    flip = protocol.hflip and head.allows_hflip and backbone.is_image
    state = {"epochs_done": 0, "curve": [], "seconds": 0.0, "cpu_seconds": 0.0, "val_metrics": {}, "train_loss": None}
    ckpt = None if checkpoint is None else Path(checkpoint)
    if ckpt is not None and ckpt.is_file():
        saved = torch.load(ckpt, map_location=torch_device, weights_only=False)
        if (saved["model"], saved["lr"], saved["seed"], saved["protocol"], saved["data_fingerprint"],
                saved.get("head_revision", 1)) != (model, lr, seed, asdict(protocol), data.fingerprint, head.revision):
            raise InputError(f"checkpoint: {ckpt} belongs to another run; remove it or use another output directory")
        network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        schedule.load_state_dict(saved["schedule"])
        order_rng.set_state(saved["order_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], torch_device)
        state = saved["state"]
    elapsed_before, cpu_before = state["seconds"], state["cpu_seconds"]

    def elapsed() -> tuple[float, float]:
        return elapsed_before + time.perf_counter() - started, cpu_before + time.process_time() - cpu_started

    for epoch in range(state["epochs_done"], until):
        network.train()
        order = torch.randperm(n_train, generator=order_rng)
        flips = torch.rand(n_train, generator=order_rng) < 0.5
        losses = []
        for b in range(batches):
            rows = order[b * protocol.batch_size:(b + 1) * protocol.batch_size].to(torch_device)
            x = x_train[rows]
            if flip:
                x = torch.where(flips[rows.cpu()].to(torch_device).view(-1, 1, 1, 1), x.flip(-1), x)
            loss = head.loss(head_module, backbone.module(x), take(y_train, rows))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(epoch * batches + b + 1, total_steps)
        state["val_metrics"] = _evaluate(backbone.module, head_module, head, x_val, y_val, protocol.eval_batch_size)
        state["train_loss"] = float(np.mean(losses))
        state["epochs_done"] = epoch + 1
        wall, cpu = elapsed()
        state["curve"].append({"epoch": epoch + 1, "steps": (epoch + 1) * batches, "seconds": wall, "cpu_seconds": cpu,
                               "val": state["val_metrics"][head.primary], "train_loss": state["train_loss"]})
    complete = state["epochs_done"] == protocol.epochs
    test_metrics = None
    if complete and data.test is not None:
        x_test, y_test = split(data.test)
        test_metrics = _evaluate(backbone.module, head_module, head, x_test, y_test, protocol.eval_batch_size)
    state["seconds"], state["cpu_seconds"] = elapsed()
    if ckpt is not None:
        if complete:
            ckpt.unlink(missing_ok=True)
        else:
            import io

            buffer = io.BytesIO()
            torch.save({"model": model, "lr": lr, "seed": seed, "protocol": asdict(protocol),
                        "data_fingerprint": data.fingerprint, "head_revision": head.revision,
                        "network": network.state_dict(),
                        "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                        "order_rng": order_rng.get_state(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(torch_device) if torch_device.type == "cuda" else None,
                        "state": state}, buffer)
            atomic_write_bytes(ckpt, buffer.getvalue())
    record = {
        "version": RECORD_VERSION, "target": data.name, "model": model, "lr": float(lr), "seed": int(seed),
        "task": data.task, "primary": head.primary,
        "val_score": state["val_metrics"].get(head.primary), "val_metrics": state["val_metrics"],
        "test_score": None if test_metrics is None else test_metrics[head.primary], "test_metrics": test_metrics,
        "final_train_loss": state["train_loss"], "curve": state["curve"], "epochs_done": state["epochs_done"],
        "complete": complete, "image_size_used": backbone.image_size_used, "n_params": backbone.n_params,
        "n_train": n_train, "n_val": n_rows(y_val), "n_test": None if data.test is None else len(data.test[1]),
        "steps": state["epochs_done"] * batches, "steps_total": total_steps,
        "seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"],
        "device": str(torch_device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "data_fingerprint": data.fingerprint, "protocol": asdict(protocol), "head_revision": head.revision,
    }
    if head.primary == "accuracy":
        record["val_accuracy"], record["test_accuracy"] = record["val_score"], record["test_score"]
    return record


def estimate_cost(data: FinetuneData, model: str, protocol: FinetuneProtocol = FinetuneProtocol(), *,
                  device: str = "cpu", steps: int = 2) -> dict[str, float]:
    """Time ``model`` on ``data`` briefly and estimate one full run: build + encoding of every row,
    ``epochs`` x (training steps + validation), then the test split's evaluation if there is one.

    Runs one warm-up and ``steps`` timed training steps on one batch (the lr is irrelevant to speed)
    and one evaluation batch. Returns ``full_seconds``, ``epoch_seconds`` and ``probe_seconds`` (what
    the estimate itself cost), and its parts (``build_seconds``, ``encode_per_row``, ``train_per_row``,
    ``eval_per_row``) so other schedules can be estimated from the same probe.
    """
    import torch

    from emms.finetune.backbones import load_backbone
    from emms.finetune.heads import head_class, n_rows, take

    started = time.perf_counter()
    torch_device = as_torch_device(device, kinds=("cpu", "cuda"))
    head = head_class(data.task)(data)
    backbone = load_backbone(model, protocol.image_size, protocol.bn_momentum, feature_map=head.needs_feature_map)
    head_module = head.build(backbone.feature_dim)
    network = torch.nn.ModuleDict({"backbone": backbone.module, "head": head_module}).to(torch_device)
    build_seconds = time.perf_counter() - started
    inputs, targets = data.train
    n_train, n_val = len(targets), len(data.val[1])
    n_test = 0 if data.test is None else len(data.test[1])
    rows = np.arange(min(protocol.batch_size, n_train))
    t0 = time.perf_counter()
    x = backbone.encode(inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows]).to(torch_device)
    encode_per_row = (time.perf_counter() - t0) / len(rows)
    y = head.targets(np.asarray(targets)[rows], torch_device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-4, weight_decay=protocol.weight_decay)
    network.train()
    step_seconds = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = head.loss(head_module, backbone.module(x), take(y, torch.arange(n_rows(y), device=torch_device)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)
        step_seconds += (time.perf_counter() - t0) if step else 0.0
    step_seconds /= steps
    network.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        backbone.module(x)
    eval_per_row = (time.perf_counter() - t0) / len(rows)
    epoch_seconds = step_seconds * protocol.batches_per_epoch(n_train) + eval_per_row * n_val
    full = (build_seconds + encode_per_row * (n_train + n_val + n_test) + protocol.epochs * epoch_seconds
            + eval_per_row * n_test)
    return {"full_seconds": full, "epoch_seconds": epoch_seconds, "probe_seconds": time.perf_counter() - started,
            "build_seconds": build_seconds, "encode_per_row": encode_per_row,
            "train_per_row": step_seconds / len(rows), "eval_per_row": eval_per_row}


def upgrade_record(record: dict) -> dict:
    """A record of any version in the current layout (version 1: classification, complete, no curve)."""
    if record.get("version", 1) >= 2:
        return record
    out = dict(record)
    out.update(task="classification", primary="accuracy", val_score=record["val_accuracy"],
               test_score=record["test_accuracy"], val_metrics={"accuracy": record["val_accuracy"]},
               test_metrics={"accuracy": record["test_accuracy"]}, curve=[], complete=True,
               epochs_done=record["protocol"]["epochs"], steps_total=record["steps"])
    return out


def load_record(key: RunKey, out_dir: str | Path, fingerprint: str, protocol: FinetuneProtocol) -> dict | None:
    """The record of ``key`` under ``out_dir`` (None if absent or unreadable); InputError when it was
    made with another protocol, on other splits or by another revision of its task's head."""
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
    record = upgrade_record(record)
    from emms.finetune.heads import head_class

    revision = head_class(record["task"]).revision
    if record.get("head_revision", 1) != revision:
        raise InputError(f"out_dir: {path} was recorded by revision {record.get('head_revision', 1)} of the "
                         f"{record['task']} head, which is now revision {revision}; remove it (the run is redone) "
                         "or use another output directory")
    return record


def write_record(key: RunKey, out_dir: str | Path, record: dict) -> None:
    """Write ``record`` atomically where :func:`load_record` finds it."""
    atomic_write_text(key.record_path(out_dir), json.dumps(record, indent=1))


def _warmup_share(fraction: float, total_steps: int) -> float:
    """``fraction`` as OneCycleLR's pct_start; when the warm-up would be exactly one step, where torch's
    schedule divides by zero (e.g. 10 steps at 10 %), two steps instead. Larger runs are unchanged."""
    share = max(fraction, 1e-9)
    return min(2 / total_steps, 0.5) if abs(share * total_steps - 1) < 1e-9 else share


def _evaluate(backbone, head_module, head, x, y, batch_size: int) -> dict[str, float]:  # noqa: ANN001 - torch objects
    import torch

    backbone.eval()
    head_module.eval()
    with torch.no_grad():
        features = torch.cat([backbone(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])
        metrics = head.evaluate(head_module, features, y)
    backbone.train()
    head_module.train()
    return {name: float(value) for name, value in metrics.items()}


def safe_name(name: str) -> str:
    """A file-name-safe version of a target or model name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
