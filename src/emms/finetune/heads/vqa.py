"""VQA: the question, embedded by a fixed text encoder, fused with the image features; answer accuracy.

Targets: a structured array (:func:`row_table`) with ``question``, the (E,) question embedding
(:func:`emms.finetune.heads._fusion.text_embeddings`, not fine-tuned), and ``answer``, the answer's
id in the vocabulary ``data.class_names``.
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


def row_table(text_key: str, text: np.ndarray, value_key: str, values: np.ndarray) -> np.ndarray:
    """A structured array with one row per sample: ``text_key`` (E,) float32 and ``value_key``.

    Rows first, so ``len`` and fancy indexing work as for any other targets array."""
    text, values = np.asarray(text, dtype=np.float32), np.asarray(values)
    table = np.zeros(len(values), dtype=[(text_key, np.float32, text.shape[1:]), (value_key, values.dtype, values.shape[1:])])
    table[text_key], table[value_key] = text, values
    return table


def text_and_values(raw: object, text_key: str, value_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``text_key`` (n, E) float32 embeddings and the ``value_key`` rows of a :func:`row_table`."""
    names = getattr(getattr(raw, "dtype", None), "names", None) or ()
    if text_key not in names or value_key not in names:
        raise InputError(f"targets: expected a structured array with fields {text_key!r} (text embeddings) and "
                         f"{value_key!r} (emms.finetune.heads.vqa.row_table), got {type(raw).__name__}")
    text = np.asarray(raw[text_key], dtype=np.float32)
    if text.ndim != 2:
        raise InputError(f"targets[{text_key!r}]: expected (n, E) embeddings, got shape {text.shape}")
    return text, np.asarray(raw[value_key])


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
