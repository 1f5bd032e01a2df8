"""Classification: a linear layer on the pooled features, cross-entropy, accuracy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emms.finetune.heads import TaskHead, register_head


@register_head
class ClassificationHead(TaskHead):
    """Linear(feature_dim -> C) trained with cross-entropy; ``targets``: integer labels 0..C-1 (n,)."""

    task = "classification"
    primary = "accuracy"

    def build(self, feature_dim: int) -> nn.Module:
        return nn.Linear(feature_dim, self.data.num_classes)

    def targets(self, raw: object, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(np.asarray(raw, dtype=np.int64), device=device)

    def loss(self, module: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(module(features), targets)

    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        logits = module(features)
        return {"accuracy": int((logits.argmax(1) == targets).sum()) / len(targets),
                "loss": float(nn.functional.cross_entropy(logits, targets))}
