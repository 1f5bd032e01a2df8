"""Agreement between transferability scores and fine-tuned ground truth.

* :mod:`emms.evaluate.correlations` — weighted Kendall tau (variant pinned: ``symmetric`` or
  ``truth_weighted``), Kendall, Spearman, Pearson, rel@k, regret@k, top-1 hit, bootstrap over models.
* :mod:`emms.evaluate.summary` — every statistic for a scores table against a truth table.
* :mod:`emms.evaluate.published` — published tables shipped as package data.
* :mod:`emms.evaluate.targets` — the offline benchmark's Fashion-MNIST targets and splits.
* fine-tuned ground truth is built by :mod:`emms.finetune` (imports torch only when run).
"""

from emms.evaluate.correlations import (
    WEIGHTED_TAU_VARIANTS,
    bootstrap_ci,
    kendall_tau,
    pearson,
    regret_at_k,
    rel_at_k,
    spearman,
    top1_hit,
    weighted_tau,
)
from emms.evaluate.summary import evaluate_scores, read_scores, read_truth

__all__ = ["WEIGHTED_TAU_VARIANTS", "bootstrap_ci", "evaluate_scores", "kendall_tau", "pearson", "read_scores",
           "read_truth", "regret_at_k", "rel_at_k", "spearman", "top1_hit", "weighted_tau"]
