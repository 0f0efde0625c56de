"""``global_ratio``: one removal ratio for the whole model (our rule; the paper's is not public).

The Global removal ratio paper (2023) prunes a whole network with a single
ratio, no per-layer constraints and no prior knowledge of the architecture,
and reads each layer's importance off the per-layer removal pattern that
results. Its ranking rule is not retrievable here, so the rule below is ours:
every weight gets a score that is comparable across layers, and the
``budget`` lowest scores are removed (one threshold, `global_top_k`).

Normalisations (``normalization=``), each monotone in |w| within a layer so
the layer's own mask (smallest |w| first) is what the count implies:

* ``"lamp"`` (default): the share of the energy the layer still keeps that
  this weight carries, ``w_u^2 / sum_{|w_v| >= |w_u|} w_v^2`` (LAMP's score,
  Lee et al. 2021, so the default allocates exactly as ``lamp``). It is the
  only normalisation here that depends on how many weights a layer keeps
  (for equal magnitudes it is 1/k), so a small layer is not emptied; one
  threshold on it maximises the product of the layers' kept energy fractions
  (`tfprune.allocation.output_error` with H = I).
* ``"energy"`` (ours): the share of the layer's energy removed if this weight
  and every smaller one go, ``sum_{|w_v| <= |w_u|} w_v^2 / sum_v w_v^2``:
  one threshold = every layer loses the same share of its energy.
* ``"raw"``: |w| (the same ranking as ``global``).
* ``"rms"``: |w| / rms(W_l) (the earlier default).
* ``"std"``: per-layer standardised, (|w| - mean |w|) / std |w|.
* ``"l2"``: |w| / ||W_l||_2 (favours small layers so much that a large layer
  can keep a single weight).

Why ``lamp`` is the default (benchmarks/global_ratio.py, results in
benchmarks/results/global_ratio.md): ``rms``, ``std`` and ``energy`` see only
the *shape* of a layer's magnitude distribution, which is much the same in
every layer, so their patterns are close to uniform and they collapse at
0.988 as uniform does; ``raw`` sees only the scale, so it empties the layers
whose weights are small (whole ResNet-20 stages); ``lamp`` trained best of the
one-threshold rules at 0.95 and 0.988 on LeNet-5 and LeNet-300-100.

Units: scores are per weight; removals are integer weight counts with the
exact budget and every layer's ``min_keep`` floor (`global_top_k`).
"""

from __future__ import annotations

import numpy as np

from tfprune.allocation.base import AllocationProblem, register_allocator, register_group_keys
from tfprune.allocation.magnitude_rules import global_top_k, lamp_scores

__all__ = ["NORMALIZATIONS", "normalized_scores", "energy_removed_scores"]

NORMALIZATIONS = ("lamp", "energy", "raw", "rms", "std", "l2")
DEFAULT_NORMALIZATION = "lamp"


def energy_removed_scores(weights: np.ndarray) -> np.ndarray:
    """Per entry (same shape): share of the layer's energy removed with it and all smaller |w|, in [0, 1].

    Ties in |w| are ordered by position (stable), so scores are distinct for
    distinct entries; the largest weight scores 1 (0/0 for an all-zero layer
    gives 0 everywhere).
    """
    w2 = np.square(np.asarray(weights, dtype=np.float64)).ravel()
    order = np.argsort(w2, kind="stable")
    cum = np.cumsum(w2[order])
    total = cum[-1] if cum.size else 0.0
    out = np.empty_like(w2)
    out[order] = cum / total if total > 0 else 0.0
    return out.reshape(np.shape(weights))


def normalized_scores(weights: np.ndarray, normalization: str = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Cross-layer comparable score of every weight (same shape), higher = keep; see the module doc."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    a = np.abs(np.asarray(weights, dtype=np.float64))
    if normalization == "energy":
        return energy_removed_scores(a)
    if normalization == "lamp":
        return lamp_scores(a)
    if normalization == "raw":
        return a
    if normalization == "std":
        sd = float(a.std())
        return (a - a.mean()) / (sd if sd > 0 else 1.0)
    scale = float(np.sqrt(np.sum(np.square(a))))
    if normalization == "rms":
        scale /= np.sqrt(max(a.size, 1))
    return a / (scale if scale > 0 else 1.0)


@register_allocator("global_ratio")
def global_ratio(problem: AllocationProblem) -> np.ndarray:
    """One global threshold on per-layer normalised scores (``normalization=``, default ``"lamp"``)."""
    norm = problem.options.get("normalization", DEFAULT_NORMALIZATION)
    if norm not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {norm!r}")
    return global_top_k([normalized_scores(k, norm) for k in problem.require_kernels("global_ratio")], problem)


def max_normalised(scores: np.ndarray) -> np.ndarray:
    """``s / max(s)`` (all ones for an all-zero group: nothing to tell its channels apart)."""
    s = np.asarray(scores, dtype=np.float64)
    top = float(s.max()) if s.size else 0.0
    return s / top if top > 0 else np.ones_like(s)


@register_group_keys("global_ratio")
def global_ratio_groups(scores: list[np.ndarray], importances: np.ndarray, gamma: float = 1.0) -> list[np.ndarray]:
    """One threshold on channel scores normalised by their group's largest (``s / max(s_g)``)."""
    return [max_normalised(s) for s in scores]
