"""Referring expressions: expression (fixed text encoder) + image -> one box; acc@IoU>=0.5 and mean IoU.

Targets: a structured array (:func:`emms.finetune.heads.vqa.row_table`) with ``expression``, the (E,)
embedding (:func:`emms.finetune.heads._fusion.text_embeddings`, not fine-tuned), and ``box``, the
normalised (x1, y1, x2, y2) in [0, 1] (``emms.flabels.native_target``).
Head: :class:`~emms.finetune.heads._fusion.FusionMLP` -> sigmoid (cx, cy, w, h) -> corners.
Loss: L1 on the corners + (1 - generalised IoU). Metrics: ``acc_iou50`` (share of boxes with
IoU >= 0.5, the primary), ``mean_iou`` and ``loss``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emms.errors import InputError
from emms.finetune.heads import TaskHead, register_head
from emms.finetune.heads._fusion import FusionMLP
from emms.finetune.heads.vqa import text_and_values


def corners(module: nn.Module, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Predicted boxes (B, 4) as normalised (x1, y1, x2, y2)."""
    cx, cy, w, h = torch.sigmoid(module(features, text)).unbind(1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def iou(a: torch.Tensor, b: torch.Tensor, generalised: bool = False) -> torch.Tensor:
    """IoU (or generalised IoU) of matching rows of two (B, 4) corner boxes."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda box: (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    value = inter / union.clamp(min=1e-9)
    if not generalised:
        return value
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0)
    hull_area = (hull[:, 0] * hull[:, 1]).clamp(min=1e-9)
    return value - (hull_area - union) / hull_area


@register_head
class ReferringHead(TaskHead):
    """Box regressor over the fused (image, expression) representation."""

    task = "referring"
    primary = "acc_iou50"
    allows_hflip = False  # the flip would have to move the box too

    def build(self, feature_dim: int) -> nn.Module:
        text, _ = text_and_values(self.data.train[1], "expression", "box")
        return FusionMLP(feature_dim, text.shape[1], 4)

    def targets(self, raw: object, device: torch.device) -> dict[str, torch.Tensor]:
        text, boxes = text_and_values(raw, "expression", "box")
        boxes = boxes.astype(np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all((boxes >= 0) & (boxes <= 1)):
            raise InputError("targets['box']: expected (n, 4) normalised boxes x1, y1, x2, y2 in [0, 1]")
        return {"expression": torch.as_tensor(text, device=device), "box": torch.as_tensor(boxes, device=device)}

    def loss(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        predicted = corners(module, features, targets["expression"])
        return (nn.functional.l1_loss(predicted, targets["box"])
                + (1 - iou(predicted, targets["box"], generalised=True)).mean())

    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        values = iou(corners(module, features, targets["expression"]), targets["box"])
        return {"acc_iou50": float((values >= 0.5).float().mean()), "mean_iou": float(values.mean()),
                "loss": float(self.loss(module, features, targets))}
