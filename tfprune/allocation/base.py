"""Allocation: per-layer sparsity targets under one total budget (numpy only).

Units: ``sparsity`` = fraction of a layer's weights **removed**; ``density``
= fraction kept = 1 - sparsity. Counts are integers of weights.

The budget is exact: an allocator returns integer removal counts ``r_l`` with
``sum(r_l) == round(total_sparsity * N)`` where N counts every prunable
weight (excluded layers included), and ``0 <= r_l <= cap_l``. A layer's
target is then ``r_l / n_l``, which tfmot turns back into exactly
``n_l - r_l`` kept weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from tfprune.report import Report
from tfprune.validation import UnreachableTarget, check_int

__all__ = [
    "Allocation",
    "AllocationProblem",
    "allocate_sparsity",
    "register_allocator",
    "get_allocator",
    "list_allocators",
    "list_group_allocators",
    "group_keys",
    "register_group_keys",
    "fill_to_budget",
    "integerize",
]


@dataclass
class AllocationProblem:
    """What an allocator sees.

    Attributes:
      names: layer names, length L.
      n_params: int array (L,), weights per layer.
      budget: total number of weights to remove (exact).
      caps: int array (L,), the most weights each layer may lose (0 for excluded
        layers; at most ``n_l - min_keep_l``).
      min_keep: int array (L,), the fewest weights each layer keeps (>= 1).
      scores: optional float array (L,) of layer importance (higher = keep more).
      kernels: optional list of L weight arrays (for magnitude-based allocators).
      options: allocator-specific keyword arguments.
    """

    names: list[str]
    n_params: np.ndarray
    budget: int
    caps: np.ndarray
    min_keep: np.ndarray
    scores: np.ndarray | None = None
    kernels: list[np.ndarray] | None = None
    options: dict = field(default_factory=dict)
    shapes: list[tuple[int, ...]] | None = None
    layer_types: list[str] | None = None

    def fan_sums(self) -> np.ndarray:
        """F + O per layer, from the kernels reshaped to (fan_in, fan_out) (needs shapes)."""
        from tfprune.importance.base import kernel_matrix

        if self.shapes is None:
            raise ValueError("this allocator needs layer shapes: pass a model or its prunable_layers(), not counts")
        types = self.layer_types or [""] * len(self.shapes)
        out = []
        for shape, t in zip(self.shapes, types):
            m = kernel_matrix(np.empty(shape, dtype=np.float32), t)
            out.append(m.shape[0] + m.shape[1])
        return np.array(out, dtype=np.float64)

    @property
    def total_sparsity(self) -> float:
        return self.budget / float(self.n_params.sum())

    def require_kernels(self, method: str) -> list[np.ndarray]:
        if self.kernels is None:
            raise ValueError(f"allocator {method!r} needs the layers' weights: pass a model or its prunable_layers(), not counts")
        return self.kernels

    def require_scores(self, method: str) -> np.ndarray:
        if self.scores is None:
            raise ValueError(f"allocator {method!r} needs per-layer importance `scores` (one per layer)")
        return self.scores


@dataclass
class Allocation(Report):
    """Per-layer targets and the exact totals they imply.

    Attributes:
      method: name of the allocator that produced it.
      requested: the requested total sparsity (fraction removed).
      n_params: weights per layer, by name.
      removed: weights removed per layer, by name (integers).
    """

    method: str
    requested: float
    n_params: dict[str, int]
    removed: dict[str, int]
    scores: dict[str, float] | None = None

    @property
    def targets(self) -> dict[str, float]:
        """Per-layer sparsity (fraction removed), by name."""
        return {k: self.removed[k] / self.n_params[k] for k in self.n_params}

    @property
    def total_sparsity(self) -> float:
        """Removed weights / all prunable weights, counted exactly."""
        return sum(self.removed.values()) / float(sum(self.n_params.values()))

    def __getitem__(self, name: str) -> float:
        return self.targets[name]

    def _blocks(self) -> list:
        from tfprune.report import Table

        rows = [[k, n, self.removed[k], self.removed[k] / n] for k, n in self.n_params.items()]
        return [f"allocation: {self.method}, requested {self.requested:.4f}, achieved {self.total_sparsity:.6f}",
                Table(["layer", "params", "removed", "sparsity"], rows)]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "requested": self.requested,
            "total_sparsity": self.total_sparsity,
            "layers": {k: {"n_params": n, "removed": self.removed[k], "sparsity": self.removed[k] / n} for k, n in self.n_params.items()},
        }


AllocatorFn = Callable[[AllocationProblem], np.ndarray]
_ALLOCATORS: dict[str, AllocatorFn] = {}
_NEEDS_SCORES: set[str] = set()


def register_allocator(name: str, needs_scores: bool = False) -> Callable[[AllocatorFn], AllocatorFn]:
    """Decorator: register ``fn(problem) -> int array of removals`` under ``name``.

    ``needs_scores``: the allocator reads per-layer importance (``problem.scores``).
    """

    def deco(fn: AllocatorFn) -> AllocatorFn:
        _ALLOCATORS[name] = fn
        if needs_scores:
            _NEEDS_SCORES.add(name)
        return fn

    return deco


GroupKeysFn = Callable[[list[np.ndarray], np.ndarray, float], list[np.ndarray]]
_GROUP_KEYS: dict[str, GroupKeysFn] = {}


def register_group_keys(name: str) -> Callable[[GroupKeysFn], GroupKeysFn]:
    """Decorator: the channel-group form of the registered allocator ``name``.

    ``fn(scores, importances, gamma) -> keys``: ``scores`` one array (C_g,) of
    channel importances per group (higher = keep), ``importances`` (G,) the
    groups' importances (ones when the allocator ignores them); returns one
    removal key per channel (lower = removed first), on one scale across
    groups: the planner removes the channels with the lowest keys until the
    MACs/params budget is met. The same name means the same rule at both
    granularities: the layer form allocates weights, this form channels.
    """

    def deco(fn: GroupKeysFn) -> GroupKeysFn:
        if name not in _ALLOCATORS:
            raise ValueError(f"register the allocator {name!r} (its layer form) before its channel-group form")
        _GROUP_KEYS[name] = fn
        return fn

    return deco


def group_keys(name: str) -> GroupKeysFn:
    """The channel-group form of allocator ``name`` (see `register_group_keys`)."""
    get_allocator(name)
    if name not in _GROUP_KEYS:
        raise ValueError(f"allocation {name!r} allocates weights only; for channel groups choose one of {list_group_allocators()}")
    return _GROUP_KEYS[name]


def list_group_allocators() -> list[str]:
    """Allocators that also plan channel groups."""
    return sorted(_GROUP_KEYS)


def get_allocator(name: str) -> AllocatorFn:
    """The registered allocator ``name`` (its layer form); a clear error naming the valid ones otherwise."""
    if not isinstance(name, str) or name not in _ALLOCATORS:
        raise ValueError(f"unknown allocation {name!r}; valid: {list_allocators()}. Fix: pass one of those, or register yours")
    return _ALLOCATORS[name]


def allocator_needs_scores(name: str) -> bool:
    """True when allocator ``name`` uses per-layer importance scores."""
    get_allocator(name)
    return name in _NEEDS_SCORES


def list_allocators() -> list[str]:
    """Names of the registered allocators (`list_group_allocators` for those that also plan channel groups)."""
    return sorted(_ALLOCATORS)


# ------------------------------------------------------------------ helpers
def integerize(real: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """Round real removals to integers summing exactly to ``budget`` within ``[0, caps]``.

    Floors every entry, then hands the missing units to the largest
    fractional parts (ties to the lower index), never past a cap. Each
    result differs from ``clip(real, 0, caps)`` by less than one weight when
    ``sum(clip(real)) == budget``.
    """
    real = np.clip(np.asarray(real, dtype=np.float64), 0, caps)
    out = np.minimum(np.floor(real + 1e-9).astype(np.int64), caps)
    missing = int(budget - out.sum())
    frac = real - out
    order = np.lexsort((np.arange(len(real)), -frac))
    while missing > 0:
        progressed = False
        for i in order:
            if missing == 0:
                break
            if out[i] < caps[i]:
                out[i] += 1
                missing -= 1
                progressed = True
        if not progressed:
            raise ValueError("budget exceeds the layers' caps")
    while missing < 0:
        progressed = False
        for i in order[::-1]:
            if missing == 0:
                break
            if out[i] > 0:
                out[i] -= 1
                missing += 1
                progressed = True
        if not progressed:
            raise ValueError("negative budget")
    return out


def fill_to_budget(base: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """Water-filling: removals ``min(t * base, caps)`` with ``t`` chosen to meet ``budget``.

    ``base`` (L,) >= 0 gives each layer's share per unit of ``t``; layers that
    hit their cap pass the rest of the budget to the others. Returns exact
    integer removals (see `integerize`).
    """
    base = np.asarray(base, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    if budget > caps.sum():
        raise UnreachableTarget("budget exceeds the layers' caps")
    if budget == 0:
        return np.zeros_like(caps)
    active = (base > 0) & (caps > 0)
    if not active.any() or np.minimum(np.where(active, np.inf, 0), caps).sum() < budget:
        # Zero-share layers cannot take anything: fall back to proportional to caps.
        base = np.where(caps > 0, np.maximum(base, 1e-12), 0)
    lo, hi = 0.0, 1.0
    while np.minimum(hi * base, caps).sum() < budget:
        hi *= 2.0
        if hi > 1e300:
            break
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(mid * base, caps).sum() < budget:
            lo = mid
        else:
            hi = mid
    real = np.minimum(hi * base, caps)
    # Scale tiny overshoot so the real values sum to the budget before rounding.
    real = real * (budget / real.sum()) if real.sum() > 0 else real
    return integerize(np.minimum(real, caps), caps, budget)


# --------------------------------------------------------------- front door
def _layer_arrays(layers: Any) -> tuple[list[str], np.ndarray, list[np.ndarray] | None, list | None, list | None]:
    if isinstance(layers, Mapping):
        names = [str(k) for k in layers]
        n = np.array([int(v) for v in layers.values()], dtype=np.int64)
        return names, n, None, None, None
    if hasattr(layers, "layers") and hasattr(layers, "weights"):  # a keras model
        from tfprune.inventory.layers import prunable_layers

        layers = prunable_layers(layers)
    items = list(layers)
    if items and hasattr(items[0], "n_params"):
        names = [p.name for p in items]
        n = np.array([p.n_params for p in items], dtype=np.int64)
        try:
            kernels = [p.kernel() for p in items]
        except (AttributeError, TypeError):  # entries without a Keras layer: counts and shapes only
            kernels = None
        return names, n, kernels, [tuple(p.shape) for p in items], [p.layer_type for p in items]
    raise TypeError("`layers` must be a model, tfprune.prunable_layers(model), or a dict {name: n_params}")


def allocate_sparsity(
    layers: Any,
    sparsity: float,
    allocation: str = "uniform",
    scores: Mapping[str, float] | Iterable[float] | None = None,
    min_density: float = 0.0,
    max_sparsity: float | Mapping[str, float] | None = None,
    exclude: Iterable[str] | None = None,
    min_keep: int = 1,
    **options: Any,
) -> Allocation:
    """Split one total sparsity into per-layer targets.

    Args:
      layers: a tf-keras model, ``tfprune.prunable_layers(model)``, or a dict
        ``{name: n_params}`` (count-only allocators).
      sparsity: fraction of **all** prunable weights to remove, [0, 1).
      allocation: a registered allocator (see `list_allocators`).
      scores: per-layer importance (higher = more important = keep more), as a
        dict by name or a sequence in layer order; for score-based methods.
      min_density: every layer keeps at least this fraction of its weights.
      max_sparsity: cap on any layer's sparsity (a float, or a dict by name).
      exclude: names of layers that lose nothing (they still count in N).
      min_keep: every layer keeps at least this many weights (>= 1).
      **options: passed to the allocator.

    Returns:
      An `Allocation` whose removals sum exactly to ``round(sparsity * N)``.

    This splits weights only; `tfprune.plan` adds importance scoring,
    granularity units and output-layer rules on top, and is what the
    callback, ``analyze``, ``obs.prune`` and the CLI use.
    """
    from tfprune.validation import check_sparsity

    get_allocator(allocation)
    total_sparsity = check_sparsity(sparsity, "sparsity")
    names, n, kernels, shapes, types = _layer_arrays(layers)
    if len(names) == 0:
        raise ValueError("no prunable layers to allocate over")
    if (n <= 0).any():
        raise ValueError(f"every layer needs a positive weight count, got {dict(zip(names, n.tolist()))}")
    if not 0.0 <= float(min_density) < 1.0 or math.isnan(float(min_density)):
        raise ValueError(f"min_density must be in [0, 1) (fraction kept), got {min_density!r}. Fix: e.g. min_density=0.01")
    min_keep = check_int(min_keep, "min_keep (a layer with no weight left collapses)", 1)
    keep = np.maximum(np.ceil(float(min_density) * n - 1e-9).astype(np.int64), int(min_keep))
    keep = np.minimum(keep, n)
    caps = n - keep
    if max_sparsity is not None:
        if isinstance(max_sparsity, Mapping):
            unknown = set(max_sparsity) - set(names)
            if unknown:
                raise ValueError(f"max_sparsity names unknown layer(s) {sorted(unknown)}; layers: {names}. Fix: use those names")
            ms = np.array([check_sparsity(max_sparsity.get(k, 1 - 1e-12), f"max_sparsity[{k!r}]") if k in max_sparsity else 1.0 for k in names])
        else:
            ms = np.full(len(names), check_sparsity(max_sparsity, "max_sparsity"))
        caps = np.minimum(caps, np.floor(ms * n + 1e-9).astype(np.int64))
    if exclude is not None:
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        unknown = set(exclude) - set(names)
        if unknown:
            raise ValueError(f"exclude names unknown layer(s) {sorted(unknown)}; layers: {names}. Fix: use those names")
        caps = np.where(np.isin(names, exclude), 0, caps)
    total_n = int(n.sum())
    budget = int(round(total_sparsity * total_n))
    if budget > caps.sum():
        raise UnreachableTarget(
            f"sparsity={total_sparsity} asks to remove {budget} of {total_n} weights, but the bounds "
            f"(min_density, max_sparsity, exclude, min_keep) allow at most {int(caps.sum())} "
            f"(total sparsity {caps.sum() / total_n:.4f}). Fix: lower sparsity or loosen the bounds."
        )
    score_arr = None
    if scores is not None:
        if isinstance(scores, Mapping):
            missing = [k for k in names if k not in scores]
            if missing:
                raise ValueError(f"scores lack layer(s) {missing}")
            score_arr = np.array([float(scores[k]) for k in names])
        else:
            score_arr = np.asarray(list(scores), dtype=np.float64)
            if score_arr.shape != (len(names),):
                raise ValueError(f"scores must have one value per layer ({len(names)}), got shape {score_arr.shape}")
        if not np.isfinite(score_arr).all():
            raise ValueError(f"scores must be finite, got {score_arr.tolist()}")
    problem = AllocationProblem(names, n, budget, caps, keep, score_arr, kernels, dict(options), shapes, types)
    removed = np.asarray(get_allocator(allocation)(problem), dtype=np.int64)
    if removed.shape != n.shape or removed.sum() != budget or (removed < 0).any() or (removed > caps).any():
        raise RuntimeError(f"allocator {allocation!r} broke the budget contract: {removed.tolist()} vs budget {budget}, caps {caps.tolist()}")
    return Allocation(
        method=allocation,
        requested=total_sparsity,
        n_params=dict(zip(names, n.tolist())),
        removed=dict(zip(names, removed.tolist())),
        scores=None if score_arr is None else dict(zip(names, score_arr.tolist())),
    )
