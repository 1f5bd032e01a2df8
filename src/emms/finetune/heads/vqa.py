"""VQA: the question, embedded by a fixed text encoder, fused with the image features; answer accuracy.

Targets: a dict with ``question`` (n, E) float question embeddings (:func:`emms.finetune.heads._fusion.text_embeddings`,
not fine-tuned) and ``answer`` (n,) int ids into the answer vocabulary ``data.class_names``.
Head: :class:`~emms.finetune.heads._fusion.FusionMLP` -> answer logits; cross-entropy; metrics
``accuracy`` (exact answer) and ``loss``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emms.errors import InputError
from emms.finetune.heads import TaskHead, register_head
from emms.finetune.heads._fusion import FusionMLP


def text_and_values(raw: object, text_key: str, value_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``raw[text_key]`` as float32 (n, E) and ``raw[value_key]`` as an array with n rows."""
    if not isinstance(raw, dict) or text_key not in raw or value_key not in raw:
        raise InputError(f"targets: expected a dict with {text_key!r} (text embeddings) and {value_key!r}, "
                         f"got {type(raw).__name__}")
    text, values = np.asarray(raw[text_key], dtype=np.float32), np.asarray(raw[value_key])
    if text.ndim != 2 or len(text) != len(values):
        raise InputError(f"targets[{text_key!r}]: expected (n, E) embeddings for {len(values)} rows, got {text.shape}")
    return text, values


@register_head
class VQAHead(TaskHead):
    """Answer classifier over the fused (image, question) representation."""

    task = "vqa"
    primary = "accuracy"
    allows_hflip = False  # questions name positions (left / right)

    def build(self, feature_dim: int) -> nn.Module:
        text, _ = text_and_values(self.data.train[1], "question", "answer")
        return FusionMLP(feature_dim, text.shape[1], len(self.data.class_names))

    def targets(self, raw: object, device: torch.device) -> dict[str, torch.Tensor]:
        text, answers = text_and_values(raw, "question", "answer")
        return {"question": torch.as_tensor(text, device=device),
                "answer": torch.as_tensor(answers.astype(np.int64), device=device)}

    def loss(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(module(features, targets["question"]), targets["answer"])

    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        logits = module(features, targets["question"])
        return {"accuracy": float((logits.argmax(1) == targets["answer"]).float().mean()),
                "loss": float(nn.functional.cross_entropy(logits, targets["answer"]))}
