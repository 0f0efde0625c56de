"""Uniform allocation: the same sparsity in every layer (tfmot's default).

Layers capped by bounds (excluded, ``max_sparsity``, ``min_density``) pass
their share to the others, so the total is still exact.
"""

from __future__ import annotations

import numpy as np

from tfprune.allocation.base import AllocationProblem, fill_to_budget, register_allocator


@register_allocator("uniform")
def uniform(problem: AllocationProblem) -> np.ndarray:
    """Removals proportional to each layer's size: r_l = s * n_l (water-filled at caps)."""
    return fill_to_budget(problem.n_params.astype(np.float64), problem.caps, problem.budget)
