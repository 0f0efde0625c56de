"""The one importance registry: scorers of layers and of channels in coupled groups (higher = keep more).

Each scorer declares what it scores (``scores="layer"`` or ``"channel"``) and whether it
needs data; the channel scorers (``l2``, ``l1``, ``bn_scale``, ``taylor``, ``obs``) are defined
in `tfprune.structured.importance` and registered here. Layer scorers:

Data-free: ``capacity`` (alias of the best capacity variant, see
``capacity.py``), ``capacity_spectral``, ``capacity_energy``, ``magnitude``.
Data-driven: ``sensitivity``, ``obs`` (second order: relative L-OBS layer
error at a given sparsity) and ``capacity_activation`` (capacity of the
layer's representation: effective rank of its output-channel correlation).
"""

from tfprune.importance import activation, capacity, magnitude, obs, sensitivity  # noqa: F401  (register scorers)
from tfprune.importance.base import (
    KINDS,
    ImportanceContext,
    ImportanceScores,
    Scorer,
    get_importance,
    get_scorer,
    kernel_matrix,
    list_importance,
    needs_data,
    register_importance,
    score_layers,
    unregister_importance,
)

__all__ = [
    "KINDS",
    "ImportanceContext",
    "ImportanceScores",
    "Scorer",
    "get_importance",
    "get_scorer",
    "kernel_matrix",
    "list_importance",
    "needs_data",
    "register_importance",
    "score_layers",
    "unregister_importance",
]
