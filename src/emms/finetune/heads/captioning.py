"""Captioning: a light autoregressive GRU decoder over the backbone's pooled features.

Targets per image: a list of reference captions. Words are lower-cased and split on white space
(punctuation split off); the vocabulary is the training captions' words plus <pad>, <bos>, <eos>,
<unk>. The decoder's initial state is ``tanh(W x)`` and the projected image feature is also fed
with every input word. Training: teacher-forced token cross-entropy over every reference.
Evaluation: greedy decoding up to the longest training caption; ``bleu4`` = corpus BLEU-4 of
sacrebleu (default 13a tokenisation, all references of each image) divided by 100, so in [0, 1];
``token_loss`` = teacher-forced token cross-entropy (nats per token).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from emms.errors import InputError
from emms.finetune.heads import TaskHead, register_head

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_WORD = re.compile(r"[\w'/-]+|[^\w\s]")


def words(caption: str) -> list[str]:
    """Lower-cased words of ``caption`` with punctuation as separate tokens."""
    return _WORD.findall(str(caption).lower())


def references(raw: object, name: str = "targets") -> list[list[str]]:
    """Raw captioning targets -> per image a non-empty list of caption strings."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence | np.ndarray):
        raise InputError(f"{name}: expected per image a caption or a list of captions, got {type(raw).__name__}")
    out = []
    for i, refs in enumerate(raw):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise InputError(f"{name}[{i}]: expected one or more non-empty caption strings, got {refs!r}")
        out.append(refs)
    return out


class CaptionDecoder(nn.Module):
    """GRU decoder: image features (B, D) + input tokens (B, T) -> logits (B, T, V)."""

    def __init__(self, feature_dim: int, vocab_size: int, embed: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.init = nn.Linear(feature_dim, hidden)
        self.image = nn.Linear(feature_dim, embed)
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        self.gru = nn.GRU(2 * embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            state = torch.tanh(self.init(features)).unsqueeze(0)
        image = self.image(features).unsqueeze(1).expand(-1, tokens.shape[1], -1)
        output, state = self.gru(torch.cat([self.embed(tokens), image], dim=2), state)
        return self.out(output), state


@register_head
class CaptioningHead(TaskHead):
    """GRU caption decoder; ``targets``: per image its reference captions (see module docstring)."""

    task = "captioning"
    primary = "bleu4"
    allows_hflip = False  # captions name positions (left / right)

    def __init__(self, data) -> None:  # noqa: ANN001 - emms.finetune.data.FinetuneData
        super().__init__(data)
        train = references(data.train[1], "train targets")
        vocabulary = sorted({w for refs in train for r in refs for w in words(r)})
        self.vocabulary = [*SPECIALS, *vocabulary]
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_len = max(len(words(r)) for refs in train for r in refs) + 1  # + <eos>

    def build(self, feature_dim: int) -> nn.Module:
        return CaptionDecoder(feature_dim, len(self.vocabulary))

    def targets(self, raw: object, device: torch.device) -> dict[str, torch.Tensor]:
        refs = references(raw)
        n_refs = max(len(r) for r in refs)
        tokens = np.full((len(refs), n_refs, self.max_len + 1), PAD, dtype=np.int64)
        for i, image_refs in enumerate(refs):
            for j, caption in enumerate(image_refs):
                ids = [self.index.get(w, UNK) for w in words(caption)][: self.max_len - 1]
                tokens[i, j, : len(ids) + 2] = [BOS, *ids, EOS]
        return {"tokens": torch.as_tensor(tokens, device=device),
                "image": torch.arange(len(refs), device=device)}

    def loss(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = targets["tokens"]                                    # (B, R, T+1)
        batch, n_refs, length = tokens.shape
        flat = tokens.reshape(batch * n_refs, length)
        keep = flat[:, 1] != PAD                                      # references that exist
        repeated = features.repeat_interleave(n_refs, dim=0)[keep]
        logits, _ = module(repeated, flat[keep, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat[keep, 1:].reshape(-1),
                                           ignore_index=PAD)

    def evaluate(self, module: nn.Module, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        import sacrebleu

        hypotheses = [" ".join(words_) for words_ in self.generate(module, features)]
        tokens = targets["tokens"].cpu().numpy()
        refs = [[" ".join(self.vocabulary[t] for t in ref[1:] if t not in (PAD, EOS)) for ref in image if ref[1] != PAD]
                for image in tokens]
        n_refs = max(len(r) for r in refs)
        streams = [[r[j] if j < len(r) else r[0] for r in refs] for j in range(n_refs)]
        bleu = sacrebleu.corpus_bleu(hypotheses, streams).score / 100.0
        return {"bleu4": float(bleu), "token_loss": float(self.loss(module, features, targets))}

    def generate(self, module: nn.Module, features: torch.Tensor) -> list[list[str]]:
        """Greedy captions (as word lists) for image features (B, D)."""
        tokens = torch.full((len(features), 1), BOS, dtype=torch.long, device=features.device)
        state, out, done = None, [], torch.zeros(len(features), dtype=torch.bool, device=features.device)
        for _ in range(self.max_len):
            logits, state = module(features, tokens, state)
            tokens = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tokens[:, 0])
            done |= tokens[:, 0] == EOS
            if bool(done.all()):
                break
        captions = []
        for row in torch.stack(out, dim=1).cpu().numpy():
            ids = row.tolist()
            ids = ids[: ids.index(EOS)] if EOS in ids else ids
            captions.append([self.vocabulary[i] for i in ids if i >= len(SPECIALS)])
        return captions
