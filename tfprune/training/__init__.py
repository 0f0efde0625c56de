"""Stage 5, training: the one pruning callback and the training helpers around it.

`callbacks` (`Pruning`), `finetune` (retraining that keeps the zeros, BatchNorm
re-estimation, the user's loss, `adam_cosine`), `distill` (`Distiller`) and `tasks`
(`TaskModel`: fit a wrapped network with a task model's own loss).
"""

from tfprune.training import finetune  # noqa: F401  (tfprune.training.finetune.*)
