"""``output_error``: per-layer removals that minimise a summed output-error cost (ours).

Every layer is pruned in its own mask order (smallest |w| first), so a
removal count ``r`` fixes which weights go. Its cost is read off a
per-layer curve, the relative output error of the layer alone,
``e_l(r) = ||X D_r||^2 / ||X W||^2 = tr(D_r^T H D_r) / tr(W^T H W)``,
with D_r the r removed weights (the rest zero), W the kernel as a
(fan_in, fan_out) matrix and ``H = X^T X / n`` the second moment of the
layer's input (`tfprune.obs.layer_hessians`; a bias row/column is dropped).
Without ``hessians`` H = I: e_l is the share of the layer's weight energy
removed.

The cost of a layer is ``-log(1 - e_l)`` (``objective="log"``: the product
of the layers' kept output-energy fractions is maximised; with H = I and
every count on the curve this is exactly LAMP's ranking) or ``e_l``
(``objective="sum"``: the summed relative output errors). The minimum of
``sum_l cost_l(r_l)`` subject to ``sum_l r_l = budget`` and ``0 <= r_l <=
cap_l`` is found exactly on the curves' lower convex hulls (linear between
the ``grid`` sampled counts): hull segments are taken cheapest slope first
(`min_cost_removals`).

Options: ``hessians`` (dict by layer name or list in layer order, each (F, F)
or (F+1, F+1)), ``objective``, ``grid`` (counts sampled per layer, or
``"full"`` for every count).

Tried and dropped: the error left after the Optimal Brain Surgeon
compensation of each removed weight (``sum w_q^2 / [H^-1]_ii``, interactions
ignored) puts nearly all of LeNet-5's fc1 at 100% sparsity (its correlated
inputs make each single removal look free), so it is not offered.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfprune.allocation.base import AllocationProblem, register_allocator

__all__ = ["removal_grid", "error_curve", "lower_hull", "min_cost_removals"]

OBJECTIVES = ("log", "sum")


def removal_grid(n: int, cap: int, points: int | str = 48) -> np.ndarray:
    """Sorted unique removal counts in [0, cap] to sample a layer's curve at.

    Half the points are even in the count, half even in log(kept weights)
    (dense where few weights are left, where the cost bends); 0 and ``cap``
    are always included. ``points="full"``: every count 0..cap.
    """
    n, cap = int(n), int(cap)
    if cap < 0 or cap > n:
        raise ValueError(f"cap must be in [0, n={n}], got {cap}")
    if points == "full":
        return np.arange(cap + 1, dtype=np.int64)
    if not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"grid must be an int >= 2 or 'full', got {points!r}")
    lin = np.linspace(0, cap, int(points) // 2 + 1)
    kept = np.geomspace(n, max(n - cap, 1), int(points) - int(points) // 2 + 1)
    r = np.concatenate([lin, n - kept, [0, cap]])
    return np.unique(np.clip(np.round(r), 0, cap).astype(np.int64))


def _as_matrix(kernel: np.ndarray, layer_type: str) -> np.ndarray:
    from tfprune.importance.base import kernel_matrix

    return kernel_matrix(np.asarray(kernel, dtype=np.float64), layer_type)


def error_curve(W: np.ndarray, counts: np.ndarray, H: np.ndarray | None = None) -> np.ndarray:
    """Relative error e(r) of removing the r smallest-|w| entries of W (F, O), for each r in ``counts``.

    ``e(r) = tr(D_r^T H D_r) / tr(W^T H W)`` (H = I when None); returns a
    float array like ``counts``. Ties in |w| go by position (stable), as in
    `global_top_k`.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a (fan_in, fan_out) matrix, got shape {W.shape}")
    F, n_out = W.shape
    counts = np.asarray(counts, dtype=np.int64)
    if H is not None:
        H = np.asarray(H, dtype=np.float64)
        if H.shape == (F + 1, F + 1):
            H = H[:F, :F]
        if H.shape != (F, F):
            raise ValueError(f"hessian must be ({F}, {F}) or ({F + 1}, {F + 1}) for a kernel with fan_in {F}, got {H.shape}")
    flat = W.ravel()
    order = np.argsort(np.abs(flat), kind="stable")
    rows = order // n_out
    if H is None:  # no cross terms: the removed share of the weight energy
        total = float(np.sum(flat * flat))
        cum = np.concatenate([[0.0], np.cumsum(flat[order] ** 2)])
        return cum[counts] / total if total > 0 else np.zeros(len(counts))
    total = float(np.sum(W * (H @ W)))
    if total <= 0:
        return np.zeros(len(counts))
    # cross terms: D grows along the order; HD = H @ D is updated by the new
    # entries only (a sparse product: m new entries cost m * F), so a whole curve costs about n * F.
    from scipy import sparse

    cols = order % n_out
    D = np.zeros_like(W)
    HD = np.zeros_like(W)
    out = np.empty(len(counts))
    done = 0
    for k, r in enumerate(counts):
        if r > done:
            i, j, v = rows[done:r], cols[done:r], flat[order[done:r]]
            D[i, j] = v
            delta_t = sparse.csr_matrix((v, (j, i)), shape=(n_out, F))  # delta^T, (n_out, F)
            HD += np.asarray(delta_t @ H).T  # H symmetric: (delta^T H)^T = H delta
            done = int(r)
        out[k] = float(np.sum(D * HD)) / total if done else 0.0
    return out


def lower_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points (x increasing, distinct), first and last included."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the segment a -> i
            if (y[b] - y[a]) * (x[i] - x[a]) >= (y[i] - y[a]) * (x[b] - x[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.array(hull, dtype=np.int64)


def min_cost_removals(curves: Sequence[tuple[np.ndarray, np.ndarray]], budget: int) -> np.ndarray:
    """Integer removals (L,) with sum == budget minimising the summed piecewise-linear convexified costs.

    ``curves[l] = (counts, costs)``: counts increasing from 0 to the layer's
    cap, costs at those counts. Each layer's lower hull is walked in segments;
    all segments are taken cheapest slope first (ties: lower layer, then lower
    count), the last one partly, so the result is exact in the budget and
    optimal for the convexified costs.
    """
    caps = np.array([int(c[0][-1]) for c in curves], dtype=np.int64)
    if budget < 0 or budget > caps.sum():
        raise ValueError(f"budget {budget} is outside [0, {int(caps.sum())}] (the layers' caps)")
    segs = []  # (slope, layer, start count, length)
    for li, (x, y) in enumerate(curves):
        x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=np.float64)
        if x[0] != 0 or np.any(np.diff(x) <= 0):
            raise ValueError("each curve's counts must start at 0 and increase")
        h = lower_hull(x.astype(np.float64), y)
        for a, b in zip(h[:-1], h[1:]):
            segs.append(((y[b] - y[a]) / (x[b] - x[a]), li, int(x[a]), int(x[b] - x[a])))
    segs.sort(key=lambda s: (s[0], s[1], s[2]))
    out = np.zeros(len(curves), dtype=np.int64)
    left = int(budget)
    for _, li, _, length in segs:
        if left == 0:
            break
        take = min(length, left)
        out[li] += take
        left -= take
    return out


def _hessian_list(hessians: Any, names: list[str]) -> list[np.ndarray | None]:
    if hessians is None:
        return [None] * len(names)
    if isinstance(hessians, Mapping):
        return [None if hessians.get(n) is None else np.asarray(hessians[n]) for n in names]
    hs = list(hessians)
    if len(hs) != len(names):
        raise ValueError(f"hessians: one per layer ({len(names)}) in layer order, or a dict by name; got {len(hs)}")
    return [None if h is None else np.asarray(h) for h in hs]


@register_allocator("output_error")
def output_error(problem: AllocationProblem) -> np.ndarray:
    """Minimise sum_l cost(e_l(r_l)) under the exact budget (see the module doc)."""
    opts = dict(problem.options)
    objective = opts.pop("objective", "log")
    grid = opts.pop("grid", 48)
    hessians = _hessian_list(opts.pop("hessians", None), problem.names)
    if opts:
        raise ValueError(f"output_error: unknown option(s) {sorted(opts)}; valid: hessians, objective, grid")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    kernels = problem.require_kernels("output_error")
    types = problem.layer_types or [""] * len(kernels)
    curves = []
    for k, t, H, n, cap in zip(kernels, types, hessians, problem.n_params, problem.caps):
        W = _as_matrix(k, t)
        counts = removal_grid(int(n), int(cap), grid)
        e = error_curve(W, counts, H)
        if objective == "log":
            cost = -np.log1p(-np.minimum(e, 1.0 - 1e-12))
        else:
            cost = e
        curves.append((counts, cost))
    return min_cost_removals(curves, int(problem.budget))
