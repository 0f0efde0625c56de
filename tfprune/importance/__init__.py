"""Registry of layer-importance scorers (higher = more important = keep more).

Data-free: ``capacity`` (alias of the best capacity variant, see
``capacity.py``), ``capacity_spectral``, ``capacity_energy``, ``magnitude``.
Data-driven: ``sensitivity``. Second-order scores (L-OBS) register the same
way, with ``@register_importance("obs", needs_data=True)``.
"""

from tfprune.importance import capacity, magnitude, sensitivity  # noqa: F401  (register scorers)
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
