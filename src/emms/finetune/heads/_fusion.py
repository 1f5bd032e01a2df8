"""Image + text fusion shared by the VQA and referring heads, and the fixed text encoder they use.

The text (question or referring expression) is embedded once by a fixed, packaged offline text
encoder (default ``minilm-l6``, :mod:`emms.flabels`) and is not fine-tuned; the head fuses it
with the backbone's pooled image features: ``v = relu(Wv x)``, ``q = relu(Wq e)``, then an MLP on
``[v, q, v * q]`` (concatenation plus the element-wise product, as in simple VQA baselines).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_TEXT_ENCODER = "minilm-l6"


class FusionMLP(nn.Module):
    """(image features (B, D), text embeddings (B, E)) -> (B, out)."""

    def __init__(self, feature_dim: int, text_dim: int, out: int, hidden: int = 256) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU())
        self.text = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        v, q = self.image(features), self.text(text)
        return self.mlp(torch.cat([v, q, v * q], dim=1))


def text_embeddings(texts: Sequence[str], encoder: str = DEFAULT_TEXT_ENCODER, store=None) -> np.ndarray:  # noqa: ANN001
    """(n, dim) float32 embeddings of ``texts`` by the fixed encoder; each distinct text embedded once
    (through ``store``, an :class:`emms.compute.store.Store`, when given)."""
    from emms.flabels import embed_texts, load_encoder

    unique, index = np.unique(np.asarray([str(t) for t in texts], dtype=object), return_inverse=True)
    return np.asarray(embed_texts(load_encoder(encoder), unique.tolist(), store=store), dtype=np.float32)[index]
