"""Allocators that rank individual weights across layers by one global threshold.

* ``global``: raw |w| (one magnitude threshold; can collapse small layers
  without the ``min_keep`` floor, which it respects).
* ``global_ratio`` lives in `tfprune.allocation.global_ratio` (one threshold on
  per-layer normalised scores).
* ``lamp``: LAMP (Lee et al., ICLR 2021): score(u) = w_u^2 / sum_{|w_v| >= |w_u|} w_v^2
  within a layer; never removes a layer's largest weight.

* ``importance`` (How Compact?, our formula): LAMP scores of layer l
  multiplied by (I_l / max I)^gamma, I_l the layer's importance (e.g. its
  capacity), one global threshold. LAMP makes weights of different layers
  comparable (each score is a weight's share of the energy its layer keeps);
  the importance says how much a relative distortion of that layer costs.
  With equal importances this is LAMP.

All of them keep exactly ``N - budget`` weights: the top scores globally, after
forcing each layer's ``n_l - cap_l`` best weights to stay.
"""

from __future__ import annotations

import numpy as np

from tfprune.allocation.base import AllocationProblem, register_allocator, register_group_keys
from tfprune.validation import number


def lamp_scores(weights: np.ndarray) -> np.ndarray:
    """LAMP score of every entry (same shape), in (0, 1]; the largest weight scores 1."""
    w2 = np.square(np.asarray(weights, dtype=np.float64)).ravel()
    order = np.argsort(-w2, kind="stable")
    sorted_w2 = w2[order]
    denom = np.cumsum(sorted_w2)  # sum of w_v^2 over |w_v| >= |w_u| (ties: by order)
    scores_sorted = np.divide(sorted_w2, denom, out=np.zeros_like(sorted_w2), where=denom > 0)
    out = np.empty_like(w2)
    out[order] = scores_sorted
    return out.reshape(np.shape(weights))


def global_top_k(per_layer_scores: list[np.ndarray], problem: AllocationProblem) -> np.ndarray:
    """Removals per layer when the top ``N - budget`` scores are kept globally (floors respected)."""
    n = problem.n_params
    keep_total = int(n.sum() - problem.budget)
    forced = n - problem.caps  # weights each layer must keep
    flat_scores, flat_layer = [], []
    for i, s in enumerate(per_layer_scores):
        s = np.asarray(s, dtype=np.float64).ravel()
        order = np.argsort(-s, kind="stable")
        s = s[order].copy()
        s[: forced[i]] = np.inf  # forced keeps win
        flat_scores.append(s)
        flat_layer.append(np.full(s.size, i))
    scores = np.concatenate(flat_scores)
    layer = np.concatenate(flat_layer)
    # Deterministic top-k: a stable sort keeps ties in (layer, position) order.
    idx = np.argsort(-scores, kind="stable")[:keep_total]
    kept = np.bincount(layer[idx], minlength=len(n))
    return n - kept


@register_allocator("global")
def global_magnitude(problem: AllocationProblem) -> np.ndarray:
    """One |w| threshold across all layers."""
    return global_top_k([np.abs(k) for k in problem.require_kernels("global")], problem)


@register_allocator("lamp")
def lamp(problem: AllocationProblem) -> np.ndarray:
    """LAMP scores, one global threshold."""
    return global_top_k([lamp_scores(k) for k in problem.require_kernels("lamp")], problem)


@register_allocator("importance", needs_scores=True)
def importance(problem: AllocationProblem) -> np.ndarray:
    """LAMP scores weighted by (importance / max importance) ** gamma, one global threshold."""
    scores = problem.require_scores("importance")
    # a negative exponent would invert the importances (keep the least important layers), NaN would void the threshold
    gamma = number(problem.options.get("gamma", 1.0), "allocation_kwargs['gamma']", minimum=0.0)
    weight = np.power(np.maximum(scores, 1e-12) / max(float(scores.max()), 1e-12), gamma)
    kernels = problem.require_kernels("importance")
    return global_top_k([lamp_scores(k) * w for k, w in zip(kernels, weight)], problem)


@register_group_keys("global")
def global_groups(scores: list[np.ndarray], importances: np.ndarray, gamma: float = 1.0) -> list[np.ndarray]:
    """One threshold on the raw channel scores across groups."""
    return [np.asarray(s, dtype=np.float64) for s in scores]


@register_group_keys("lamp")
def lamp_groups(scores: list[np.ndarray], importances: np.ndarray, gamma: float = 1.0) -> list[np.ndarray]:
    """LAMP scores of the channels within each group (on the channel scores), one threshold."""
    return [lamp_scores(np.asarray(s, dtype=np.float64)) for s in scores]


@register_group_keys("importance")
def importance_groups(scores: list[np.ndarray], importances: np.ndarray, gamma: float = 1.0) -> list[np.ndarray]:
    """Rank keys ``(i + 1) / n`` times ``w_g = (I_g / max I) ** gamma``, one threshold ``t``.

    Group ``g`` loses the fraction ``min(t / w_g, 1)`` of its channels: sparsity
    inversely proportional to importance; equal importances give ``uniform``.
    The weight form uses LAMP keys; on channel groups LAMP keys times ``w_g``
    emptied whole stages (max-normalised channel scores sit in a narrow band),
    so the group form weights the rank keys instead.
    """
    from tfprune.allocation.uniform import rank_keys

    imp = np.asarray(importances, dtype=np.float64)
    if imp.shape != (len(scores),):
        raise ValueError(f"allocation='importance' needs one importance per group: got {imp.shape[0] if imp.ndim else 0} for {len(scores)} groups")
    if not np.isfinite(imp).all() or (imp < 0).any():
        raise ValueError(f"group importances must be finite and >= 0, got {imp.tolist()}")
    weight = (imp / imp.max()) ** float(gamma) if imp.max() > 0 else np.ones_like(imp)
    weight = np.maximum(weight, 1e-12)  # a zero importance: removed first, but its min_channels stay
    return [rank_keys(s) * w for s, w in zip(scores, weight)]
