"""tfprune: importance-based layer-wise sparsity for tf-keras, on top of tfmot.

Importing tfprune sets ``TF_USE_LEGACY_KERAS=1`` (tfmot works only with
Keras 2); import it before TensorFlow, or set that variable yourself.
"""

from tfprune._keras import ensure_legacy_keras as _ensure  # noqa: I001  (must come first)

_ensure()

from tfprune import allocation, data, datasets, importance, inventory, latency, masks, models, obs, planning, quantize, report, shallow, structured, training  # noqa: E402, F401, E501
from tfprune.allocation import list_allocators  # noqa: E402
from tfprune.analysis import analyze  # noqa: E402
from tfprune.export import export_tflite  # noqa: E402
from tfprune.importance import list_importance, score_layers  # noqa: E402
from tfprune.inventory.layers import prunable_layers  # noqa: E402
from tfprune.inventory.profiling import profile  # noqa: E402
from tfprune.io import custom_objects, load_model  # noqa: E402
from tfprune.latency import compress  # noqa: E402
from tfprune.masks.channel_mask import ChannelMask  # noqa: E402
from tfprune.masks.schedule import LayerwiseSchedule  # noqa: E402
from tfprune.masks.wrapper import PruneLayer  # noqa: E402
from tfprune.masks.wrapping import clone, strip, wrap  # noqa: E402
from tfprune.planning import Plan, plan  # noqa: E402
from tfprune.quantize import convert_qat, pqat  # noqa: E402
from tfprune.structured import channel_graph, shrink  # noqa: E402
from tfprune.training.callbacks import Pruning  # noqa: E402
from tfprune.training.distill import Distiller  # noqa: E402
from tfprune.training.tasks import TaskModel  # noqa: E402

__version__ = "0.1.0"

#: The public API at the top level (25 names). Everything else lives in a subpackage, one per stage:
#: .inventory, .importance / .allocation (registries), .planning, .masks, .training, .structured (channel graph,
#: shrink), .obs, .shallow, .latency (LiteRT latency tables and compress, the search to a latency budget), .export, .quantize,
#: .data, .datasets (MNIST and CIFAR-10 loaders, the CIFAR-10 input pipeline) and .models (the model zoo).
__all__ = [
    # plan and prune in fit
    "plan",
    "Plan",
    "wrap",
    "Pruning",
    "strip",
    "clone",
    "prunable_layers",
    "score_layers",
    "list_importance",
    "list_allocators",
    "PruneLayer",
    "ChannelMask",
    "LayerwiseSchedule",
    # structures and methods
    "channel_graph",
    "shrink",
    "analyze",
    "profile",
    "Distiller",
    "TaskModel",
    "compress",
    # export and files
    "pqat",
    "convert_qat",
    "export_tflite",
    "load_model",
    "custom_objects",
]
