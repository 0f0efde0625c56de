"""Registry of layer-importance scorers (higher = more important = keep more).

Data-free: ``capacity`` (alias of the best capacity variant, see
``capacity.py``), ``capacity_spectral``, ``capacity_energy``, ``magnitude``.
Data-driven: ``sensitivity``, ``obs`` (second order: relative L-OBS layer
error at a given sparsity) and ``capacity_activation`` (capacity of the
layer's representation: effective rank of its output-channel correlation).
"""

from tfprune.importance import activation, capacity, magnitude, obs, sensitivity  # noqa: F401  (register scorers)
from tfprune.importance.base import (
    ImportanceContext,
    ImportanceScores,
    get_importance,
    kernel_matrix,
    list_importance,
    needs_data,
    register_importance,
    score_layers,
)

__all__ = [
    "ImportanceContext",
    "ImportanceScores",
    "get_importance",
    "kernel_matrix",
    "list_importance",
    "needs_data",
    "register_importance",
    "score_layers",
]
