"""Layer-wise Optimal Brain Surgeon (Dong, Chen & Pan 2017): second-order pruning with weight correction.

* `layer_hessians`: H = (1/n) sum x x^T per layer from the unpruned network.
* `solvers.lobs` / `solvers.exact`: numpy solvers.
* `prune`: a new pruned model and an `OBSReport` (sparsity, delta E, bound, time).

Light retraining that keeps the zeros and BatchNorm re-estimation are
`tfprune.training.finetune.retrain` and `tfprune.training.finetune.reestimate_batchnorm`.
"""

from tfprune.obs import solvers
from tfprune.obs.hessian import layer_hessians
from tfprune.obs.pruning import DEFAULT_SOLVER, METHODS, OBSLayer, OBSReport, prune

__all__ = ["DEFAULT_SOLVER", "METHODS", "OBSLayer", "OBSReport", "layer_hessians", "prune", "solvers"]
