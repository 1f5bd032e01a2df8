"""Agreement between transferability scores and fine-tuned ground truth (general: any scores, any truth).

* :mod:`emms.evaluate.correlations` — weighted Kendall tau (variant pinned: ``symmetric`` or
  ``truth_weighted``), Kendall, Spearman, Pearson, rel@k, regret@k, top-1 hit, bootstrap over models.
* :mod:`emms.evaluate.summary` — every statistic for a scores table against a truth table.
* :mod:`emms.evaluate.published` — published tables shipped as package data.
* fine-tuned ground truth is built by :mod:`emms.finetune` (imports torch only when run); the
  benchmark's Fashion-MNIST targets are data: :mod:`emms.data.fashion_targets`.

A new agreement statistic goes in ``correlations.py`` (and its column in ``summary.py``).
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
