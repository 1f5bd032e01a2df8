"""Real fine-tuning for every task kind: the ground-truth builder and the engine of :func:`emms.select`.

* :mod:`emms.finetune.run` — one run: backbone + task head, AdamW + one-cycle, seeds, validation
  after every epoch (learning curves), cost in seconds and steps, checkpoints to stop at an epoch
  and continue, resumable JSON records written atomically (:class:`FinetuneProtocol`, :class:`RunKey`,
  :func:`finetune_run`).
* :mod:`emms.finetune.grid` — the (target, model, lr, seed) grid on parallel workers and the
  fine-tuned truth (:func:`run_grid`, :func:`aggregate_truth`).
* :mod:`emms.finetune.data` — :class:`FinetuneData`: a target's train / val / test splits.
* :mod:`emms.finetune.backbones` — which models can be fine-tuned and how they are built (image
  backbones here, text candidates in :mod:`emms.finetune.text_backbones`; both return a
  :class:`~emms.finetune.trainable.Backbone`).
* :mod:`emms.finetune.heads` — the :class:`~emms.finetune.heads.TaskHead` interface, one head per task
  kind: ``heads/classification.py`` is the model to copy; add ``heads/<kind>.py`` and one line in
  ``heads.HEAD_MODULES`` for another kind (the module docstring says what the core calls, when).
* :mod:`emms.finetune.race` — the budgeted race of :func:`emms.select`.

Importing this package does not import torch; running anything does.
"""

from emms.finetune.data import FinetuneData
from emms.finetune.grid import GridResult, aggregate_truth, estimate_steps, plan_grid, run_grid, write_csv_atomic
from emms.finetune.heads import TaskHead, head_class, register_head
from emms.finetune.run import RECORD_VERSION, FinetuneProtocol, RunKey, finetune_run, load_record, upgrade_record

__all__ = ["RECORD_VERSION", "FinetuneData", "FinetuneProtocol", "GridResult", "RunKey", "TaskHead", "aggregate_truth",
           "estimate_steps", "finetune_run", "head_class", "load_record", "plan_grid", "register_head", "run_grid",
           "upgrade_record", "write_csv_atomic"]
