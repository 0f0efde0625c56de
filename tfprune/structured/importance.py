"""Channel importance per group: one score per channel of every prunable group (higher = keep).

Removing channel ``j`` of a group removes, in every layer of the group, the
weights coupled to it: the producers' output filters and biases, the
consumers' input rows (for a Flatten -> Dense, one row per position), the
depthwise filters and biases, the BatchNorm gamma and beta. Scorers, by name
(``tfprune.importance.list_importance("channel")``; ``needs data`` = ``needs_data(name, "channel")``):

=============  ==========  =============================================================
name           needs data  score of channel ``j`` of a group (aggregation over the group)
=============  ==========  =============================================================
``"l2"``       no          ``sqrt(sum of w^2)`` over **all** coupled weights
``"l1"``       no          ``sum of |w|`` over all coupled weights
``"bn_scale"`` no          ``sum of |gamma_j|`` over the group's BatchNormalizations
                           (network slimming, Liu et al. 2017). A group with no
                           BatchNormalization (or only ``scale=False`` ones) is
                           scored by ``bn_fallback`` (default ``"l2"``; noted in
                           `ChannelScores.notes`), or ValueError with
                           ``bn_fallback=None``
``"taylor"``   yes         first-order Taylor (Molchanov et al. 2019): per batch,
               (labels)    ``t_b = sum over the batch, positions and every consumer
                           of a * dL/da`` with ``a`` the channel as the group's
                           **consumers read it** (what removal sets to zero; one
                           gate shared by all coupled tensors, so the signed terms
                           are summed before squaring); score =
                           ``sqrt(mean_b t_b^2)``: the RMS over batches of the
                           first-order change of the batch-mean loss, in loss units.
                           ``L`` is `tfprune.training.finetune.model_loss` (the compiled
                           loss, else cross-entropy); the model runs in inference
                           mode (BatchNorm moving statistics)
``"obs"``      yes         second order, the channel analogue of OBS: for each
               (inputs)    consumer (Dense, Conv1D, Conv2D) with input Hessian
                           ``H = X^T X / N`` (`tfprune.obs.hessian`, bias row
                           included), the increase of its reconstruction error when
                           the kernel rows ``Q`` of channel ``j`` go and the other
                           rows (and bias) are re-solved: ``dE = tr(W_Q^T
                           ((H^-1)_QQ)^-1 W_Q)`` (`channel_removal_error`), times the
                           consumer's output positions (squared error per sample);
                           **summed over the consumers**, score = ``sqrt`` of the
                           sum (the RMS output change per sample: degree one in the
                           weights, like ``"l2"``, so the plan's per-group
                           normalisation treats it alike). ``correction=False``:
                           no re-solve, ``tr(W_Q^T H_QQ W_Q)`` (the channel's output
                           energy; `prune_channels` does not apply the re-solve, and
                           on ResNet-20/MNIST one-shot this form ranked better:
                           benchmarks/results/channel_scorers_obs_variants.md).
                           Consumers of other types or with more than
                           ``max_dim`` Hessian rows are skipped (noted); a group
                           with no scored consumer falls back to ``"l2"`` (noted)
=============  ==========  =============================================================

Scores are comparable within a group; across groups they are not normalized
(the plan's allocations normalise each group by its maximum, so a fallback
scorer in one group does not bias another). `lowest_channels` turns scores
into a ``remove=`` mapping for `tfprune.structured.removal` with the same
fraction in every prunable group.

A new scorer: ``register_channel_importance(name, scorer=fn, needs_data=...)``
with ``fn(ctx: ChannelContext) -> {group name: scores (channels,)}`` for every
group of ``ctx.graph.prunable``; or, for a magnitude score,
``register_channel_importance(name, per_weight, finish)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tfprune._keras import keras
from tfprune.importance.base import get_scorer, list_importance, needs_data, register_importance
from tfprune.masks.granularity import channels_to_remove
from tfprune.masks.wrapping import plain
from tfprune.report import Report, Table
from tfprune.structured.graph import DEPTHWISE, DEPTHWISE_GROUPS, PRODUCER, VALUE, ChannelGraph, channel_graph, conv_groups
from tfprune.validation import finite_data, finite_weights

__all__ = [
    "ChannelContext",
    "ChannelScores",
    "channel_importance",
    "channel_removal_error",
    "grouped_input_rows",
    "lowest_channels",
    "register_channel_importance",
]

L = keras.layers


@dataclass
class ChannelContext:
    """What a channel scorer sees: the model (only read), its channel graph, the data and options; ``notes`` it may add to."""

    model: Any
    graph: ChannelGraph
    data: Any = None
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


ChannelScorer = Callable[[ChannelContext], "dict[str, np.ndarray]"]


def register_channel_importance(
    name: str,
    per_weight: Callable[[np.ndarray], np.ndarray] | None = None,
    finish: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    scorer: ChannelScorer | None = None,
    needs_data: bool = False,
    doc: str = "",
) -> None:
    """Add a channel scorer under ``name`` to the one importance registry (``scores="channel"``).

    Either a magnitude score: ``per_weight(w)`` summed over a channel's coupled
    weights, then ``finish`` applied (``per_weight`` and ``finish``); or any
    score: ``scorer(ctx: ChannelContext) -> {group name: (channels,) scores}``
    for every prunable group, ``needs_data=True`` when it reads ``ctx.data``.
    """
    if (scorer is None) == (per_weight is None):
        raise ValueError("give either per_weight (and finish) for a magnitude score, or scorer= for any other score")
    if scorer is None:
        finish = finish if finish is not None else (lambda s: s)
        scorer = _magnitude_scorer(per_weight, finish)
    register_importance(name, needs_data=bool(needs_data), doc=doc, scores="channel")(scorer)


@dataclass
class ChannelScores(Report):
    """Per prunable group, one score per channel (higher = keep); ``notes``: fallbacks and skipped layers."""

    method: str
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def _blocks(self) -> list[str | Table]:
        rows = [[g, s.size, float(s.min()), float(np.median(s)), float(s.max())] for g, s in self.scores.items() if s.size]
        return [f"channel importance ({self.method}) of {len(self.scores)} groups", Table(["group", "channels", "min", "median", "max"], rows, "lrrrr"),
                *self.notes]


# ------------------------------------------------------------------ numpy math
def _rows(kernel: np.ndarray, axis: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` summed over every axis but ``axis``: one number per index of ``axis``."""
    moved = np.moveaxis(np.asarray(kernel, dtype=np.float64), axis, 0)
    return fn(moved.reshape(moved.shape[0], -1)).sum(axis=1)


def grouped_input_rows(kernel: np.ndarray, groups: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per input channel ``g*a + i`` of a grouped convolution, ``fn`` summed over the weights reading it.

    ``kernel``: (..., a, out) with ``a = in / groups``; input ``g*a + i`` is read by
    rows ``i`` of group ``g``'s ``out / groups`` filters. Returns (in,) = (groups * a,).
    """
    k = np.asarray(kernel, dtype=np.float64)
    a, n_out = k.shape[-2], k.shape[-1]
    per = fn(k.reshape(-1, a, groups, n_out // groups)).sum(axis=(0, 3))  # (a, groups)
    return per.T.reshape(-1)


def channel_removal_error(W: np.ndarray, H: np.ndarray, rows: list[np.ndarray], damp: float = 1e-3, correction: bool = True) -> np.ndarray:
    """Increase of a layer's reconstruction error when the kernel rows ``rows[i]`` are removed, one number per set.

    The layer computes ``X @ W`` (``W``: (d, outputs), ``X``: (N, d) rows of
    its unfolded input, a constant-1 column for the bias), ``H = X^T X / N``
    (d, d), the error of ``W'`` is ``tr((W - W')^T H (W - W'))`` (mean over the
    N rows of the squared output change). For a removed row set ``Q``:

    * ``correction=True`` (OBS): the other rows re-solved optimally,
      ``dE = tr(W_Q^T ((H^-1)_QQ)^-1 W_Q)``, ``H^-1`` of ``H + damp *
      mean(diag H) I`` (`tfprune.obs.solvers.damped_inverse`; ``damp=0``: exact);
    * ``correction=False``: the rows only dropped, ``dE = tr(W_Q^T H_QQ W_Q)``.
    """
    W = np.asarray(W, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if W.ndim != 2 or H.shape != (W.shape[0], W.shape[0]):
        raise ValueError(f"W must be (d, outputs) and H (d, d); got W {W.shape}, H {H.shape}")
    out = np.zeros(len(rows))
    if correction:
        from tfprune.obs.solvers import damped_inverse

        M = damped_inverse(H, damp) if damp > 0 else np.linalg.inv(H)
    else:
        M = H
    by_size: dict[int, list[int]] = {}
    for i, q in enumerate(rows):
        by_size.setdefault(int(np.asarray(q).size), []).append(i)
    for size, idx in by_size.items():
        if size == 0:
            continue
        Q = np.stack([np.asarray(rows[i], dtype=np.int64) for i in idx])  # (n, q)
        WQ = W[Q]  # (n, q, outputs)
        block = M[Q[:, :, None], Q[:, None, :]]  # (n, q, q)
        inner = np.linalg.solve(block, WQ) if correction else block @ WQ
        out[idx] = np.einsum("nqo,nqo->n", WQ, inner)
    return np.maximum(out, 0.0)


# ------------------------------------------------------------------ helpers
def _all_labels(cg: ChannelGraph) -> np.ndarray:
    return np.unique(np.concatenate([v for v in cg.labels.values()] or [np.zeros(0, np.int64)]))


def _sum_by_label(cg: ChannelGraph, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(per-label sums of ``parts`` = [(labels, values)], per-label count of contributions), over `_all_labels`."""
    all_labels = _all_labels(cg)
    total, count = np.zeros(all_labels.size), np.zeros(all_labels.size)
    for lab, vals in parts:
        pos = np.searchsorted(all_labels, np.asarray(lab, dtype=np.int64))
        np.add.at(total, pos, vals)
        np.add.at(count, pos, 1.0)
    return total, count


def _per_group(cg: ChannelGraph, per_label: np.ndarray) -> dict[str, np.ndarray]:
    all_labels = _all_labels(cg)
    return {g.name: per_label[np.searchsorted(all_labels, g.labels)] for g in cg.prunable}


def _fallback(ctx: ChannelContext, scores: dict[str, np.ndarray], missing: list[str], method: str, why: str, fallback: str | None) -> None:
    """Score the groups ``missing`` with ``fallback`` (noted), or raise when ``fallback`` is None."""
    if not missing:
        return
    if fallback is None:
        raise ValueError(f"channel importance {method!r} cannot score {len(missing)} groups ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}): {why}. Fix: allow a fallback scorer for them (e.g. 'l2'), or use importance='l2'")
    if fallback == method or needs_data(fallback, "channel"):
        raise ValueError(f"the fallback of {method!r} must be a data-free scorer other than itself, got {fallback!r}")
    other = get_scorer(fallback, "channel").fn(ChannelContext(ctx.model, ctx.graph, None, {}, ctx.notes))
    for g in missing:
        scores[g] = other[g]
    ctx.notes.append(f"{len(missing)} groups scored by {fallback!r} instead of {method!r} ({why}): {', '.join(missing[:8])}"
                     f"{' ...' if len(missing) > 8 else ''}")


def _input_rows(layer: Any) -> tuple[Any, int] | None:
    """(the kernel variable whose rows are the layer's input channels, that axis); None for Embedding."""
    if isinstance(layer, L.Embedding):
        return None
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return layer.depthwise_kernel, layer.depthwise_kernel.shape.rank - 2
    transpose = isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose))
    return layer.kernel, layer.kernel.shape.rank - (1 if transpose else 2)


def _consumers(cg: ChannelGraph) -> list[str]:
    """Producer layers (not Embedding) that read a tensor of a prunable group."""
    tensors = {k for g in cg.prunable for k in g.tensors}
    return [n for n, node in cg.nodes.items()
            if node.kind == PRODUCER and node.inputs and node.inputs[0] in tensors and not isinstance(cg.flat.get_layer(n), L.Embedding)]


# ------------------------------------------------------------------ magnitude
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
                if node.groups > 1:
                    rows_in = grouped_input_rows(k, node.groups, fn)
                else:
                    rows_in = _rows(k, k.ndim - 1 if transpose else k.ndim - 2, fn)
            if bias is not None:
                out.append((lab_out, fn(bias.numpy().astype(np.float64))))
            lab_in = cg.labels[node.inputs[0]]
            if rows_in.size == lab_in.size:
                out.append((lab_in, rows_in))
        elif node.kind in (DEPTHWISE, DEPTHWISE_GROUPS):
            k = (layer.depthwise_kernel if node.kind == DEPTHWISE else layer.kernel).numpy()  # (..., C, M) or (..., 1, C*M)
            out.append((cg.labels[node.outputs[0]], _rows(k.reshape(*k.shape[:-2], -1), k.ndim - 2, fn)))
            if bias is not None:
                out.append((cg.labels[node.outputs[0]], fn(bias.numpy().astype(np.float64))))
        elif node.kind == VALUE and isinstance(layer, L.BatchNormalization):
            for var in (layer.gamma, layer.beta):
                if var is not None:
                    out.append((cg.labels[node.outputs[0]], fn(var.numpy().astype(np.float64))))
    return out


def _magnitude_scorer(per_weight: Callable[[np.ndarray], np.ndarray], finish: Callable[[np.ndarray], np.ndarray]) -> ChannelScorer:
    def scorer(ctx: ChannelContext) -> dict[str, np.ndarray]:
        total, _ = _sum_by_label(ctx.graph, _coupled(ctx.graph, per_weight))
        return {g: finish(s) for g, s in _per_group(ctx.graph, total).items()}

    return scorer


register_channel_importance("l2", np.square, np.sqrt, doc="sqrt(sum of w^2) over every coupled weight")
register_channel_importance("l1", np.abs, lambda s: s, doc="sum of |w| over every coupled weight")


# ------------------------------------------------------------------ BatchNorm scale
def _bn_scale(ctx: ChannelContext) -> dict[str, np.ndarray]:
    """sum of |gamma| over the group's BatchNormalizations (network slimming)"""
    cg = ctx.graph
    parts = []
    for name, node in cg.nodes.items():
        layer = cg.flat.get_layer(name)
        if node.kind == VALUE and isinstance(layer, L.BatchNormalization) and layer.gamma is not None:
            parts.append((cg.labels[node.outputs[0]], np.abs(layer.gamma.numpy().astype(np.float64))))
    total, count = _sum_by_label(cg, parts)
    scores, counts = _per_group(cg, total), _per_group(cg, count)
    missing = [g for g, c in counts.items() if not np.all(c > 0)]
    _fallback(ctx, scores, missing, "bn_scale", "no BatchNormalization with a scale (gamma) in the group",
              ctx.options.get("bn_fallback", "l2"))
    return scores


register_channel_importance("bn_scale", scorer=_bn_scale)


# ------------------------------------------------------------------ first-order Taylor
def _taylor(ctx: ChannelContext) -> dict[str, np.ndarray]:
    """first-order Taylor: RMS over batches of sum(a * dL/da) on the consumers' inputs (Molchanov et al. 2019)"""
    import tensorflow as tf

    from tfprune import data as _data
    from tfprune.training.finetune import model_loss

    cg = ctx.graph
    flat = cg.flat
    names = _consumers(cg)
    rows = [(n, *_input_rows(flat.get_layer(n))) for n in names]
    variables = [v for _, v, _ in rows]
    spec = model_loss(ctx.model, ctx.options.get("loss"))
    all_labels = _all_labels(cg)
    positions = [np.searchsorted(all_labels, cg.labels[cg.nodes[n].inputs[0]]) for n in names]
    sumsq = np.zeros(all_labels.size)
    n_batches = 0

    def grads(x: Any, y: Any, w: Any) -> list:
        with tf.GradientTape() as tape:
            loss = spec(y, flat(x, training=False), w)
        return tape.gradient(loss, variables)

    batch_size, n_samples = int(ctx.options.get("batch_size", 128)), ctx.options.get("n_samples", 1024)
    for x, y, w in _data.batches(ctx.data, batch_size, n_samples, need_labels="channel importance 'taylor' (the loss gradient)"):
        t = np.zeros(all_labels.size)
        for (n, var, axis), g, pos in zip(rows, grads(x, y, w), positions):
            if g is None:
                continue
            wg = var.numpy().astype(np.float64) * np.asarray(g, dtype=np.float64)
            groups = conv_groups(flat.get_layer(n))
            per_row = grouped_input_rows(wg, groups, lambda a: a) if groups > 1 else _rows(wg, axis, lambda a: a)
            if per_row.size == pos.size:
                np.add.at(t, pos, per_row)
        sumsq += t * t
        n_batches += 1
    if n_batches == 0:
        raise ValueError("channel importance 'taylor': the data is empty. Fix: pass labelled samples")
    ctx.notes.append(f"taylor: {n_batches} batches of at most {batch_size} samples, {len(names)} consumers")
    return _per_group(cg, np.sqrt(sumsq / n_batches))


register_channel_importance("taylor", scorer=_taylor, needs_data=True)


# ------------------------------------------------------------------ second order (channel OBS)
def _obs(ctx: ChannelContext) -> dict[str, np.ndarray]:
    """channel OBS: sqrt of the increase of the consumers' reconstruction errors when the channel's input rows go"""
    from tfprune.obs.hessian import hessian_dim, layer_hessians, supported

    cg = ctx.graph
    flat = cg.flat
    max_dim = int(ctx.options.get("max_dim", 4096))
    names, skipped = [], []
    for n in _consumers(cg):
        layer = flat.get_layer(n)
        if not supported(layer):
            skipped.append(f"{n} ({type(layer).__name__})")
        elif conv_groups(layer) > 1:
            skipped.append(f"{n} (grouped convolution, groups={conv_groups(layer)})")
        elif hessian_dim(layer) > max_dim:
            skipped.append(f"{n} ({hessian_dim(layer)} Hessian rows > max_dim={max_dim})")
        else:
            names.append(n)
    H = layer_hessians(flat, names, ctx.data, batch_size=int(ctx.options.get("batch_size", 128)),
                       n_samples=ctx.options.get("n_samples", 1024), max_bytes=1 << 62, progress=False, solver="none") if names else {}
    parts = []
    for n in names:
        layer = flat.get_layer(n)
        W = layer.kernel.numpy().astype(np.float64)
        W = W.reshape(-1, W.shape[-1])
        if layer.use_bias:
            W = np.vstack([W, layer.bias.numpy().astype(np.float64)[None]])
        lab_in = cg.labels[cg.nodes[n].inputs[0]]
        fan_in = int(np.prod(layer.kernel.shape[:-1]))
        row_labels = np.tile(lab_in, fan_in // lab_in.size)  # unfold order (kh, kw, c_in): channel fastest
        uniq = np.unique(row_labels)
        sets = [np.flatnonzero(row_labels == c) for c in uniq]
        dE = channel_removal_error(W, H.pop(n), sets, float(ctx.options.get("damp", 1e-3)), bool(ctx.options.get("correction", True)))
        out_shape = cg.shapes[cg.nodes[n].outputs[0]]
        per_sample = float(np.prod([d for d in out_shape[1:-1] if d is not None])) if len(out_shape) > 2 else 1.0
        parts.append((uniq, dE * per_sample))
    total, count = _sum_by_label(cg, parts)
    scores, counts = _per_group(cg, total), _per_group(cg, count)
    if skipped:
        ctx.notes.append(f"obs: consumers not scored: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}")
    scores = {g: np.sqrt(v) for g, v in scores.items()}
    missing = [g for g, c in counts.items() if not np.all(c > 0)]
    _fallback(ctx, scores, missing, "obs", "none of its consumers is a Dense/Conv1D/Conv2D within max_dim", ctx.options.get("fallback", "l2"))
    return scores


register_channel_importance("obs", scorer=_obs, needs_data=True)


# ------------------------------------------------------------------ entry points
def channel_importance(model: Any, method: str = "l2", graph: ChannelGraph | None = None, data: Any = None, **options: Any) -> ChannelScores:
    """Group-level channel scores of every prunable group (see the module docstring for the scorers).

    Args:
      model: a tf-keras model (not changed).
      method: a registered scorer (``tfprune.importance.list_importance("channel")``): ``"l2"``, ``"l1"``,
        ``"bn_scale"``, ``"taylor"`` (data with labels), ``"obs"`` (data, inputs only).
      graph: an earlier ``channel_graph(model)`` to reuse.
      data: calibration data for ``"taylor"`` / ``"obs"``, anything `tfprune.data` reads.
      **options: for the scorer: ``n_samples`` (default 1024), ``batch_size`` (128),
        ``loss`` (taylor), ``damp`` (1e-3), ``correction`` (True), ``max_dim`` (4096),
        ``fallback`` (obs, ``"l2"``), ``bn_fallback`` (bn_scale, ``"l2"``; None: error).

    Returns `ChannelScores`: ``scores[group name]`` is a (channels,) array, higher = keep.
    """
    entry = get_scorer(method, "channel")
    if entry.needs_data and data is None:
        raise ValueError(f"channel importance {method!r} needs calibration data"
                         f"{' with labels (it uses the gradient of the loss)' if method == 'taylor' else ''}: pass data=(x, y) "
                         "(channel_importance / tfprune.plan / prune_channels; --data on the command line), or use a data-free "
                         f"scorer: {[n for n in list_importance('channel') if not needs_data(n, 'channel')]}")
    model = plain(model)
    cg = graph if graph is not None else channel_graph(model)
    finite_weights({v.name: v.numpy() for v in model.trainable_weights}, f"channel importance {method!r}")
    if entry.needs_data:
        finite_data(data, "data")
    ctx = ChannelContext(model, cg, data, dict(options))
    scores = entry.fn(ctx)
    out = {}
    for g in cg.prunable:
        s = np.asarray(scores.get(g.name, np.zeros(0)), dtype=np.float64)
        if s.shape != (g.channels,) or not np.isfinite(s).all() or (s < 0).any():
            raise RuntimeError(f"channel scorer {method!r} returned invalid scores for group {g.name!r} ({g.channels} channels): {s.tolist()[:8]}")
        out[g.name] = s
    return ChannelScores(method, out, ctx.notes)


def lowest_channels(scores: ChannelScores, sparsity: float) -> dict[str, list[int]]:
    """``{group: channels}`` removing, in every group, the lowest-scoring fraction ``sparsity`` (one channel stays)."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity is the fraction of channels removed per group, in [0, 1); got {sparsity}. Fix: e.g. 0.5")
    out = {}
    for name, s in scores.scores.items():
        n = channels_to_remove(s.size, sparsity)
        if n:
            out[name] = sorted(np.argsort(s, kind="stable")[:n].tolist())
    return out
