"""`Plan`: how many units each *owner* loses under one budget, for every granularity.

An owner is a layer (granularities ``unstructured``, ``block``, ``N:M``: its
units are weights, blocks or N:M groups) or a coupled channel group
(``channel``: its units are channels, removed together from every layer of
the group, see `tfprune.channel_graph`). `tfprune.plan` makes one; the
`tfprune.Pruning` callback, `tfprune.analyze`, `tfprune.obs.prune` and the
structured one-shot path read it.

Units: ``requested`` and ``achieved`` are fractions **removed** of the
budget: all prunable kernel weights (``budget="weights"``), the model's MACs
(``"macs"``) or its parameters (``"params"``). ``targets[owner]`` is the
fraction of the owner's units removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tfprune.report import Report, Table

__all__ = ["Plan", "GroupPlan"]


@dataclass
class GroupPlan:
    """One prunable channel group of a channel `Plan`: its channels, how many go, and its importance."""

    group: str
    channels: int
    removed: int
    importance: float

    @property
    def kept(self) -> int:
        return self.channels - self.removed


@dataclass
class Plan(Report):
    """Per-owner targets for one total, and how they were reached.

    Attributes:
      requested: the requested total, fraction of ``budget`` removed.
      granularity: the mask rule the targets are in units of.
      targets: per owner, fraction of its units removed.
      n_params: per layer, kernel weights (weight granularities).
      removed: per layer, kernel weights the masks will remove (exact; weight granularities).
      n_units, unit_weights: per owner, units and weights per unit.
      excluded: owners kept whole, with the reason (excluded layers; frozen channel groups).
      importance: the `ImportanceScores` used (None for score-free allocators).
      allocation: the `Allocation` in weights before rounding to units (weight granularities).
      seconds: time to score and allocate (channel plans: and to shrink for the measurement).
      budget: ``"weights"``, ``"macs"`` or ``"params"``.
      allocator_name: the allocator's registered name.
      channels: per channel group, the removed channel indices in removal order (lowest key first).
      group_importance: per channel group, the importance the allocation weighed it by (1 when unweighted).
      measured: the achieved total measured on the shrunk model (channel plans), else None.
      macs_before, macs_after, params_before, params_after: `tfprune.profile` totals of the
        model and of the shrunk model (channel plans).
      importance_name, layer_importance: the channel scorer and the layer scorer behind group importance.
      tolerance, iterations, notes: the channel plan's accepted miss, shrinks it took, and the scorer's notes.
      model_name: the planned model's name.
    """

    requested: float
    granularity: str
    targets: dict[str, float]
    n_params: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    n_units: dict[str, int] = field(default_factory=dict)
    unit_weights: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    importance: Any = None
    allocation: Any = None
    seconds: float = 0.0
    budget: str = "weights"
    allocator_name: str | None = None
    channels: dict[str, list[int]] = field(default_factory=dict)
    group_importance: dict[str, float] = field(default_factory=dict)
    measured: float | None = None
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0
    importance_name: str = ""
    layer_importance: str = ""
    tolerance: float = 0.0
    iterations: int = 0
    notes: list[str] = field(default_factory=list)
    model_name: str = ""

    # ------------------------------------------------------------ totals
    @property
    def sparsity(self) -> float:
        """The requested fraction of prunable weights removed (weight plans only)."""
        if self.budget != "weights":
            raise AttributeError(f"this plan's budget is {self.budget!r}, not weights: read plan.requested")
        return self.requested

    @property
    def achieved(self) -> float:
        """The planned total, fraction of ``budget`` removed (channel plans: measured on the shrunk model)."""
        if self.measured is not None:
            return self.measured
        return sum(self.removed.values()) / float(max(sum(self.n_params.values()), 1))

    @property
    def allocator(self) -> str | None:
        if self.allocator_name is not None:
            return self.allocator_name
        return None if self.allocation is None else self.allocation.method

    @property
    def is_channel(self) -> bool:
        return self.granularity == "channel"

    def weight_sparsity(self) -> dict[str, float]:
        """Per layer, fraction of its weights removed (weight plans)."""
        return {k: self.removed[k] / self.n_params[k] for k in self.n_params}

    def __getitem__(self, name: str) -> float:
        return self.targets[name]

    # ------------------------------------------------------------ channel views
    @property
    def units_removed(self) -> dict[str, int]:
        """Per owner, whole units removed (channels for channel groups)."""
        if self.is_channel:
            return {g: len(c) for g, c in self.channels.items()}
        return {k: int(round(self.removed[k] / max(self.unit_weights.get(k, 1), 1))) for k in self.removed}

    @property
    def remove(self) -> dict[str, list[int]]:
        """``{group: sorted channel indices}`` for ``tfprune.shrink(model, remove=...)`` (channel plans)."""
        return {g: sorted(c) for g, c in self.channels.items() if c}

    @property
    def groups(self) -> list[GroupPlan]:
        """One `GroupPlan` per prunable channel group (channel plans)."""
        return [GroupPlan(g, self.n_units[g], len(self.channels.get(g, [])), self.group_importance.get(g, 1.0))
                for g in self.n_units if g not in self.excluded]

    @property
    def frozen(self) -> dict[str, str]:
        """Channel groups that cannot be pruned, with the reason (channel plans)."""
        return dict(self.excluded) if self.is_channel else {}

    @property
    def macs_removed(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def params_removed(self) -> float:
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    # ------------------------------------------------------------ report
    def _blocks(self) -> list:
        if self.is_channel:
            return self._channel_blocks()
        head = (
            f"plan: sparsity {self.requested:.4f} requested, {self.achieved:.4f} planned, granularity {self.granularity}, "
            f"importance {self.importance.method if self.importance else '-'}, allocation {self.allocator or '-'}"
        )
        rows = []
        for k, n in self.n_params.items():
            imp = self.importance.scores.get(k) if self.importance else None
            rows.append([k, n, imp, self.n_units.get(k), self.targets[k], self.removed[k] / n, self.excluded.get(k, "")])
        return [head, Table(["layer", "weights", "importance", "units", "target (units)", "sparsity (weights)", "note"], rows), *self.notes]

    def _channel_blocks(self) -> list:
        miss = abs(self.achieved - self.requested) > self.tolerance
        out: list = [
            f"channel plan for {self.model_name!r}: {self.budget} removed {self.achieved:.3f} (requested {self.requested:.3f}"
            f"{', MISSED: see below' if miss else ''}); allocation {self.allocator!r}, channel scores {self.importance_name!r}"
            + (f", group importance {self.layer_importance!r}" if self.layer_importance else ""),
            Table(["", "before", "after", "removed"], [
                ["MACs", self.macs_before, self.macs_after, f"{self.macs_removed:.1%}"],
                ["params", self.params_before, self.params_after, f"{self.params_removed:.1%}"],
            ], "lrrr"),
            Table(["group", "channels", "removed", "kept", "importance"],
                  [[g.group, g.channels, g.removed, g.kept, g.importance] for g in self.groups], "lrrrr"),
        ]
        if self.excluded:
            out.append(f"{len(self.excluded)} frozen groups (never pruned): " + "; ".join(f"{k}: {v}" for k, v in list(self.excluded.items())[:8])
                       + (" ..." if len(self.excluded) > 8 else ""))
        out += self.notes
        if miss:
            out.append(f"the target was missed by more than {self.tolerance:.3f}: the prunable groups cannot reach it (frozen groups, "
                       "min_channels) or one channel step is larger than the tolerance. Fix: lower the target or min_channels")
        return out

    def _extra_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"achieved": self.achieved}
        if self.is_channel:
            out.update(macs_removed=self.macs_removed, params_removed=self.params_removed, remove=self.remove,
                       groups=[dict(group=g.group, channels=g.channels, removed=g.removed, importance=g.importance) for g in self.groups])
        return out
