"""Layer-wise capacity (How Compact?, Jung, Kim & Choe 2019) — **our formulas**.

The paper's exact capacity metric is not available; these are our designs,
compared in ``benchmarks/allocation.py``. Both are dimensionless, in (0, 1],
and measure how much of its representational room a trained layer actually
uses (high = incompressible = important). W is the kernel as a
(fan_in F, fan_out O) matrix (see `kernel_matrix`).

* ``capacity_spectral``: effective rank (Roy & Vetterli 2007) over the maximum
  rank: ``exp(H(p)) / min(F, O)`` with ``p_i = sigma_i / sum(sigma)``.
* ``capacity_energy``: compressibility: the fraction of the layer's weights,
  largest magnitude first, needed to keep ``share`` (default 0.9) of its
  energy sum(w^2).

The allocator ``importance`` turns capacities into per-layer sparsity (LAMP
scores weighted by capacity, one global threshold; see
``tfprune/allocation/magnitude_rules.py``).
"""

from __future__ import annotations

import numpy as np

from tfprune.importance.base import ImportanceContext, register_alias, register_importance

__all__ = ["effective_rank", "entropy_rank", "spectral_capacity", "energy_capacity"]


def entropy_rank(values: np.ndarray) -> float:
    """``exp(H(p))`` with ``p`` the non-negative ``values`` over their sum; 0 when they sum to 0."""
    s = np.asarray(values, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank(matrix: np.ndarray) -> float:
    """Roy & Vetterli's effective rank: `entropy_rank` of the singular values; 0 for a zero matrix."""
    return entropy_rank(np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False))


def spectral_capacity(matrix: np.ndarray) -> float:
    """Effective rank / min(F, O), in (0, 1] (tiny positive floor for a zero layer)."""
    m = np.asarray(matrix)
    return max(effective_rank(m) / min(m.shape), 1e-6)


def energy_capacity(weights: np.ndarray, share: float = 0.9) -> float:
    """Fraction of entries (largest |w| first) holding ``share`` of sum(w^2), in (0, 1]."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    e = np.sort(np.square(np.asarray(weights, dtype=np.float64)).ravel())[::-1]
    total = e.sum()
    if total <= 0:
        return 1.0 / e.size
    k = int(np.searchsorted(np.cumsum(e), share * total - 1e-12 * total)) + 1
    return min(k, e.size) / e.size


@register_importance("capacity_spectral")
def capacity_spectral(ctx: ImportanceContext) -> np.ndarray:
    """Effective rank of the (F, O) kernel matrix over its maximum rank (ours)."""
    return np.array([spectral_capacity(m) for m in ctx.matrices()])


@register_importance("capacity_energy")
def capacity_energy(ctx: ImportanceContext) -> np.ndarray:
    """Fraction of weights needed to keep `share` (0.9) of the layer's weight energy (ours)."""
    share = float(ctx.options.get("share", 0.9))
    return np.array([energy_capacity(k, share) for k in ctx.kernels])


register_alias("capacity", "capacity_energy")  # chosen by benchmarks/allocation.py (ties spectral, 2x faster)
