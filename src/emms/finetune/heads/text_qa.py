"""Text QA as answer classification: the fine-tuned text candidate reads "question: ... context: ...",
a linear layer on its pooled output picks the answer from the training answers; ``accuracy`` is the
exact-match rate (one reference answer per question)."""

from __future__ import annotations

from emms.finetune.heads import register_head
from emms.finetune.heads.classification import ClassificationHead


@register_head
class TextQAHead(ClassificationHead):
    """Linear(feature_dim -> answers) with cross-entropy; ``targets``: answer ids into ``data.class_names``."""

    task = "text_qa"
    allows_hflip = False
