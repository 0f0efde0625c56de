"""Shallowing (Chen & Zhao 2018): remove whole layers whose features add too little, then distil.

    report = tfprune.shallow.probe_layers(model, (x, y))
    student, result = tfprune.shallow.shallow(model, (x, y), tau=0.005)   # or target_flops_reduction=0.3
    distiller = tfprune.Distiller(model, student, temperature=4, alpha=0.9)
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from tfprune._keras import check_model, is_keras3_object, keras
from tfprune.data import Split, split, take
from tfprune.files import save_figure
from tfprune.inventory.profiling import profile
from tfprune.report import Report, Table, format_table, json_safe
from tfprune.shallow.decide import removals_for_tau, tau_for_reduction
from tfprune.shallow.graph import Unit, find_units, flat_graph, remove_units, units_of
from tfprune.shallow.probes import extract_features, fit_probe
from tfprune.validation import class_labels, finite_data, fraction, number

__all__ = ["probe_layers", "shallow", "ProbeReport", "ProbeRow", "ShallowResult", "find_units", "remove_units", "Unit"]


@dataclass
class ProbeRow:
    name: str
    kind: str
    layers: list[str]
    removable: bool
    reason: str
    accuracy: float
    params: int
    macs: int


@dataclass
class ProbeReport(Report):
    """Probe accuracy per unit (graph order); ``metric`` is ``accuracy`` or ``mAP``."""

    rows: list[ProbeRow] = field(default_factory=list)
    metric: str = "accuracy"
    n_train: int = 0
    n_test: int = 0
    units: list[Unit] = field(default_factory=list, repr=False)

    def _blocks(self, removed: set[str] | None = None) -> list[str | Table]:
        removed = removed or set()
        rows, prev = [], None
        for r in self.rows:
            gain = "" if prev is None else f"{r.accuracy - prev:+.4f}"
            status = "REMOVED" if r.name in removed else ("removable" if r.removable else f"kept: {r.reason}")
            rows.append([r.name, r.kind, f"{r.accuracy:.4f}", gain, r.macs, status])
            if r.name not in removed:
                prev = r.accuracy
        return [f"linear probes ({self.metric} on {self.n_test} held-out samples, trained on {self.n_train})",
                Table(["unit (end layer)", "kind", self.metric, "gain", "MACs", "status"], rows, "llrrrl")]

    def table(self, removed: set[str] | None = None) -> str:
        """Plain text; ``removed``: unit names to mark REMOVED (gains are then over the previous kept unit)."""
        return "\n".join(format_table(b.headers, b.rows, b.align) if isinstance(b, Table) else b for b in self._blocks(removed))

    __str__ = table

    def to_dict(self) -> dict:
        return json_safe({"metric": self.metric, "n_train": self.n_train, "n_test": self.n_test, "rows": [asdict(r) for r in self.rows]})

    def plot(self, path: str, removed: set[str] | None = None) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        removed = removed or set()
        xs = np.arange(len(self.rows))
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(self.rows) + 2), 4))
        ax.plot(xs, [r.accuracy for r in self.rows], "k-", alpha=0.4)
        for i, r in enumerate(self.rows):
            color = "tab:red" if r.name in removed else ("tab:blue" if r.removable else "gray")
            ax.plot(i, r.accuracy, "o", color=color)
        ax.set_xticks(xs, [r.name for r in self.rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"probe {self.metric}")
        ax.set_title("linear probes (blue: removable, red: removed, gray: fixed)")
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        return path


def _probe_data(data: Any, n_samples: int | None, train_fraction: float, seed: int) -> Split:
    """The probes' samples, split at random into train / held out (`tfprune.data.split`: arrays, (x, y), tf.data, generators)."""
    sp = split(data, train_fraction, n_samples, seed, need_labels="the linear-probe step of probe_layers() and shallow()", min_per_side=2)
    y = sp.samples.y
    if not isinstance(y, np.ndarray):
        raise ValueError(f"the linear probes need one label array (integer classes or a multi-hot matrix), got {type(y).__name__}. "
                         "Fix: pass (x, y) with y a single array")
    finite_data(sp.samples.x, "the probes' inputs (x)")
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):  # class ids: integers >= 0 (multi-hot matrices are 0/1 rows)
        finite = y[np.isfinite(y)] if y.dtype.kind == "f" else y
        class_labels(y, "the probes' labels (y)", int(np.max(finite)) + 1 if y.dtype.kind in "biuf" and finite.size else 2, "sparse")
    else:
        class_labels(y, "the probes' labels (y)", y.shape[-1], "one_hot")
    return sp


def probe_layers(model: Any, data: Any, pooling: str | Callable = "avg", train_fraction: float = 0.5, multilabel: bool | None = None,
                 n_samples: int | None = 10000, batch_size: int = 256, seed: int = 0, progress: bool = True) -> ProbeReport:
    """Fit a linear probe on every unit's output; report held-out accuracy and why units are (not) removable.

    Args:
      model: a Sequential or functional tf-keras model; nested models are
        inlined (unit names are those of the flat graph, see
        `tfprune.shallow.graph`). ``model`` is only read.
      data: ``(x, y)`` arrays, a ``tf.data.Dataset`` or a generator of
        ``(x, y)`` batches (see `tfprune.data`); y integer labels (N,) or a
        multi-hot (N, K) matrix. The first ``n_samples`` are used.
      pooling: ``avg`` (default), ``max``, ``flatten`` or ``fn(batch) -> (batch, features)``.
      train_fraction: share of the samples that trains the probes; the rest scores them.
      multilabel: sigmoid probes + mAP; default: True when y is 2-D with several columns.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(probe_layers, model, data, pooling=pooling, train_fraction=train_fraction, multilabel=multilabel,
                                n_samples=n_samples, batch_size=batch_size, seed=seed, progress=progress)
    check_model(model)
    graph = flat_graph(model)
    flat = graph.build()  # a flat copy (weights copied): the features are read from it, the input model is not touched
    units = units_of(graph, flat)
    if not units:
        raise ValueError("no Conv/Dense units found to probe")
    sp = _probe_data(data, n_samples, train_fraction, seed)
    x, y, tr, te = sp.samples.x, sp.samples.y, sp.train_index, sp.held_out_index
    if multilabel is None:
        multilabel = y.ndim == 2 and y.shape[1] > 1
    feats = extract_features(flat, [u.end for u in units], x, pooling, batch_size, progress)
    rows = []
    it = units
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(units, desc="probes", leave=False)
    for u in it:
        f = feats[u.end]
        acc = fit_probe(f[tr], y[tr], f[te], y[te], multilabel=multilabel, seed=seed)
        rows.append(ProbeRow(u.end, u.kind, u.layers, u.removable, u.reason, acc, u.params, u.macs))
    return ProbeReport(rows, "mAP" if multilabel else "accuracy", len(tr), len(te), units)


@dataclass
class ShallowResult(Report):
    tau: float
    removed: list[str]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    probes: ProbeReport = field(repr=False, default=None)

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_after / max(self.macs_before, 1)

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_after / max(self.params_before, 1)

    def _blocks(self) -> list[str | Table]:
        probes = self.probes._blocks(set(self.removed)) if self.probes is not None else []
        return [*probes, "", f"tau {self.tau:.4g}: removed {len(self.removed)} units {self.removed}",
                f"params {self.params_before} -> {self.params_after} (-{100 * self.params_reduction:.1f}%), "
                f"MACs {self.macs_before} -> {self.macs_after} (-{100 * self.macs_reduction:.1f}%)"]

    def _extra_dict(self) -> dict[str, Any]:
        return {"macs_reduction": self.macs_reduction, "params_reduction": self.params_reduction}



def shallow(model: Any, data: Any = None, tau: float | None = None, target_flops_reduction: float | None = None,
            target_params_reduction: float | None = None, probes: ProbeReport | None = None, reestimate_bn: bool = True,
            bn_samples: int = 2048, **probe_kwargs: Any) -> tuple[Any, ShallowResult]:
    """Remove the removable units whose probe gain over the previous kept unit is below ``tau``.

    Give ``tau`` (accuracy fraction: 0.005 = half a point), or a target
    reduction of FLOPs (MACs) or parameters, from which the smallest tau
    meeting it is chosen. ``probes`` reuses an earlier `probe_layers` report.
    With ``reestimate_bn`` (default) and ``data``, the student's BatchNorm
    statistics are re-estimated on the first ``bn_samples`` of ``data``'s
    inputs, one BatchNorm after another: removing layers changes what the
    later BatchNorms see.
    Returns ``(new_model, ShallowResult)``: the student is a new flat
    functional model (rebuilt from ``model.get_config()``, weights copied by
    layer name, nested models inlined); ``model`` is not changed.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(shallow, model, data, tau=tau, target_flops_reduction=target_flops_reduction,
                                target_params_reduction=target_params_reduction, probes=probes, reestimate_bn=reestimate_bn,
                                bn_samples=bn_samples, **probe_kwargs)
    check_model(model)
    if sum(v is not None for v in (tau, target_flops_reduction, target_params_reduction)) != 1:
        raise ValueError("give exactly one of tau=, target_flops_reduction=, target_params_reduction=")
    if tau is not None:
        try:
            tau = number(tau, "tau", minimum=0.0, what="the probe-gain threshold, a finite fraction of accuracy (0.005 = half a point)")
        except TypeError as err:
            raise ValueError(f"{err}; e.g. tau=0.005, or target_flops_reduction=0.3") from None
    for arg, value in (("target_flops_reduction", target_flops_reduction), ("target_params_reduction", target_params_reduction)):
        if value is not None:
            fraction(value, arg, unit=f"fraction of the model's {'FLOPs' if 'flops' in arg else 'parameters'} removed",
                     include_low=False, example=f"{arg}=0.3")
    if probes is None:
        if data is None:
            raise ValueError("shallow() needs data=(x, y) for the linear probes (or probes=an earlier probe_layers() report)")
        probes = probe_layers(model, data, **probe_kwargs)
    acc = [r.accuracy for r in probes.rows]
    removable = [r.removable for r in probes.rows]
    prof = profile(model)
    if tau is None:
        cost = [r.macs for r in probes.rows] if target_flops_reduction is not None else [r.params for r in probes.rows]
        total = prof.macs if target_flops_reduction is not None else prof.params
        tau = tau_for_reduction(acc, removable, cost, total, target_flops_reduction or target_params_reduction)
    removed_idx = removals_for_tau(acc, removable, float(tau))
    units = [probes.units[i] for i in removed_idx]
    new = remove_units(model, units)
    if reestimate_bn and units and any(isinstance(layer, keras.layers.BatchNormalization) for layer in new.layers):
        if data is None:
            warnings.warn("shallow(): the student's BatchNorm statistics were not re-estimated (no data= given); they are stale "
                          "after removing layers: pass data=(x, y), or call tfprune.training.finetune.reestimate_batchnorm(student, x)", stacklevel=2)
        else:
            from tfprune.training.finetune import reestimate_batchnorm

            reestimate_batchnorm(new, take(data, bn_samples).x)
    after = profile(new)
    return new, ShallowResult(float(tau), [u.end for u in units], prof.params, after.params, prof.macs, after.macs, probes)
