"""`analyze`: per-layer importance, allocation, one-shot damage, and where the model is most compact.

"Where is the most compact representation" (How Compact?): for each layer
alone, the largest sparsity (on a grid) whose one-shot magnitude pruning
costs at most ``delta`` accuracy on the given data. Layers that tolerate
high sparsity are compact (redundant); layers that tolerate little are not.

The one-shot columns come from `tfprune.evaluate.OneShotEvaluator`: one
working copy, one traced forward pass, kernels assigned in place. The grid
is searched from the largest sparsity down and stops at the first one within
``delta``: the answer (the largest such sparsity) is the same as evaluating
the whole grid, with fewer evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from tfprune._keras import check_model, is_keras3_object
from tfprune.allocation import get_allocator
from tfprune.files import save_figure
from tfprune.importance import score_layers
from tfprune.inventory.layers import prunable_layers
from tfprune.planning import DEFAULT_ALLOCATION, DEFAULT_IMPORTANCE
from tfprune.report import Report, Table

__all__ = ["analyze", "AnalysisReport", "LayerAnalysis", "DEFAULT_GRID"]

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


@dataclass
class LayerAnalysis:
    """One prunable layer: importance, allocated sparsity and (with data) its one-shot damage alone.

    ``drop_curve`` (with ``analyze(..., curves=True)``): ``(sparsity, accuracy drop)`` at every grid point.
    """

    name: str
    layer_type: str
    params: int
    importance: float
    allocated_sparsity: float
    one_shot_acc_drop: float | None = None
    max_sparsity_within_delta: float | None = None
    one_shot_loss_increase: float | None = None
    drop_curve: list[tuple[float, float]] | None = None


def _fmt(v: float | None, spec: str) -> str | None:
    return None if v is None else format(v, spec)


@dataclass
class AnalysisReport(Report):
    """Per-layer rows plus the settings used; ``table()``, ``to_markdown()``, ``to_dict()``, ``plot(path)``.

    ``evaluations`` counts forward passes over the samples (the dense one included);
    ``seconds`` is the time of the one-shot columns.
    """

    sparsity: float
    importance: str
    allocation: str
    delta: float
    dense_acc: float | None
    layers: list[LayerAnalysis] = field(default_factory=list)
    most_compact: str | None = None
    importance_seconds: float = 0.0
    dense_loss: float | None = None
    loss: str | None = None
    n_samples: int = 0
    evaluations: int = 0
    seconds: float = 0.0

    def _blocks(self) -> list[str | Table]:
        head = f"analysis: importance {self.importance!r}, allocation {self.allocation!r}, sparsity {self.sparsity}"
        if self.dense_acc is not None:
            head += f", dense accuracy {self.dense_acc:.4f} on {self.n_samples} samples, delta {self.delta}"
        blocks: list[str | Table] = [head]
        if self.dense_loss is not None:
            blocks.append(f"loss {self.loss}: dense {self.dense_loss:.4f}")
        rows = [
            [
                r.name,
                r.layer_type,
                r.params,
                f"{r.importance:.4f}",
                f"{r.allocated_sparsity:.4f}",
                _fmt(r.one_shot_acc_drop, ".4f"),
                _fmt(r.one_shot_loss_increase, ".4f"),
                _fmt(r.max_sparsity_within_delta, ".3f"),
            ]
            for r in self.layers
        ]
        headers = ["layer", "type", "params", "importance", "allocated", "1-shot acc drop", "1-shot loss +", "max s <= delta"]
        blocks.append(Table(headers, rows, "llrrrrrr"))
        if self.most_compact:
            blocks.append(f"most compact (tolerates the most sparsity alone): {self.most_compact}")
        return blocks

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
        ax.set_title(f"sparsity {self.sparsity}")
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        return path


def _check_grid(grid: Sequence[float]) -> list[float]:
    out = sorted({float(g) for g in grid})
    if not out or any(not 0.0 < g <= 1.0 for g in out):
        raise ValueError(f"grid must be a non-empty list of sparsities in (0, 1], got {list(grid)!r}. Fix: e.g. grid=[0.5, 0.9, 0.99]")
    return out


def _labelled_samples(data: Any, n_samples: int) -> tuple[Any, np.ndarray]:
    """``(x, y)`` numpy samples of ``data``; ValueError naming the fix when there are no labels."""
    from tfprune.data import take

    x, y, _ = take(data, int(n_samples), need_labels="analyze (for its accuracy columns)")
    if isinstance(y, (dict, list, tuple)):
        raise ValueError("analyze's one-shot columns support one output (labels as one array), got several label arrays. Fix: call "
                         "analyze(model) without data for the data-free columns, or pass a single-output model")
    return x, np.asarray(y)


def _prepare(model: Any, data: Any, sparsity: float, importance: Any, allocation: str, delta: float, progress: bool):
    from tfprune.importance import ImportanceScores
    from tfprune.planning import plan

    check_model(model)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (accuracy, absolute), got {delta!r}. Fix: e.g. delta=0.01 (one point)")
    inv = prunable_layers(model)
    if not len(inv):
        raise ValueError("model has no prunable layers")
    get_allocator(allocation)  # a bad name fails before any scoring
    # The importance column is shown for every allocator, so score first and hand the scores to the plan.
    if isinstance(importance, Mapping):  # given scores: checked like tfprune.plan's (finite, > 0, one per prunable layer)
        from tfprune.validation import positive_scores

        missing = [q.name for q in inv if q.name not in importance]
        if missing:
            raise ValueError(f"importance scores lack layer(s) {missing}. Fix: give every prunable layer a score > 0")
        importance = ImportanceScores("given", positive_scores({q.name: importance[q.name] for q in inv}), 0.0)
    scores = importance if isinstance(importance, ImportanceScores) else score_layers(model, importance, data=data, progress=progress)
    p = plan(model, sparsity, importance=scores, allocation=allocation, data=data)
    report = AnalysisReport(sparsity, scores.method, allocation, delta, None, importance_seconds=scores.seconds + p.seconds)
    rows = {q.name: LayerAnalysis(q.name, q.layer_type, q.n_params, scores.scores[q.name], p.targets[q.name]) for q in inv}
    return report, rows


def _finish(report: AnalysisReport, rows: dict[str, LayerAnalysis], with_data: bool) -> AnalysisReport:
    if with_data:
        report.most_compact = max(rows.values(), key=lambda r: (r.max_sparsity_within_delta or 0.0, r.params)).name
    report.layers = list(rows.values())
    return report


def _max_within(dense_acc: float, accuracy_at: Any, grid_desc: Sequence[float], delta: float) -> float:
    """Largest ``s`` of ``grid_desc`` (descending) with ``dense_acc - accuracy_at(s) <= delta``, else 0.0."""
    for s in grid_desc:
        if dense_acc - accuracy_at(s) <= delta:
            return s
    return 0.0


def analyze(
    model: Any,
    data: Any = None,
    sparsity: float = 0.9,
    importance: Any = DEFAULT_IMPORTANCE,
    allocation: str = DEFAULT_ALLOCATION,
    delta: float = 0.01,
    grid: Sequence[float] = DEFAULT_GRID,
    n_samples: int = 2000,
    progress: bool = True,
    loss: Any = None,
    batch_size: int = 128,
    curves: bool = False,
) -> AnalysisReport:
    """Analyse ``model`` layer by layer (nothing in ``model`` changes).

    Args:
      model: a tf-keras model (wrapped or not).
      data: labelled data for the one-shot columns: ``(x, y)``, a tf.data
        dataset or generator of ``(x, y)`` batches (optional; without it only
        importance and allocation are reported; inputs without labels are an error).
      sparsity: the total target to plan (fraction of all prunable weights removed).
      importance, allocation: scorer (or `ImportanceScores`) and allocator of `tfprune.plan`, with its defaults.
      delta: accuracy loss tolerated by the "most compact" search (absolute, 0.01 = 1 point).
      grid: sparsities tried for that search.
      n_samples: at most this many samples of ``data`` are used.
      loss: the loss of the loss column (default: the model's compiled loss,
        else a cross-entropy matched to the output's activation, as
        `tfprune.training.finetune.model_loss` chooses).
      batch_size: samples per forward pass of the one-shot evaluation.
      curves: evaluate every grid point and keep each layer's ``drop_curve``
        (slower: by default the grid is searched from the top and stops at
        the first sparsity within ``delta``, which gives the same answer).
    """
    from tfprune.evaluate import OneShotEvaluator

    if is_keras3_object(model):  # on its tf-keras twin: the same layers, names and weights
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(analyze, model, data, sparsity=sparsity, importance=importance, allocation=allocation, delta=delta,
                                grid=grid, n_samples=n_samples, progress=progress, loss=loss, batch_size=batch_size, curves=curves)
    grid_desc = _check_grid(grid)[::-1]
    report, rows = _prepare(model, data, sparsity, importance, allocation, delta, progress)
    if data is not None:
        x, y = _labelled_samples(data, n_samples)
        t0 = time.perf_counter()
        ev = OneShotEvaluator(model, x, y, loss=loss, batch_size=batch_size)
        dense = ev.dense
        names = list(rows)
        if progress:
            from tqdm.auto import tqdm

            names = tqdm(names, desc="one-shot per layer", leave=False)
        for name in names:
            row = rows[name]
            e = ev.prune_one(name, row.allocated_sparsity)
            row.one_shot_acc_drop = float(dense.accuracy - e.accuracy)
            row.one_shot_loss_increase = float(e.loss - dense.loss)
            if curves:
                row.drop_curve = [(s, float(dense.accuracy - ev.prune_one(name, s).accuracy)) for s in grid_desc[::-1]]
            row.max_sparsity_within_delta = _max_within(dense.accuracy, lambda s, name=name: ev.prune_one(name, s).accuracy, grid_desc, delta)
        report.dense_acc, report.dense_loss, report.loss = dense.accuracy, dense.loss, ev.loss_name
        report.n_samples, report.evaluations, report.seconds = ev.n, ev.evaluations, time.perf_counter() - t0
    return _finish(report, rows, data is not None)
