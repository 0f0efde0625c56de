"""tfprune: importance-based layer-wise sparsity for tf-keras, on top of tfmot.

Importing tfprune sets ``TF_USE_LEGACY_KERAS=1`` (tfmot works only with
Keras 2); import it before TensorFlow, or set that variable yourself.
"""

from tfprune._keras import ensure_legacy_keras as _ensure  # noqa: I001  (must come first)

_ensure()

from tfprune import allocation, data, datasets, finetune, importance, models, obs, quantize, report, shallow, structured, tasks  # noqa: E402
from tfprune.allocation import Allocation, allocate_sparsity, list_allocators  # noqa: E402
from tfprune.analysis import AnalysisReport, analyze  # noqa: E402
from tfprune.callbacks import Pruning, apply_masks  # noqa: E402
from tfprune.distill import Distiller  # noqa: E402
from tfprune.export import ExportReport, export_tflite  # noqa: E402
from tfprune.finetune import CrossEntropy, freeze_zeros, model_loss, reestimate_batchnorm, retrain  # noqa: E402
from tfprune.granularity import GRANULARITIES  # noqa: E402
from tfprune.importance import ImportanceScores, list_importance, score_layers  # noqa: E402
from tfprune.io import custom_object_scope, custom_objects, load_model  # noqa: E402
from tfprune.layers import LayerInventory, PrunableLayer, SkippedLayer, prunable_layers  # noqa: E402
from tfprune.planning import Plan, plan  # noqa: E402
from tfprune.profile import Profile, profile  # noqa: E402
from tfprune.quantize import convert_qat, pqat  # noqa: E402
from tfprune.schedule import LayerwiseSchedule  # noqa: E402
from tfprune.structured import ShrinkReport, channel_graph, channel_importance, prune_channels, shrink  # noqa: E402
from tfprune.tasks import TaskModel  # noqa: E402
from tfprune.wrap import clone, is_wrapped, strip, wrap  # noqa: E402
from tfprune.wrapper import PruneLayer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "AnalysisReport",
    "Distiller",
    "Profile",
    "Plan",
    "Pruning",
    "PruneLayer",
    "TaskModel",
    "GRANULARITIES",
    "plan",
    "analyze",
    "ExportReport",
    "ImportanceScores",
    "LayerInventory",
    "LayerwiseSchedule",
    "PrunableLayer",
    "SkippedLayer",
    "allocate_sparsity",
    "allocation",
    "CrossEntropy",
    "data",
    "finetune",
    "freeze_zeros",
    "model_loss",
    "reestimate_batchnorm",
    "report",
    "retrain",
    "apply_masks",
    "clone",
    "custom_object_scope",
    "custom_objects",
    "datasets",
    "export_tflite",
    "importance",
    "is_wrapped",
    "list_importance",
    "list_allocators",
    "load_model",
    "models",
    "obs",
    "profile",
    "prunable_layers",
    "score_layers",
    "shallow",
    "ShrinkReport",
    "channel_graph",
    "channel_importance",
    "shrink",
    "pqat",
    "convert_qat",
    "quantize",
    "prune_channels",
    "structured",
    "tasks",
    "strip",
    "wrap",
]
