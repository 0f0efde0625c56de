"""`analyze`: per-layer importance, allocation, one-shot damage, and where the model is most compact.

"Where is the most compact representation" (How Compact?): for each layer
alone, the largest sparsity (on a grid) whose one-shot magnitude pruning
costs at most ``delta`` accuracy on the given data. Layers that tolerate
high sparsity are compact (redundant); layers that tolerate little are not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from tfprune._keras import check_model
from tfprune.allocation import allocate_sparsity
from tfprune.importance import score_layers
from tfprune.importance.sensitivity import calibration_arrays, layer_losses
from tfprune.layers import prunable_layers

__all__ = ["analyze", "AnalysisReport", "LayerAnalysis"]

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


@dataclass
class LayerAnalysis:
    name: str
    layer_type: str
    params: int
    importance: float
    allocated_sparsity: float
    one_shot_acc_drop: float | None = None
    max_sparsity_within_delta: float | None = None


@dataclass
class AnalysisReport:
    """Per-layer rows plus the settings used; ``table()``, ``to_dict()``, ``plot(path)``."""

    total_sparsity: float
    importance: str
    allocation: str
    delta: float
    dense_acc: float | None
    layers: list[LayerAnalysis] = field(default_factory=list)
    most_compact: str | None = None
    importance_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = f"analysis: importance {self.importance!r}, allocation {self.allocation!r}, total sparsity {self.total_sparsity}"
        if self.dense_acc is not None:
            head += f", dense accuracy {self.dense_acc:.4f}, delta {self.delta}"
        rows = [head, f"{'layer':<24}{'type':<12}{'params':>9}{'importance':>12}{'allocated':>11}{'1-shot drop':>13}{'max s <= delta':>16}"]
        for r in self.layers:
            drop = "" if r.one_shot_acc_drop is None else f"{r.one_shot_acc_drop:.4f}"
            ms = "" if r.max_sparsity_within_delta is None else f"{r.max_sparsity_within_delta:.3f}"
            rows.append(f"{r.name:<24}{r.layer_type:<12}{r.params:>9}{r.importance:>12.4f}{r.allocated_sparsity:>11.4f}{drop:>13}{ms:>16}")
        if self.most_compact:
            rows.append(f"most compact (tolerates the most sparsity alone): {self.most_compact}")
        return "\n".join(rows)

    __str__ = table

    def plot(self, path: str) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [r.name for r in self.layers]
        xs = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 3), 4))
        ax.bar(xs - 0.2, [r.allocated_sparsity for r in self.layers], 0.4, label=f"allocated ({self.allocation})")
        if all(r.max_sparsity_within_delta is not None for r in self.layers):
            ax.bar(xs + 0.2, [r.max_sparsity_within_delta for r in self.layers], 0.4, label=f"max alone, drop <= {self.delta}")
        imp = np.array([r.importance for r in self.layers])
        ax2 = ax.twinx()
        ax2.plot(xs, imp / max(imp.max(), 1e-12), "k.-", label="importance (rel.)")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("importance / max")
        ax.set_xticks(xs, names, rotation=45, ha="right")
        ax.set_ylabel("sparsity (fraction removed)")
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(f"total sparsity {self.total_sparsity}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def analyze(
    model: Any,
    data: Any = None,
    total_sparsity: float = 0.9,
    importance: str = "capacity",
    allocation: str = "importance",
    delta: float = 0.01,
    grid: Sequence[float] = DEFAULT_GRID,
    n_samples: int = 2000,
    progress: bool = True,
) -> AnalysisReport:
    """Analyse ``model`` layer by layer (nothing in ``model`` changes).

    Args:
      model: a tf-keras model (wrapped or not).
      data: ``(x, y)`` or tf.data for the one-shot columns (optional; without it
        only importance and allocation are reported).
      total_sparsity: the total target to allocate (fraction removed).
      importance, allocation: scorer and allocator names.
      delta: accuracy loss tolerated by the "most compact" search (absolute, 0.01 = 1 point).
      grid: sparsities tried for that search.
      n_samples: at most this many samples of ``data`` are used.
    """
    check_model(model)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (accuracy, absolute), got {delta!r}")
    inv = prunable_layers(model)
    if not len(inv):
        raise ValueError("model has no prunable layers")
    scores = score_layers(model, importance, data=data, progress=progress)
    alloc = allocate_sparsity(inv, total_sparsity, method=allocation, scores=scores.scores)
    report = AnalysisReport(total_sparsity, scores.method, allocation, delta, None, importance_seconds=scores.seconds)
    rows = {
        p.name: LayerAnalysis(p.name, p.layer_type, p.n_params, scores.scores[p.name], alloc.targets[p.name]) for p in inv
    }
    if data is not None:
        x, y = calibration_arrays(data, n_samples)
        names = list(rows)
        grid = sorted(float(g) for g in grid)
        dense_acc = None
        for name in names:
            _, _, dense_acc, accs = layer_losses(model, x, y, [name], rows[name].allocated_sparsity, progress=False)
            rows[name].one_shot_acc_drop = float(dense_acc - accs[0])
        curves = {}
        for s in (grid if not progress else __import__("tqdm.auto", fromlist=["tqdm"]).tqdm(grid, desc="compactness grid", leave=False)):
            _, _, dense_acc, accs = layer_losses(model, x, y, names, s, progress=False)
            for name, a in zip(names, accs):
                curves.setdefault(name, []).append((s, dense_acc - a))
        for name, pts in curves.items():
            ok = [s for s, drop in pts if drop <= delta]
            rows[name].max_sparsity_within_delta = max(ok) if ok else 0.0
        report.dense_acc = dense_acc
        report.most_compact = max(rows.values(), key=lambda r: (r.max_sparsity_within_delta or 0.0, r.params)).name
    report.layers = list(rows.values())
    return report
