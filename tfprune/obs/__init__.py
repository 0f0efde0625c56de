"""Layer-wise Optimal Brain Surgeon (Dong, Chen & Pan 2017): second-order pruning with weight correction.

* `layer_hessians`: H = (1/n) sum x x^T per layer from the unpruned network.
* `solvers.lobs` / `solvers.exact`: numpy solvers.
* `prune`: a new pruned model and an `OBSReport` (sparsity, delta E, bound, time).
* `retrain`, `reestimate_batchnorm`, `wrap_with_masks`: re-exports of `tfprune.finetune`'s
  `retrain`, `reestimate_batchnorm` and `freeze_zeros` (light retraining that keeps the zeros).
"""

from tfprune.finetune import freeze_zeros as wrap_with_masks
from tfprune.finetune import reestimate_batchnorm, retrain
from tfprune.obs import solvers
from tfprune.obs.hessian import layer_hessians
from tfprune.obs.pruning import METHODS, OBSLayer, OBSReport, prune

__all__ = ["METHODS", "OBSLayer", "OBSReport", "layer_hessians", "prune", "reestimate_batchnorm", "retrain", "solvers", "wrap_with_masks"]
