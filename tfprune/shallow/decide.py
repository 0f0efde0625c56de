"""The Shallowing decision rule (numpy only; Chen & Zhao 2018).

Walk the probe points in graph order, remembering the probe accuracy of the
last **kept** point, A_prev. A removable unit whose gain A_l - A_prev is below
tau is removed (A_prev stays); any other point is kept (A_prev = A_l). Tau
and accuracies are in the same unit (fractions: tau = 0.005 is half a point).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["removals_for_tau", "tau_for_reduction"]


def removals_for_tau(acc: Sequence[float], removable: Sequence[bool], tau: float, start_acc: float | None = None) -> list[int]:
    """Indices of the points removed at threshold ``tau``.

    ``start_acc`` is A_prev before the first point (default: the first point
    is always kept as the reference when it is not removable, else chance 0).
    """
    acc = np.asarray(acc, dtype=np.float64)
    prev = -np.inf if start_acc is None else float(start_acc)
    out = []
    for i, (a, r) in enumerate(zip(acc, removable)):
        if r and prev > -np.inf and a - prev < tau:
            out.append(i)
        else:
            prev = a
    return out


def tau_for_reduction(acc: Sequence[float], removable: Sequence[bool], cost: Sequence[float], total_cost: float, target: float,
                      start_acc: float | None = None) -> float:
    """The smallest tau whose removals cut at least ``target`` (a fraction) of ``total_cost``.

    Tries every threshold where a decision can change; raises ValueError when
    even removing every removable unit falls short.
    """
    acc = np.asarray(acc, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if not 0 < target < 1:
        raise ValueError(f"target reduction must be in (0, 1), got {target}")
    gains = np.diff(np.concatenate([[acc[0] if start_acc is None else start_acc], acc]))
    cands = np.unique(np.concatenate([acc[:, None] - acc[None, :], gains[:, None]], axis=None))
    cands = np.sort(np.concatenate([cands + 1e-12, [np.inf]]))
    for tau in cands:
        removed = removals_for_tau(acc, removable, float(tau), start_acc)
        if cost[removed].sum() >= target * total_cost - 1e-9:
            return float(tau)
    raise ValueError(
        f"removing every removable unit saves {cost[np.asarray(removable, bool)].sum() / total_cost:.3f} of the cost, "
        f"less than the target {target}"
    )
