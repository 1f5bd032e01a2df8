"""Task heads: what turns a backbone's features into a task's predictions, loss and metrics.

The fine-tuning core (:mod:`emms.finetune.run`) is task-agnostic: it owns the backbone, the
optimiser (AdamW + one-cycle), seeds, per-epoch validation, cost accounting and records. Everything
task-specific lives in a :class:`TaskHead` subclass registered for a task kind:

1. subclass :class:`TaskHead`, set ``task`` (a kind of :data:`emms.data.taskdata.TASKS`), ``primary``
   (the key of :meth:`TaskHead.evaluate`'s dict that ranks runs; higher is better) and, if flipping
   an image left-right changes the answer (positions, boxes, text), ``allows_hflip = False``; if the head
   needs to see where things are, ``needs_feature_map = True``: it then receives the image backbone's
   unpooled map (B, C, H, W) and ``build`` gets C (:func:`emms.finetune.backbones.load_backbone`); when a
   head's model changes so that its old run records no longer measure it, raise ``revision`` (records
   of another revision are refused, :func:`emms.finetune.run.load_record`);
2. put it in ``emms/finetune/heads/<kind>.py`` and add ``"<kind>": "<module>"`` to :data:`HEAD_MODULES`;
3. give the split targets in :class:`emms.finetune.data.FinetuneData` (``train``/``val``/``test`` are
   ``(inputs, targets)``; ``targets`` is whatever your :meth:`TaskHead.targets` reads: labels, question
   embeddings, boxes, token ids...).

A run calls, in this order: ``head = HeadClass(data)``; ``module = head.build(feature_dim)`` (after the
run's seed is set, so its initialisation is seeded); ``rows = head.targets(part_targets, device)`` once
per split; then per batch ``head.loss(module, features, take(rows, idx))`` in train mode; then per
epoch ``head.evaluate(module, features_of_all_val_rows, rows)`` in eval mode under ``torch.no_grad``.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from emms.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from emms.finetune.data import FinetuneData

#: task kind -> module under emms.finetune.heads that registers its head (imported on first use)
HEAD_MODULES: dict[str, str] = {"classification": "classification", "captioning": "captioning", "vqa": "vqa",
                               "referring": "referring", "text_qa": "text_qa"}
_HEADS: dict[str, type[TaskHead]] = {}

Rows = "torch.Tensor | dict[str, torch.Tensor]"
"""Per-row targets as one tensor or a dict of tensors, first dimension = rows (see :func:`take`)."""


class TaskHead(ABC):
    """One task kind's head on top of a backbone's pooled features (B, feature_dim), or of its feature
    map (B, feature_dim, H, W) when ``needs_feature_map``.

    ``data`` is the :class:`~emms.finetune.data.FinetuneData` being fine-tuned on (class names, vocabulary
    sizes... are read from it in ``__init__``).
    """

    task: ClassVar[str]
    primary: ClassVar[str]
    allows_hflip: ClassVar[bool] = True
    needs_feature_map: ClassVar[bool] = False
    revision: ClassVar[int] = 1

    def __init__(self, data: FinetuneData) -> None:
        self.data = data

    @abstractmethod
    def build(self, feature_dim: int) -> nn.Module:
        """The trainable head module (initialised from torch's global RNG, which the run has seeded)."""

    @abstractmethod
    def targets(self, raw: object, device: torch.device) -> Rows:
        """A split's raw targets -> tensors on ``device`` (one tensor or a dict of them, rows first)."""

    @abstractmethod
    def loss(self, module: nn.Module, features: torch.Tensor, targets: Rows) -> torch.Tensor:
        """Scalar training loss of one batch (features (B, D) or (B, D, H, W), the batch's rows of ``targets``)."""

    @abstractmethod
    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: Rows) -> dict[str, float]:
        """Metrics of a whole split (called in eval mode, no grad); must include :attr:`primary`."""

    def standard_error(self, value: float, n: int) -> float:
        """Sampling standard error of the primary metric on ``n`` rows (default: a proportion's)."""
        return proportion_standard_error(value, n)


def proportion_standard_error(value: float, n: int) -> float:
    """sqrt(p(1-p)/n) for a proportion ``value`` on ``n`` rows (floored at one row's worth, 1/n)."""
    p = min(max(float(value), 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 1.0 / max(n, 1)) / max(n, 1))


def register_head(cls: type[TaskHead]) -> type[TaskHead]:
    """Class decorator: make ``cls`` the head of ``cls.task``."""
    _HEADS[cls.task] = cls
    return cls


def head_class(task: str) -> type[TaskHead]:
    """The head registered for ``task``; InputError when that kind cannot be fine-tuned yet."""
    module = HEAD_MODULES.get(task)
    if module is not None and task not in _HEADS:
        importlib.import_module(f"emms.finetune.heads.{module}")
    if task not in _HEADS:
        raise InputError(f"task: fine-tuning has no head for {task!r} tasks yet; it has {', '.join(sorted(HEAD_MODULES))}")
    return _HEADS[task]


def take(rows: Rows, index: torch.Tensor) -> Rows:
    """The rows ``index`` of a tensor or of every tensor of a dict."""
    if isinstance(rows, dict):
        return {key: value[index] for key, value in rows.items()}
    return rows[index]


def n_rows(rows: Rows) -> int:
    """How many rows ``rows`` holds."""
    return len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)
