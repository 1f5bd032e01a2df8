"""Referring expressions: expression (fixed text encoder) + the backbone's spatial feature map -> one box;
acc@IoU>=0.5 and mean IoU.

Targets: a structured array (:func:`emms.finetune.heads.vqa.row_table`) with ``expression``, the (E,)
embedding (:func:`emms.finetune.heads._fusion.text_embeddings`, not fine-tuned), and ``box``, the
normalised (x1, y1, x2, y2) in [0, 1] (``emms.flabels.native_target``).

Head (:class:`SpatialReferring`, ``needs_feature_map``: it reads the backbone's last map F (B, C, H, W),
not the pooled vector, so where a garment is survives). Cell n has features f_n (C,) and normalised
centre p_n = ((j + 0.5) / W, (i + 0.5) / H); the expression embedding is e:

    v_n = relu(A f_n) + P p_n                       (1x1 projection to d = 128, plus a learned position code)
    gamma, beta = G e                               (FiLM: the expression scales and shifts every cell)
    h_n = relu(v_n * (1 + gamma) + beta)
    s_n = w . h_n,   a = softmax_n(s)               (which cell does the expression name)
    c = sum_n a_n p_n,   z = sum_n a_n h_n          (soft-argmax centre; attention-pooled cell features)
    (dx, dy, tw, th) = MLP([z, c])
    box centre = c + 0.5 tanh(dx, dy), size = sigmoid(tw, th)  -> corners

Loss: L1 on the corners + (1 - generalised IoU) + the cell cross-entropy -log a_{n*}, where n* is the
cell holding the target box's centre (the heatmap term: it teaches the attention which cell the
expression names, which pooled features could only learn slowly). Metrics: ``acc_iou50`` (share of
boxes with IoU >= 0.5, the primary), ``mean_iou``, ``cell_accuracy`` (argmax cell = n*) and ``loss``.

:attr:`ReferringHead.revision` is 2: version 1 was a fusion MLP on pooled features, and its run
records are refused by :func:`emms.finetune.run.load_record` so that a resumed grid never mixes heads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emms.errors import InputError
from emms.finetune.heads import TaskHead, register_head
from emms.finetune.heads.vqa import text_and_values


class SpatialReferring(nn.Module):
    """(feature map (B, C, H, W), expression embeddings (B, E)) -> (boxes (B, 4) as corners, cell logits (B, H*W))."""

    def __init__(self, channels: int, text_dim: int, hidden: int = 128, text_mean: torch.Tensor | None = None,
                 text_scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("text_mean", torch.zeros(text_dim) if text_mean is None else torch.as_tensor(text_mean).float())
        self.register_buffer("text_scale", torch.tensor(float(text_scale)))
        self.cells = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU())
        self.position = nn.Linear(2, hidden)
        self.film = nn.Linear(text_dim, 2 * hidden)
        self.score = nn.Linear(hidden, 1)
        self.box = nn.Sequential(nn.Linear(hidden + 2, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, fmap: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fmap.ndim != 4:
            raise InputError(f"referring head: expected a (B, C, H, W) feature map, got shape {tuple(fmap.shape)}")
        coords = cell_centres(*fmap.shape[2:], device=fmap.device, dtype=fmap.dtype)  # (H*W, 2) as (x, y)
        v = self.cells(fmap).flatten(2).transpose(1, 2) + self.position(coords)
        gamma, beta = self.film((text - self.text_mean) / self.text_scale).chunk(2, dim=1)
        h = torch.relu(v * (1 + gamma[:, None]) + beta[:, None])
        logits = self.score(h).squeeze(-1)
        attention = torch.softmax(logits, dim=1)
        centre = attention @ coords
        pooled = torch.einsum("bn,bnd->bd", attention, h)
        dx, dy, tw, th = self.box(torch.cat([pooled, centre], dim=1)).unbind(1)
        cx, cy = centre[:, 0] + 0.5 * torch.tanh(dx), centre[:, 1] + 0.5 * torch.tanh(dy)
        w, hh = torch.sigmoid(tw), torch.sigmoid(th)
        return torch.stack([cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2], dim=1), logits


def cell_centres(height: int, width: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """(height * width, 2) normalised (x, y) centres of a map's cells, row-major."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def target_cells(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B,) row-major index of the cell holding each (x1, y1, x2, y2) box's centre."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col = (cx * width).long().clamp(0, width - 1)
    row = (cy * height).long().clamp(0, height - 1)
    return row * width + col


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
    """Box regressor over the expression-conditioned cells of the backbone's feature map."""

    task = "referring"
    primary = "acc_iou50"
    allows_hflip = False  # the flip would have to move the box too
    needs_feature_map = True
    revision = 2

    def build(self, feature_dim: int) -> nn.Module:
        text, _ = text_and_values(self.data.train[1], "expression", "box")
        mean = text.mean(0)
        scale = float(np.sqrt(((text - mean) ** 2).mean())) or 1.0
        return SpatialReferring(feature_dim, text.shape[1], text_mean=torch.as_tensor(mean), text_scale=scale)

    def targets(self, raw: object, device: torch.device) -> dict[str, torch.Tensor]:
        text, boxes = text_and_values(raw, "expression", "box")
        boxes = boxes.astype(np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all((boxes >= 0) & (boxes <= 1)):
            raise InputError("targets['box']: expected (n, 4) normalised boxes x1, y1, x2, y2 in [0, 1]")
        return {"expression": torch.as_tensor(text, device=device), "box": torch.as_tensor(boxes, device=device)}

    def _parts(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]):  # noqa: ANN202
        predicted, logits = module(features, targets["expression"])
        cells = target_cells(targets["box"], *features.shape[2:])
        loss = (nn.functional.l1_loss(predicted, targets["box"]) + (1 - iou(predicted, targets["box"], generalised=True)).mean()
                + nn.functional.cross_entropy(logits, cells))
        return predicted, logits, cells, loss

    def loss(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._parts(module, features, targets)[3]

    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        predicted, logits, cells, loss = self._parts(module, features, targets)
        values = iou(predicted, targets["box"])
        return {"acc_iou50": float((values >= 0.5).float().mean()), "mean_iou": float(values.mean()),
                "cell_accuracy": float((logits.argmax(1) == cells).float().mean()), "loss": float(loss)}
