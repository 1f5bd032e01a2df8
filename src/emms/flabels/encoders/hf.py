"""Hugging Face transformers text encoders: BERT-style, GPT-2 and the CLIP text tower.

Pooling per ``kind`` (chosen from the model's config when ``kind="auto"``):

* ``"mean"`` (BERT, RoBERTa, ...): mean of the last hidden states over real tokens,
  sum_t m_t h_t / sum_t m_t with m the attention mask. The EMMS official code averages over the
  padding too, which makes a text's embedding depend on the longest text of its batch; we don't.
* ``"gpt2"``: the same masked mean; GPT-2 has no pad token, so pad = eos, padded on the right
  (causal attention: real tokens never see the padding).
* ``"clip"``: the CLIP text tower's projected embedding (``CLIPModel.get_text_features``, computed by
  ``CLIPTextModelWithProjection`` so a full CLIP checkpoint's vision tower is never loaded).

The paper's encoders are CLIP ViT-g/14 (LAION-2B), bert-large-uncased and gpt2-medium.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from emms._validation import as_torch_device
from emms.flabels.encoders.base import BatchedEncoder, hub_load_errors, masked_mean, model_fingerprint, model_label
from emms.errors import InputError, ResourceError

KINDS = ("auto", "mean", "gpt2", "clip")


class HFTextEncoder(BatchedEncoder):
    """A transformers model as a text encoder (see the module docstring for pooling).

    Parameters: ``name_or_path`` hub id or local folder; ``kind`` one of :data:`KINDS`;
    ``device`` torch device; ``max_length`` tokens per text (longer texts are truncated).
    """

    def __init__(self, name_or_path: str, *, kind: str = "auto", device: str = "cpu", max_length: int = 128) -> None:
        if kind not in KINDS:
            raise InputError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InputError(f"max_length: expected an integer >= 2, got {max_length!r}")
        import torch  # noqa: F401  (fail early with ImportError if the torch extra is missing)
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModelWithProjection

        self.name = name_or_path
        self.device = as_torch_device(device)
        what = f"encoder hf:{name_or_path}"
        with hub_load_errors(what, name_or_path):
            config = AutoConfig.from_pretrained(name_or_path)
            if kind == "auto":
                kind = {"clip": "clip", "gpt2": "gpt2"}.get(config.model_type, "mean")
            self.kind = kind
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            with _quiet_transformers():
                if kind == "clip":  # the text tower of a full CLIP checkpoint, with the checkpoint's projection
                    text_config = getattr(config, "text_config", config)
                    text_config.projection_dim = getattr(config, "projection_dim", text_config.projection_dim)
                    self.model, info = CLIPTextModelWithProjection.from_pretrained(
                        name_or_path, config=text_config, output_loading_info=True)
                else:
                    self.model, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True)
        # A weight the checkpoint lacks would be random: refuse (BERT's unused pooler excepted).
        missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
        missing += [str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise ResourceError(f"{what}: the checkpoint does not provide {len(missing)} weight(s) of the "
                                f"{kind} encoder, e.g. {missing[0]!r}; it is not a {kind} text model")
        if kind == "gpt2" or self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.pad_token is None:
            raise InputError(f"{what}: the tokenizer has neither a pad nor an eos token; cannot batch texts")
        self.tokenizer.padding_side = "right"
        self.model.eval().to(self.device)
        config = self.model.config
        self.max_length = min(max_length, int(getattr(config, "max_position_embeddings", max_length)))
        self._dim = int(config.projection_dim if kind == "clip" else config.hidden_size)
        fingerprint = model_fingerprint(name_or_path) or "unversioned"
        self.identity = f"hf-{kind}:{model_label(name_or_path)}@{fingerprint}:max{self.max_length}"



    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.inference_mode():
            if self.kind == "clip":
                return self.model(**tokens).text_embeds.float().cpu().numpy()
            hidden = self.model(**tokens).last_hidden_state.float().cpu().numpy()
        return masked_mean(hidden, tokens["attention_mask"].cpu().numpy())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (a full CLIP checkpoint lists every vision weight as unused)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
