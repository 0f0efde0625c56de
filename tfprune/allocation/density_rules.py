"""Allocators that set each layer's density by a formula, water-filled to the exact budget.

* ``erk``: Erdős–Rényi-Kernel (RigL, Evci et al. 2020): density_l ∝
  sum(kernel dims) / prod(kernel dims); layers that would exceed density 1
  are capped and the rest redistributed.
* ``importance_fansum`` (an alternative How Compact? formula, ours):
  kept_l ∝ I_l^beta * (F_l + O_l), F_l + O_l being the fewest weights that
  keep every input and output unit of the layer connected.
"""

from __future__ import annotations

import numpy as np

from tfprune.allocation.base import AllocationProblem, fill_to_budget, register_allocator


def _kept_to_removed(kept_share: np.ndarray, problem: AllocationProblem) -> np.ndarray:
    """Water-fill kept weights ∝ kept_share (capped at n - min removals) and return removals."""
    n = problem.n_params
    keep_total = int(n.sum() - problem.budget)
    forced = n - problem.caps
    # kept_l = max(forced_l, min(n_l, t * share_l)): fill the optional part above the forced floor.
    room = n - forced
    optional = keep_total - int(forced.sum())
    if optional <= 0:
        return problem.caps.copy()
    share = np.asarray(kept_share, dtype=np.float64)
    # Distribute `optional` extra keeps proportionally to share, capped by room.
    extra = fill_to_budget(np.maximum(share, 0.0), room, optional)
    kept = forced + extra
    return n - kept


@register_allocator("erk")
def erk(problem: AllocationProblem) -> np.ndarray:
    """Erdős–Rényi-Kernel: kept_l ∝ sum of the kernel's dimensions."""
    if problem.shapes is None:
        raise ValueError("allocator 'erk' needs layer shapes: pass a model or its prunable_layers()")
    share = np.array([float(sum(s)) for s in problem.shapes])
    return _kept_to_removed(share, problem)


@register_allocator("importance_fansum", needs_scores=True)
def importance_fansum(problem: AllocationProblem) -> np.ndarray:
    """kept_l ∝ score_l^beta * (fan_in_l + fan_out_l) (How Compact?, our formula)."""
    scores = problem.require_scores("importance_fansum")
    beta = float(problem.options.get("beta", 1.0))
    share = np.power(np.maximum(scores, 1e-12), beta) * problem.fan_sums()
    return _kept_to_removed(share, problem)
