"""Channel importance per group: the magnitude of every weight a channel takes with it.

Removing channel ``j`` of a group removes, in every layer of the group, the
weights coupled to it: the producers' output filters and biases, the
consumers' input rows (for a Flatten -> Dense, one row per position), the
depthwise filters and biases, the BatchNorm gamma and beta. The group score of
channel ``j`` aggregates all of them:

* ``"l2"``: ``sqrt(sum of w^2)`` over the coupled weights;
* ``"l1"``: ``sum of |w|`` over the coupled weights.

Higher = more important = keep. Scores are comparable within a group (every
channel of a group couples the same kind and number of weights); across
groups they are not normalized (an allocator decides how many channels each
group loses). `lowest_channels` turns scores into a ``remove=`` mapping for
`tfprune.structured.shrink` with the same fraction in every prunable group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tfprune._keras import keras
from tfprune.granularity import channels_to_remove
from tfprune.report import Report, Table
from tfprune.structured.graph import DEPTHWISE, PRODUCER, VALUE, ChannelGraph, channel_graph

__all__ = ["ChannelScores", "channel_importance", "lowest_channels", "register_channel_importance", "list_channel_importance"]

L = keras.layers
_REDUCERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {}


def register_channel_importance(name: str, per_weight: Callable[[np.ndarray], np.ndarray], finish: Callable[[np.ndarray], np.ndarray]) -> None:
    """Add a magnitude score: ``per_weight(w)`` is summed over a channel's coupled weights, then ``finish`` is applied."""
    _REDUCERS[name] = (per_weight, finish)


register_channel_importance("l2", np.square, np.sqrt)
register_channel_importance("l1", np.abs, lambda s: s)


def list_channel_importance() -> list[str]:
    return sorted(_REDUCERS)


@dataclass
class ChannelScores(Report):
    """Per prunable group, one score per channel (higher = keep)."""

    method: str
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def _blocks(self) -> list[str | Table]:
        rows = [[g, s.size, float(s.min()), float(np.median(s)), float(s.max())] for g, s in self.scores.items() if s.size]
        return [f"channel importance ({self.method}) of {len(self.scores)} groups", Table(["group", "channels", "min", "median", "max"], rows, "lrrrr")]


def _rows(kernel: np.ndarray, axis: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` summed over every axis but ``axis``: one number per index of ``axis``."""
    moved = np.moveaxis(np.asarray(kernel, dtype=np.float64), axis, 0)
    return fn(moved.reshape(moved.shape[0], -1)).sum(axis=1)


def _coupled(cg: ChannelGraph, fn: Callable[[np.ndarray], np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, per-entry sums) for every weight tensor slice coupled to a channel entry."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for name, node in cg.nodes.items():
        layer = cg.flat.get_layer(name)
        bias = getattr(layer, "bias", None)
        if node.kind == PRODUCER:
            lab_out = cg.labels[node.outputs[0]]
            if isinstance(layer, L.Embedding):
                out.append((lab_out, _rows(layer.embeddings.numpy(), 1, fn)))
                continue
            if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
                pw = layer.pointwise_kernel.numpy()
                m = int(layer.depth_multiplier)
                out.append((lab_out, _rows(pw, pw.ndim - 1, fn)))
                rows_in = _rows(layer.depthwise_kernel.numpy(), layer.depthwise_kernel.shape.rank - 2, fn)
                rows_in = rows_in + _rows(pw, pw.ndim - 2, fn).reshape(-1, m).sum(1)
            else:
                k = layer.kernel.numpy()
                transpose = isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose))
                out.append((lab_out, _rows(k, k.ndim - 2 if transpose else k.ndim - 1, fn)))
                rows_in = _rows(k, k.ndim - 1 if transpose else k.ndim - 2, fn)
            if bias is not None:
                out.append((lab_out, fn(bias.numpy().astype(np.float64))))
            lab_in = cg.labels[node.inputs[0]]
            if rows_in.size == lab_in.size:
                out.append((lab_in, rows_in))
        elif node.kind == DEPTHWISE:
            k = layer.depthwise_kernel.numpy()
            out.append((cg.labels[node.outputs[0]], _rows(k.reshape(*k.shape[:-2], -1), k.ndim - 2, fn)))
            if bias is not None:
                out.append((cg.labels[node.outputs[0]], fn(bias.numpy().astype(np.float64))))
        elif node.kind == VALUE and isinstance(layer, L.BatchNormalization):
            for var in (layer.gamma, layer.beta):
                if var is not None:
                    out.append((cg.labels[node.outputs[0]], fn(var.numpy().astype(np.float64))))
    return out


def channel_importance(model: Any, method: str = "l2", graph: ChannelGraph | None = None) -> ChannelScores:
    """Group-level channel scores of every prunable group (``"l2"`` or ``"l1"`` over all coupled weights).

    ``graph``: an earlier ``channel_graph(model)`` to reuse. ``model`` is not changed.
    """
    if method not in _REDUCERS:
        raise ValueError(f"unknown channel importance {method!r}; available: {list_channel_importance()}")
    per_weight, finish = _REDUCERS[method]
    cg = graph if graph is not None else channel_graph(model)
    all_labels = np.unique(np.concatenate([v for v in cg.labels.values()] or [np.zeros(0, np.int64)]))
    total = np.zeros(all_labels.size)
    for lab, vals in _coupled(cg, per_weight):
        np.add.at(total, np.searchsorted(all_labels, lab), vals)
    scores = {g.name: finish(total[np.searchsorted(all_labels, g.labels)]) for g in cg.prunable}
    return ChannelScores(method, scores)


def lowest_channels(scores: ChannelScores, sparsity: float) -> dict[str, list[int]]:
    """``{group: channels}`` removing, in every group, the lowest-scoring fraction ``sparsity`` (one channel stays)."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity is the fraction of channels removed per group, in [0, 1); got {sparsity}")
    out = {}
    for name, s in scores.scores.items():
        n = channels_to_remove(s.size, sparsity)
        if n:
            out[name] = sorted(np.argsort(s, kind="stable")[:n].tolist())
    return out
