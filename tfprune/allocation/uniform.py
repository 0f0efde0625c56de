"""Uniform allocation: the same sparsity in every layer (tfmot's default), or in every channel group.

Layers capped by bounds (excluded, ``max_sparsity``, ``min_density``) pass
their share to the others, so the total is still exact.
"""

from __future__ import annotations

import numpy as np

from tfprune.allocation.base import AllocationProblem, fill_to_budget, register_allocator, register_group_keys


@register_allocator("uniform")
def uniform(problem: AllocationProblem) -> np.ndarray:
    """Removals proportional to each layer's size: r_l = s * n_l (water-filled at caps)."""
    return fill_to_budget(problem.n_params.astype(np.float64), problem.caps, problem.budget)


def rank_keys(scores: np.ndarray) -> np.ndarray:
    """Key of each channel under ``uniform``: ``(rank + 1) / n``, rank 0 = lowest score (stable for ties)."""
    s = np.asarray(scores, dtype=np.float64)
    keys = np.empty(s.size)
    keys[np.argsort(s, kind="stable")] = (np.arange(s.size) + 1.0) / max(s.size, 1)
    return keys


@register_group_keys("uniform")
def uniform_groups(scores: list[np.ndarray], importances: np.ndarray, gamma: float = 1.0) -> list[np.ndarray]:
    """The same fraction of every group: the channel ranked ``i`` (ascending score) of ``n`` gets ``(i + 1) / n``."""
    return [rank_keys(s) for s in scores]
