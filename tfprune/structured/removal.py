"""`shrink`: remove masked channels for real, and check the smaller model computes the same.

What is removed. ``shrink(model)`` reads the channels to remove from the
model itself (a wrapped model after channel pruning is read through
`tfprune.strip`, masks applied); ``shrink(model, remove={group: channels})``
takes them from you and first **masks the whole group** in a copy (every
producer's output filter and bias, every BatchNorm's gamma, beta and mean,
every depthwise filter and bias of the channel), so those channels are
exactly zero everywhere. `channel_weights(cg)` lists those variables (with
the channel of every entry) for code that masks channels itself.

When removing a channel is exact (the rule). A removed channel may still
carry a value into the layers that read it: after a masked convolution
(zero filter) its output is the constant ``act(bias)``; a BatchNorm after it
turns that into ``beta - gamma * mean / sqrt(var + eps)``, an activation into
``act(...)`` again, and so on. `shrink` follows each channel's value through
the graph: *constant* (with its value) or *varying*:

* a producer with a zero filter (kernel slice) makes the constant ``act(bias)``;
* element-wise layers (BatchNorm, activations, Rescaling, Normalization, PReLU
  with per-channel alpha, per-channel scales such as ConvNeXt's ``LayerScale``)
  map a constant to a constant (computed by the layer itself); a BatchNorm
  with ``gamma = 0`` makes a constant from anything;
* pooling, global pooling, up-sampling, cropping, dropout, Flatten, Reshape
  keep the constant; zero padding keeps only the constant 0;
* a depthwise convolution (``DepthwiseConv*`` or ``ConvND(groups=C_in)``)
  maps a constant ``k`` to ``k * sum(filter) + bias``
  when every output sees a whole window (``padding="valid"`` or a 1x1 filter)
  or when ``k == 0``; with ``padding="same"`` and ``k != 0`` the border
  outputs see zero padding instead of ``k``: varying;
* merges (Add, Multiply, ...) of constants are constants; a zero times
  anything is zero.

At every layer that reads the channel and keeps its own outputs (the
*consumers*: Dense, Conv, grouped Conv, ConvTranspose, SeparableConv), the channel may go
if its rows of that layer's kernel are zero, or it is the constant 0, or it
is a constant ``k`` that the layer can absorb exactly into its bias
(``bias += k * sum of the channel's kernel rows``; for a grouped
convolution, only the outputs of the channel's group get the term): **Dense**
always; a **convolution** only with ``padding="valid"`` or a kernel of size 1 (with
``"same"``/``"causal"`` padding and a larger kernel the border outputs see
zeros, not ``k``: not exact); **ConvTranspose** only with a 1x1 kernel and
stride 1. A consumer without a bias gets one (``use_bias=True``) when a
constant is folded into it. A channel that fails anywhere is **kept**
(``on_inexact="keep"``, listed with the reason) or raises
(``on_inexact="error"``; the default when ``remove=`` is given).

So conv -> BN -> ReLU -> conv(3x3, "same") with only the first conv's filter
masked keeps the channel unless ``relu(beta - gamma*mean/sqrt(var+eps)) == 0``;
mask the BatchNorm channel too (``remove=`` does) and it goes.

Every group keeps at least one channel. Before returning, the new model's
outputs are compared with the masked model's on random inputs (or ``x``):
``max |new - masked|`` must be at most ``atol * max |masked|`` (1e-4 by
default; the scale is floored at `SCALE_FLOOR` only for an output that is
exactly zero), and so must every tensor of the graph against its own scale,
else `shrink` raises. The bound is relative: outputs of scale 1e-8 (random
weights in a deep network) are checked as strictly as outputs of scale 1.

The result is a new flat functional model (nested models inlined, as in
`tfprune.shallow`), rebuilt with ``keras.Model.from_config`` from the input's
config with smaller ``filters``/``units``/``output_dim`` (a grouped
convolution keeps ``groups``, with fewer channels per group; a depthwise
``ConvND(groups=C)`` gets ``groups`` = the channels kept), Reshape targets,
Rescaling/Normalization vectors, ``LayerScale``'s ``projection_dim``,
``tf.split`` sizes, weights sliced
and copied; it is not compiled. The input model is only read.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfprune._keras import is_keras3_object, keras
from tfprune.inventory.profiling import profile
from tfprune.masks.wrapping import plain
from tfprune.report import Report, Table
from tfprune.structured.graph import (
    CONCAT,
    DEPTHWISE,
    DEPTHWISE_GROUPS,
    FLATTEN,
    MERGE,
    PERCHANNEL,
    PRODUCER,
    SPATIAL,
    SPLIT,
    VALUE,
    ZEROPAD,
    ChannelGraph,
    TensorKey,
    channel_graph,
    conv_groups,
    is_channel_scale,
)
from tfprune.validation import channel_indices, number, one_of

__all__ = ["shrink", "ShrinkReport", "GroupChange", "ChannelWeight", "channel_weights", "mask_channels", "removable_channels"]

L = keras.layers


# ------------------------------------------------------------ the report
@dataclass
class GroupChange:
    """One prunable group in a `ShrinkReport`: channels before, removed, and how many masked ones were kept (why: ``report.kept``)."""

    group: str
    channels: int
    removed: int
    kept_masked: int = 0


@dataclass
class ShrinkReport(Report):
    """What `shrink` removed, what it kept and why, and the check of the outputs.

    Attributes:
      model_name: the input model's name.
      mode: ``"masks"`` (channels read from the model's zeros) or ``"remove"``
        (channels given, their groups masked first).
      params_before, params_after, macs_before, macs_after: `tfprune.profile` totals.
      max_abs_diff: ``max |new - masked|`` over every output on the check inputs.
      max_abs_output: ``max |masked|`` over the outputs (the scale of the tolerance).
      tolerance: the absolute bound ``max_abs_diff`` was checked against:
        ``atol * max(max_abs_output, scale_floor)``.
      max_rel_diff_tensors: the largest ``max |new - masked| / max(max |masked|, scale_floor)``
        over every tensor of the graph (kept entries); also checked against ``atol``.
      atol: the relative tolerance given to `shrink`.
      scale_floor: the scale used for a tensor that is exactly zero (`SCALE_FLOOR`).
      max_rel_diff: ``max_abs_diff / max(max_abs_output, scale_floor)`` (checked against ``atol``).
      groups: one `GroupChange` per prunable group.
      removed: group name -> removed channel indices.
      kept: ``"group[channel]"`` -> why a masked channel stays.
      folded: consumer layer -> constant channels folded into its bias.
      frozen: group name -> why it cannot be pruned.
      seconds: time taken.
    """

    model_name: str
    mode: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float
    max_abs_output: float
    tolerance: float
    max_rel_diff_tensors: float
    atol: float = 1e-4
    scale_floor: float = 0.0
    groups: list[GroupChange] = field(default_factory=list)
    removed: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)
    frozen: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def channels_removed(self) -> int:
        return int(sum(len(v) for v in self.removed.values()))

    @property
    def max_rel_diff(self) -> float:
        """``max |new - masked| / max |masked|`` over the outputs (the scale floored at ``scale_floor``)."""
        return self.max_abs_diff / max(self.max_abs_output, self.scale_floor) if self.max_abs_diff else 0.0

    def _extra_dict(self) -> dict[str, Any]:
        return {"channels_removed": self.channels_removed, "max_rel_diff": self.max_rel_diff}

    def _blocks(self) -> list[str | Table]:
        def ratio(a: int, b: int) -> str:
            return f"{b / a:.3f}x" if a else "-"

        out: list[str | Table] = [
            f"shrink {self.model_name!r} ({self.mode}): {self.channels_removed} channels removed in "
            f"{sum(1 for g in self.groups if g.removed)} of {len(self.groups)} prunable groups",
            Table(["", "before", "after", "after/before"], [
                ["params", self.params_before, self.params_after, ratio(self.params_before, self.params_after)],
                ["MACs", self.macs_before, self.macs_after, ratio(self.macs_before, self.macs_after)],
            ], "lrrr"),
            f"outputs vs the masked model: max |diff| = {self.max_abs_diff:.3g}, relative to max |output| {self.max_abs_output:.3g}: "
            f"{self.max_rel_diff:.3g} (bound {self.atol:.3g}, i.e. |diff| <= {self.tolerance:.3g}); every tensor: max relative diff "
            f"{self.max_rel_diff_tensors:.3g}",
        ]
        rows = [[g.group, g.channels, g.removed, g.channels - g.removed, g.kept_masked] for g in self.groups if g.removed or g.kept_masked]
        if rows:
            out.append(Table(["group", "channels", "removed", "left", "masked but kept"], rows, "lrrrr"))
        if self.kept:
            out.append("masked channels kept:")
            out += [f"  {k}: {v}" for k, v in list(self.kept.items())[:20]]
            if len(self.kept) > 20:
                out.append(f"  ... and {len(self.kept) - 20} more (see .kept)")
        if self.folded:
            out.append("constants folded into biases: " + ", ".join(f"{k} ({v})" for k, v in self.folded.items()))
        return out


# ------------------------------------------------------------ numpy rules
def _out_slices_zero(kernel: np.ndarray, axis: int) -> np.ndarray:
    """Per index of ``axis``: True when that slice of ``kernel`` is all zero."""
    moved = np.moveaxis(np.asarray(kernel), axis, 0)
    return ~np.any(moved.reshape(moved.shape[0], -1) != 0, axis=1)


def _spatial_sum(kernel: np.ndarray) -> np.ndarray:
    """``kernel`` summed over its spatial axes (all but the last two): a 2-D matrix."""
    k = np.asarray(kernel, dtype=np.float64)
    return k.reshape(-1, *k.shape[-2:]).sum(axis=0)


def fold_delta(kind: str, weights: dict[str, np.ndarray], values: np.ndarray, depth_multiplier: int = 1, groups: int = 1) -> np.ndarray:
    """Bias change (per output channel) that replaces constant inputs ``values`` (0 where the input is kept).

    ``kind``: ``"dense"`` (kernel in x out), ``"conv"`` (..., in / groups, out;
    a grouped convolution's output ``o`` reads inputs ``g*a .. g*a+a-1`` with
    ``g = o // (out / groups)``, ``a = in / groups``), ``"transpose"``
    (..., out, in), ``"separable"`` (depthwise ..., in, M and pointwise ...,
    in*M, out). ``values``: (in,). Returns (out,). Exact only where the caller
    checked that every output position sees the whole kernel (see the module
    docstring).
    """
    v = np.asarray(values, dtype=np.float64)
    if kind == "dense":
        return v @ np.asarray(weights["kernel"], dtype=np.float64)
    if kind == "conv" and groups > 1:
        s = _spatial_sum(weights["kernel"])  # (a, out)
        a, n_out = s.shape
        per_group = s.reshape(a, groups, n_out // groups)  # [i, g, j]: input g*a+i -> output g*b+j
        return np.einsum("gi,igj->gj", v.reshape(groups, a), per_group).reshape(-1)
    if kind == "conv":
        return v @ _spatial_sum(weights["kernel"])
    if kind == "transpose":
        return _spatial_sum(weights["kernel"]) @ v
    if kind == "separable":
        dw = _spatial_sum(weights["depthwise_kernel"])  # (in, M)
        pw = _spatial_sum(weights["pointwise_kernel"])  # (in*M, out)
        return (v[:, None] * dw).reshape(-1) @ pw
    raise ValueError(f"unknown consumer kind {kind!r}")


def _merge_values(cls: str, vals: list[np.ndarray]) -> np.ndarray:
    a = np.stack(vals)
    if cls == "Add":
        return a.sum(0)
    if cls == "Subtract":
        return a[0] - a[1]
    if cls == "Multiply":
        return np.prod(a, axis=0)
    if cls == "Average":
        return a.mean(0)
    if cls == "Maximum":
        return a.max(0)
    if cls == "Minimum":
        return a.min(0)
    raise ValueError(cls)


# --------------------------------------------------------- layer helpers
def _consumer_kind(layer: Any) -> str:
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return "separable"
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return "transpose"
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, L.Embedding):
        return "embedding"
    return "conv"


def _kernel_attr(kind: str) -> str:
    return {"separable": "pointwise_kernel", "embedding": "embeddings"}.get(kind, "kernel")


def _depthwise_kernel(layer: Any) -> Any:
    """The depthwise filter variable of a DepthwiseConv (..., C, M) or of a ``ConvND(groups=C)`` (..., 1, C*M)."""
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def _grouped_rows_zero(kernel: np.ndarray, groups: int) -> np.ndarray:
    """Per input channel ``g*a + i`` of a grouped convolution (kernel (..., a, out)): True when group ``g``'s rows ``i`` are all zero."""
    k = np.asarray(kernel)
    a, n_out = k.shape[-2], k.shape[-1]
    nz = np.any(k.reshape(-1, a, groups, n_out // groups) != 0, axis=(0, 3))  # (a, groups)
    return ~nz.T.reshape(-1)


def _group_block(keep_in: np.ndarray, groups: int, layer: str) -> np.ndarray:
    """The input rows a grouped convolution keeps in each group: the same in every group (the graph ties them), checked."""
    blocks = np.asarray(keep_in).reshape(groups, -1)
    if not np.all(blocks == blocks[0]):
        raise RuntimeError(f"internal error: grouped convolution {layer!r} would keep different input channels in its {groups} groups")
    return blocks[0]


def _np(layer: Any, attr: str) -> np.ndarray | None:
    v = getattr(layer, attr, None)
    return None if v is None else v.numpy()


def _padding_note(layer: Any) -> str | None:
    """None when ``layer`` can absorb a constant input channel into its bias exactly; else why not."""
    kind = _consumer_kind(layer)
    if kind == "dense":
        return None
    k = tuple(int(d) for d in layer.kernel_size)
    if kind == "transpose":
        if all(d == 1 for d in k) and all(int(s) == 1 for s in layer.strides):
            return None
        return (f"{layer.name!r} is a transposed convolution ({'x'.join(map(str, k))} kernel, strides {tuple(layer.strides)}): "
                "its output borders get fewer terms")
    if layer.padding == "valid" or all(d == 1 for d in k):
        return None
    return (f"{layer.name!r} uses padding={layer.padding!r} with a {'x'.join(map(str, k))} kernel: at the borders it reads zero padding "
            "instead of the constant, so the constant cannot be folded into its bias. Fix: mask the channel in its whole group "
            "(shrink(model, remove=...) does; after a conv that means the BatchNorm's gamma and beta too), so its value is 0")


def _activate(layer: Any, pre: np.ndarray) -> np.ndarray:
    fn = getattr(layer, "activation", None)
    if fn is None:
        return np.asarray(pre, dtype=np.float64)
    return np.asarray(fn(tf.constant(np.asarray(pre, dtype=np.float32)[None])).numpy()[0], dtype=np.float64)


def _probe(layer: Any, values: np.ndarray, rank: int, call_kwargs: dict | None = None) -> np.ndarray | None:
    """``layer`` applied to a tensor that holds ``values[c]`` in channel ``c`` everywhere; None when it cannot be run.

    ``call_kwargs``: the constant arguments of a TFOpLambda (called with them instead of ``training``).
    """
    x = np.asarray(values, dtype=np.float32).reshape((1,) * (rank - 1) + (-1,))
    try:
        y = layer(tf.constant(x), **call_kwargs) if call_kwargs is not None else layer(tf.constant(x), training=False)
    except Exception:  # noqa: BLE001  (treated as "varying": conservative)
        return None
    return np.asarray(y.numpy(), dtype=np.float64).reshape(-1)[: values.size] if y.shape[-1] == values.size else None


# ------------------------------------------------------- value analysis
@dataclass
class _Values:
    const: dict[TensorKey, np.ndarray]
    val: dict[TensorKey, np.ndarray]
    broke: dict[int, str]  # label -> where a constant of it stopped being constant


def _propagate(cg: ChannelGraph) -> _Values:
    """For every tensor entry: is it a constant (over inputs and positions) in the model ``cg.flat``, and which."""
    const: dict[TensorKey, np.ndarray] = {}
    val: dict[TensorKey, np.ndarray] = {}
    broke: dict[int, str] = {}
    flat = cg.flat

    def note_broken(key: TensorKey, was: np.ndarray, now: np.ndarray, why: str) -> None:
        for e in np.flatnonzero(was & ~now):
            broke.setdefault(int(cg.labels[key][e]), why.format(v=float(val_in_rep[e]) if val_in_rep is not None else 0.0))

    for name, node in cg.nodes.items():
        layer = flat.get_layer(name)
        kind = node.kind
        if kind == SPLIT:
            start = 0
            for k in node.outputs:
                n = cg.labels[k].size
                const[k], val[k] = const[node.inputs[0]][start:start + n], val[node.inputs[0]][start:start + n]
                start += n
            continue
        if node.outputs and kind not in (PRODUCER, DEPTHWISE, DEPTHWISE_GROUPS, VALUE, SPATIAL, ZEROPAD, PERCHANNEL, FLATTEN, MERGE, CONCAT):
            for k in node.outputs:
                n = cg.labels[k].size
                const[k], val[k] = np.zeros(n, bool), np.zeros(n)
            continue
        out = node.outputs[0]
        if kind == PRODUCER:
            ck = _consumer_kind(layer)
            kernel = _np(layer, _kernel_attr(ck))
            axis = {"transpose": kernel.ndim - 2, "embedding": 1}.get(ck, kernel.ndim - 1)
            zero = _out_slices_zero(kernel, axis)
            bias = _np(layer, "bias")
            pre = np.zeros(zero.size) if bias is None else bias.astype(np.float64)
            const[out], val[out] = zero, (_activate(layer, pre) if ck != "embedding" else np.zeros(zero.size))
            continue
        kin = node.inputs[0]
        c_in, v_in = const[kin], val[kin]
        val_in_rep = None
        if kind in (DEPTHWISE, DEPTHWISE_GROUPS):
            kernel = _depthwise_kernel(layer).numpy()
            m = cg.labels[out].size // c_in.size
            flatk = kernel.reshape(-1, c_in.size * m)  # output c*M+m (both layouts)
            kz = ~np.any(flatk != 0, axis=0)
            s = flatk.astype(np.float64).sum(0)
            bias = _np(layer, "bias")
            b = np.zeros(s.size) if bias is None else bias.astype(np.float64)
            exact = layer.padding == "valid" or all(int(d) == 1 for d in layer.kernel_size)
            cr, vr = np.repeat(c_in, m), np.repeat(v_in, m)
            const[out] = kz | (cr & (exact | (vr == 0)))
            val[out] = _activate(layer, np.where(kz, 0.0, vr * s) + b)
            val_in_rep = vr
            note_broken(out, cr, const[out], f"depthwise {name!r} (padding={layer.padding!r}) turns the constant {{v:.4g}} into values "
                        "that differ at the borders (zero padding)")
        elif kind == VALUE:
            c = c_in.copy()
            if isinstance(layer, L.PReLU):
                alpha = layer.alpha.numpy()
                per_channel = alpha.size == alpha.shape[-1]
                a = alpha.reshape(-1, alpha.shape[-1])[0] if per_channel else np.zeros(alpha.shape[-1])
                a = np.broadcast_to(a, v_in.shape) if a.size in (1, v_in.size) else np.zeros_like(v_in)
                v = np.where(v_in >= 0, v_in, a * v_in)
                if not per_channel:
                    c &= v_in >= 0
                    val_in_rep = v_in
                    note_broken(out, c_in, c, f"PReLU {name!r} has a different slope at every position for the negative constant {{v:.4g}}")
            else:
                v = _probe(layer, np.where(c_in, v_in, 0.0), len(cg.shapes[kin]), node.call_kwargs)
                if v is None:
                    c, v = np.zeros_like(c_in), np.zeros_like(v_in)
                elif isinstance(layer, L.BatchNormalization) and layer.scale:
                    c |= layer.gamma.numpy() == 0
            const[out], val[out] = c, v
        elif kind == SPATIAL:
            const[out], val[out] = c_in, v_in
        elif kind == ZEROPAD:
            const[out], val[out] = c_in & (v_in == 0), v_in
            val_in_rep = v_in
            note_broken(out, c_in, const[out], f"zero padding {name!r} puts zeros around the constant {{v:.4g}}")
        elif kind == PERCHANNEL:
            const[out], val[out] = np.zeros_like(c_in), np.zeros_like(v_in)
        elif kind == FLATTEN:
            reps = cg.labels[out].size // max(c_in.size, 1)
            const[out], val[out] = np.tile(c_in, reps), np.tile(v_in, reps)
        elif kind == MERGE:
            full = [k for k, b in zip(node.inputs, node.broadcast) if not b]
            cs = np.stack([const[k] for k in full])
            vs = [np.where(const[k], val[k], 0.0) for k in full]
            c = cs.all(0) & (not any(node.broadcast))
            if node.op == "Concatenate":  # along a non-channel axis: constant only if every part is the same one
                c, v = c & np.all(np.stack(vs) == vs[0], axis=0), vs[0]
            else:
                v = _merge_values(node.op, vs)
            if node.op == "Multiply":
                zero = np.any(cs & (np.stack(vs) == 0), axis=0)
                c, v = c | zero, np.where(zero, 0.0, v)
            const[out], val[out] = c, v
        elif kind == CONCAT:
            const[out] = np.concatenate([const[k] for k in node.inputs])
            val[out] = np.concatenate([val[k] for k in node.inputs])
    return _Values(const, val, broke)


def _rows_zero(layer: Any, n_in: int) -> np.ndarray:
    """Per input channel of a consumer: True when its kernel rows are all zero (it contributes nothing)."""
    ck = _consumer_kind(layer)
    if ck == "separable":
        m = int(layer.depth_multiplier)
        dw = _out_slices_zero(layer.depthwise_kernel.numpy(), layer.depthwise_kernel.shape.rank - 2)
        pw = layer.pointwise_kernel.numpy()
        pz = _out_slices_zero(pw, pw.ndim - 2).reshape(-1, m).all(1)
        return dw | pz
    kernel = _np(layer, "kernel")
    if conv_groups(layer) > 1:
        out = _grouped_rows_zero(kernel, conv_groups(layer))
        return out if out.size == n_in else np.zeros(n_in, bool)
    axis = kernel.ndim - 1 if ck == "transpose" else kernel.ndim - 2
    out = _out_slices_zero(kernel, axis)
    return out if out.size == n_in else np.zeros(n_in, bool)


def _check_consumers(cg: ChannelGraph, values: _Values, candidates: set[int]) -> tuple[dict[int, str], dict[str, np.ndarray]]:
    """(label -> why it cannot go, consumer -> per-input constant to fold (0 where none)) for the candidate labels.

    The sinks of a channel are the layers that read it and keep their own
    outputs (consumers) and, with ``include_outputs``, the model's outputs
    (where it must be a constant: a varying output channel is not masked).
    """
    from tfprune.inventory.config_graph import refs

    bad: dict[int, str] = {}
    fold: dict[str, np.ndarray] = {}
    cand_arr = np.fromiter(candidates, np.int64, len(candidates))
    for name, node in cg.nodes.items():
        if node.kind != PRODUCER or node.class_name == "Embedding" or not node.inputs:
            continue
        layer = cg.flat.get_layer(name)
        k = node.inputs[0]
        lab = cg.labels[k]
        cand = np.isin(lab, cand_arr)
        if not cand.any():
            continue
        c, v = values.const[k], values.val[k]
        rz = _rows_zero(layer, lab.size)
        note = _padding_note(layer)
        ok = rz | (c & ((v == 0) | (note is None)))
        for e in np.flatnonzero(cand & ~ok):
            lb = int(lab[e])
            if lb in bad:
                continue
            if not c[e]:
                bad[lb] = f"it varies with the input where {name!r} reads it: " + _why_varying(cg, values, lb)
            else:
                bad[lb] = f"it is the constant {v[e]:.4g} where {note}"
        fold[name] = np.where(cand & ok & ~rz & c, v, 0.0)
    for r in refs(cg.graph.output_layers):
        k = (r[0], r[2])
        if k in cg.frozen_tensors:
            continue
        lab = cg.labels[k]
        for e in np.flatnonzero(np.isin(lab, cand_arr) & ~values.const[k]):
            bad.setdefault(int(lab[e]), f"it is in model output {r[0]!r} and varies with the input: " + _why_varying(cg, values, int(lab[e])))
    return bad, fold


def _why_varying(cg: ChannelGraph, values: _Values, label: int) -> str:
    """Why a channel is not constant: producers of it that are not masked, else where its constant was lost."""
    live = []
    for name, node in cg.nodes.items():
        if node.kind == PRODUCER and node.outputs:
            k = node.outputs[0]
            hit = cg.labels[k] == label
            if hit.any() and not values.const[k][hit].all():
                live.append(name)
    if live:
        return f"{', '.join(repr(n) for n in live)} still compute{'s' if len(live) == 1 else ''} it. Fix: mask it in every producer of the group"
    if label in values.broke:
        return values.broke[label] + (". Fix: mask the channel in its whole group (shrink(model, remove=...) does; after a conv that means "
                                      "the BatchNorm's gamma and beta too), so its value is 0")
    return "a layer between makes it vary"


# ------------------------------------------------------------- masking
def _zero_labels(cg: ChannelGraph, labels: Sequence[int]) -> None:
    """Mask the id classes ``labels`` in ``cg.flat`` (in place): producer filters and biases, BN and depthwise channels."""
    labs = np.asarray(sorted(set(int(x) for x in labels)), dtype=np.int64)
    for name, node in cg.nodes.items():
        if not node.outputs or node.kind not in (PRODUCER, DEPTHWISE, DEPTHWISE_GROUPS, VALUE):
            continue
        hit = np.isin(cg.labels[node.outputs[0]], labs)
        if not hit.any():
            continue
        layer = cg.flat.get_layer(name)
        if node.kind == PRODUCER:
            ck = _consumer_kind(layer)
            attr = _kernel_attr(ck)
            w = getattr(layer, attr).numpy()
            axis = {"transpose": w.ndim - 2, "embedding": 1}.get(ck, w.ndim - 1)
            idx = [slice(None)] * w.ndim
            idx[axis] = hit
            w[tuple(idx)] = 0
            getattr(layer, attr).assign(w)
        elif node.kind in (DEPTHWISE, DEPTHWISE_GROUPS):
            var = _depthwise_kernel(layer)
            w = var.numpy()
            shape = w.shape
            w = w.reshape(*shape[:-2], -1)
            w[..., hit] = 0
            var.assign(w.reshape(shape))
        elif isinstance(layer, L.BatchNormalization):
            for attr in ("gamma", "beta", "moving_mean"):
                var = getattr(layer, attr, None)
                if var is not None:
                    a = var.numpy()
                    a[hit] = 0
                    var.assign(a)
            continue
        else:
            continue
        bias = getattr(layer, "bias", None)
        if bias is not None:
            b = bias.numpy()
            b[hit] = 0
            bias.assign(b)


def _requested(cg: ChannelGraph, remove: Mapping[Any, Sequence[int]]) -> dict[int, list[int]]:
    """{group index: sorted channel indices}, checked: prunable groups, valid indices, one channel left."""
    out: dict[int, list[int]] = {}
    for key, chans in remove.items():
        g = cg.group(key)
        if not g.prunable:
            raise ValueError(f"group {g.name!r} cannot be pruned: {cg.frozen[g.name]}. Fix: remove channels of prunable groups "
                             "(tfprune.channel_graph(model).table() lists them)")
        idx = channel_indices(chans, f"remove[{key!r}] (group {g.name!r})", g.channels).tolist()
        if len(idx) >= g.channels:
            raise ValueError(f"removing all {g.channels} channels of group {g.name!r} would leave a layer with none. Fix: keep at least one")
        out[g.index] = sorted(set(out.get(g.index, [])) | set(idx))
    return out


def mask_channels(model: Any, remove: Mapping[Any, Sequence[int]], include_outputs: bool = False) -> Any:
    """A flat copy of ``model`` with the channels ``remove`` ({group: channel indices}) masked in their whole group.

    The copy computes what `shrink(model, remove=...)` will compute; ``model`` is not changed.
    """
    cg = channel_graph(plain(model), include_outputs)
    req = _requested(cg, remove)
    _zero_labels(cg, [int(cg.groups[g].labels[j]) for g, js in req.items() for j in js])
    return cg.flat


def removable_channels(model: Any, include_outputs: bool = False) -> dict[str, list[int]]:
    """{group name: channels `shrink(model)` would remove} for a masked model (nothing is built but the graph)."""
    cg = channel_graph(plain(model), include_outputs)
    values = _propagate(cg)
    chosen, _, _ = _choose(cg, values, None)
    return {cg.groups[g].name: js for g, js in chosen.items() if js}


def _choose(
    cg: ChannelGraph, values: _Values, requested: dict[int, list[int]] | None
) -> tuple[dict[int, list[int]], dict[tuple[int, int], str], dict[str, np.ndarray]]:
    """(group -> channels to remove, (group, channel) -> why a masked one stays, consumer -> constants to fold)."""
    where = cg.group_of_labels()
    if requested is None:
        cands = {int(c) for g in cg.prunable for c in g.labels}
    else:
        cands = {int(cg.groups[g].labels[j]) for g, js in requested.items() for j in js}
    bad, _ = _check_consumers(cg, values, cands)
    masked = _masked_labels(cg, cands) if requested is None else cands
    kept = {where[lb]: why for lb, why in bad.items() if lb in masked}
    chosen: dict[int, list[int]] = {}
    for g, j in sorted(where[lb] for lb in cands - set(bad)):
        chosen.setdefault(g, []).append(j)
    for g, js in list(chosen.items()):
        if len(js) >= cg.groups[g].channels:  # keep one channel per group
            kept[(g, js[-1])] = "the last channel of the group stays (a layer needs at least one)"
            chosen[g] = js[:-1]
    ok = {int(cg.groups[g].labels[j]) for g, js in chosen.items() for j in js}
    fold = _check_consumers(cg, values, ok)[1] if ok else {}
    return chosen, kept, fold


def _masked_labels(cg: ChannelGraph, cands: set[int]) -> set[int]:
    """Candidate labels with at least one zero producer filter (what a user means by "masked")."""
    out: set[int] = set()
    for name, node in cg.nodes.items():
        if node.kind != PRODUCER:
            continue
        layer = cg.flat.get_layer(name)
        ck = _consumer_kind(layer)
        kernel = _np(layer, _kernel_attr(ck))
        axis = {"transpose": kernel.ndim - 2, "embedding": 1}.get(ck, kernel.ndim - 1)
        lab = cg.labels[node.outputs[0]]
        out |= {int(x) for x in lab[_out_slices_zero(kernel, axis)]} & cands
    return out


# ------------------------------------------------------- channel weights
@dataclass(frozen=True)
class ChannelWeight:
    """One variable of the model whose entries belong to channels: multiplying it by ``keep(removed)`` masks them.

    Attributes:
      layer: the flat layer name (a key of ``cg.nodes``; ``cg.graph.sources[layer]``
        is the input model's layer object, ``cg.flat.get_layer(layer)`` the graph's copy).
      weight: the layer attribute holding the variable: ``"kernel"``, ``"bias"``,
        ``"depthwise_kernel"``, ``"pointwise_kernel"``, ``"embeddings"``,
        ``"gamma"``, ``"beta"`` or ``"moving_mean"``.
      axis: the variable's axis that indexes the channel (non-negative). For a
        DepthwiseConv kernel (..., C, M) the channel ``c*M + m`` spans the last
        two axes: ``axis`` is the C axis and ``labels`` has shape (..., C, M).
      labels: int64 array broadcastable to the variable (size 1 on every other
        axis): the id class of each entry, as in `ChannelGroup.labels`
        (channel ``j`` of group ``g`` is ``cg.groups[g].labels[j]``). An id may
        appear several times (a grouped convolution's channel ``j`` is filter
        ``j`` of every group).
      producer: True for a producer's filter bank along its output axis
        (Conv/Dense kernel, SeparableConv pointwise kernel, Embedding columns):
        a channel whose filters are zero in every producer of its group is
        what `shrink` reads as masked.
    """

    layer: str
    weight: str
    axis: int
    labels: np.ndarray
    producer: bool = False

    def variable(self, cg: ChannelGraph, source: bool = True) -> Any:
        """The ``tf.Variable``: of the input model's layer (``source=True``) or of the graph's flat copy."""
        layer = cg.graph.sources[self.layer] if source else cg.flat.get_layer(self.layer)
        return getattr(layer, self.weight)

    def keep(self, removed_labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """1.0 for entries kept, 0.0 for the entries of the id classes ``removed_labels``; float32, shape of ``labels``."""
        removed = np.asarray(list(removed_labels) if not isinstance(removed_labels, np.ndarray) else removed_labels, dtype=np.int64)
        return (~np.isin(self.labels, removed)).astype(np.float32)


def channel_weights(cg: ChannelGraph) -> list[ChannelWeight]:
    """Every variable that must be multiplied by a channel keep-vector so that masked channels are zero downstream.

    Listed for every layer that makes or scales channels, in graph order:

    * producers (Conv1D/2D/3D, grouped convolutions, Dense, ConvTranspose,
      SeparableConv, Embedding): the filters along the output axis
      (``producer=True``) and the bias;
    * depthwise convolutions (``DepthwiseConv*``: ``depthwise_kernel`` over its
      (C, M) axes; ``ConvND(groups=C)``: ``kernel`` along its output axis) and their bias;
    * BatchNormalization ``gamma``, ``beta``, ``moving_mean``; per-channel
      scales (ConvNeXt ``LayerScale``) ``gamma``.

    Consumers' input rows are not listed: a zero channel contributes nothing to them.

    With these multiplied by ``w.keep(removed)``, a removed channel is exactly 0 in
    every tensor of its group that only zero-preserving layers lie on (ReLU,
    GELU, swish, pooling, padding, adds, ...); after a layer with ``f(0) != 0``
    (sigmoid, a Rescaling offset, a Normalization mean) it is that layer's
    constant, which `shrink` folds or checks. Every channel of every group (frozen ones too) has labels here;
    masking only prunable groups is the caller's choice.

    Args:
      cg: ``channel_graph(model)``.

    Returns a list of `ChannelWeight` (layer, weight attribute, channel axis, labels).
    """
    if not isinstance(cg, ChannelGraph):
        raise TypeError(f"cg must be a ChannelGraph (tfprune.structured.channel_graph(model)), got {type(cg).__name__}")
    out: list[ChannelWeight] = []

    def add(name: str, attr: str, var: Any, axis: int, lab: np.ndarray, producer: bool = False) -> None:
        shape = [1] * var.shape.rank
        shape[axis] = lab.size
        out.append(ChannelWeight(name, attr, axis, np.asarray(lab, np.int64).reshape(shape), producer))

    for name, node in cg.nodes.items():
        if not node.outputs or node.outputs[0] not in cg.labels:
            continue
        layer = cg.flat.get_layer(name)
        lab = cg.labels[node.outputs[0]]
        has_bias = getattr(layer, "bias", None) is not None
        if node.kind == PRODUCER:
            ck = _consumer_kind(layer)
            attr = _kernel_attr(ck)
            var = getattr(layer, attr)
            add(name, attr, var, {"transpose": var.shape.rank - 2, "embedding": 1}.get(ck, var.shape.rank - 1), lab, True)
            if has_bias:
                add(name, "bias", layer.bias, 0, lab)
        elif node.kind == DEPTHWISE:
            var = layer.depthwise_kernel
            r = var.shape.rank
            shape = [1] * (r - 2) + [int(var.shape[-2]), int(var.shape[-1])]
            out.append(ChannelWeight(name, "depthwise_kernel", r - 2, np.asarray(lab, np.int64).reshape(shape)))
            if has_bias:
                add(name, "bias", layer.bias, 0, lab)
        elif node.kind == DEPTHWISE_GROUPS:
            add(name, "kernel", layer.kernel, layer.kernel.shape.rank - 1, lab)
            if has_bias:
                add(name, "bias", layer.bias, 0, lab)
        elif node.kind == VALUE and isinstance(layer, L.BatchNormalization):
            for attr in ("gamma", "beta", "moving_mean"):
                var = getattr(layer, attr, None)
                if var is not None:
                    add(name, attr, var, 0, lab)
        elif node.kind == VALUE and is_channel_scale(layer):
            add(name, "gamma", layer.gamma, layer.gamma.shape.rank - 1, lab)
    return out


# ------------------------------------------------------------- rebuild
def _slice_last(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return a[..., keep] if a.ndim and a.shape[-1] == keep.size else a


def _new_config(entry: dict, node: Any, layer: Any, keep: dict[TensorKey, np.ndarray], needs_bias: bool) -> dict:
    e = copy.deepcopy(entry)
    e.pop("build_config", None)
    cfg = e["config"]
    if not node.outputs:
        return e
    out = node.outputs[0]
    n_out = int(keep[out].sum()) if out in keep else None
    if node.kind == PRODUCER:
        key = {"dense": "units", "embedding": "output_dim"}.get(_consumer_kind(layer), "filters")
        cfg[key] = n_out
        if needs_bias:
            cfg["use_bias"] = True
    elif node.kind == DEPTHWISE_GROUPS:
        cfg["filters"] = n_out
        cfg["groups"] = int(keep[node.inputs[0]].sum())
    elif node.kind == SPLIT:  # explicit sizes: the chunks may now differ
        sizes = [int(keep[k].sum()) for k in node.outputs]
        for ref in _raw_ref_lists(e["inbound_nodes"]):
            if "num_or_size_splits" in ref[3]:
                ref[3]["num_or_size_splits"] = sizes
    elif node.class_name == "Reshape" and node.kind in (SPATIAL, FLATTEN):
        target = list(cfg["target_shape"])
        if target and target[-1] != -1:
            target[-1] = n_out if node.kind == SPATIAL else int(keep[out].sum())
        cfg["target_shape"] = target
    elif node.kind == VALUE and node.inputs:
        kin = keep[node.inputs[0]]
        for attr in ("scale", "offset", "mean", "variance"):
            v = cfg.get(attr)
            if isinstance(v, (list, tuple)) and len(v) == kin.size:
                cfg[attr] = [x for x, k in zip(v, kin) if k]
        if is_channel_scale(layer):
            cfg["projection_dim"] = int(kin.sum())
    return e


def _raw_ref_lists(data: Any) -> list[list]:
    """The serialized tensor references (``[layer, node, tensor, kwargs]``) in config node data, as the lists themselves."""
    if isinstance(data, list) and len(data) == 4 and isinstance(data[0], str) and isinstance(data[3], dict):
        return [data]
    if isinstance(data, list):
        return [r for v in data for r in _raw_ref_lists(v)]
    return []


def _new_weights(node: Any, old: Any, new: Any, keep: dict[TensorKey, np.ndarray], delta: np.ndarray | None) -> list[np.ndarray]:
    """``new``'s weights (in ``new.weights`` order) sliced from ``old``; ``delta`` added to the kept biases."""
    if node.kind == PRODUCER:
        ck = _consumer_kind(old)
        ko = keep[node.outputs[0]]
        ki = keep[node.inputs[0]] if node.inputs and ck != "embedding" else None
        arrays: dict[str, np.ndarray] = {}
        if ck == "dense":
            arrays["kernel"] = old.kernel.numpy()[ki][:, ko]
        elif ck == "conv" and conv_groups(old) > 1:
            arrays["kernel"] = old.kernel.numpy()[..., _group_block(ki, conv_groups(old), old.name), :][..., ko]
        elif ck == "conv":
            arrays["kernel"] = old.kernel.numpy()[..., ki, :][..., ko]
        elif ck == "transpose":
            arrays["kernel"] = old.kernel.numpy()[..., ko, :][..., ki]
        elif ck == "separable":
            m = int(old.depth_multiplier)
            arrays["depthwise_kernel"] = old.depthwise_kernel.numpy()[..., ki, :]
            arrays["pointwise_kernel"] = old.pointwise_kernel.numpy()[..., np.repeat(ki, m), :][..., ko]
        else:
            arrays["embeddings"] = old.embeddings.numpy()[:, ko]
        bias = _np(old, "bias")
        if bias is not None or getattr(new, "bias", None) is not None:
            b = np.zeros(ko.size, np.float64) if bias is None else bias.astype(np.float64)
            if delta is not None:
                b = b + delta
            arrays["bias"] = b[ko].astype(new.bias.dtype.as_numpy_dtype)
        return [arrays[_attr_of(new, w)] for w in new.weights]
    if node.kind == DEPTHWISE:
        ki = keep[node.inputs[0]]
        arrays = {"depthwise_kernel": old.depthwise_kernel.numpy()[..., ki, :]}
        if getattr(old, "bias", None) is not None:
            arrays["bias"] = old.bias.numpy()[keep[node.outputs[0]]]
        return [arrays[_attr_of(new, w)] for w in new.weights]
    if node.kind == DEPTHWISE_GROUPS:
        ko = keep[node.outputs[0]]
        arrays = {"kernel": old.kernel.numpy()[..., ko]}
        if getattr(old, "bias", None) is not None:
            arrays["bias"] = old.bias.numpy()[ko]
        return [arrays[_attr_of(new, w)] for w in new.weights]
    if node.kind == VALUE and node.inputs:
        ki = keep[node.inputs[0]]
        return [_slice_last(a, ki) for a in old.get_weights()]
    return old.get_weights()


def _attr_of(layer: Any, weight: Any) -> str:
    for attr in ("kernel", "bias", "depthwise_kernel", "pointwise_kernel", "embeddings"):
        if getattr(layer, attr, None) is weight:
            return attr
    raise RuntimeError(f"internal error: weight {weight.name!r} of {layer.name!r} is not a known attribute")


def _build(cg: ChannelGraph, keep: dict[TensorKey, np.ndarray], fold: dict[str, np.ndarray], name: str) -> tuple[Any, dict[str, int]]:
    from tfprune.inventory.config_graph import Graph

    deltas: dict[str, np.ndarray] = {}
    for cname, v in fold.items():
        if np.any(v != 0):
            layer = cg.flat.get_layer(cname)
            ck = _consumer_kind(layer)
            w = {a: getattr(layer, a).numpy() for a in ("kernel", "depthwise_kernel", "pointwise_kernel") if getattr(layer, a, None) is not None}
            deltas[cname] = fold_delta(ck, w, v, groups=conv_groups(layer))
    entries = []
    for e in cg.graph.layers:
        node = cg.nodes[e["name"]]
        layer = cg.flat.get_layer(e["name"])
        needs_bias = e["name"] in deltas and getattr(layer, "bias", None) is None
        entries.append(_new_config(e, node, layer, keep, needs_bias))
    g = Graph(cg.graph.name, entries, copy.deepcopy(cg.graph.input_layers), copy.deepcopy(cg.graph.output_layers), cg.graph.sources)
    new = g.build(name, copy_weights=False)
    for e in cg.graph.layers:
        node = cg.nodes[e["name"]]
        old = cg.flat.get_layer(e["name"])
        if not old.weights:
            continue
        target = new.get_layer(e["name"])
        target.set_weights(_new_weights(node, old, target, keep, deltas.get(e["name"])))
    return new, {k: int(np.count_nonzero(v)) for k, v in fold.items() if np.any(v != 0)}


# ------------------------------------------------------------- checking
#: The scale a tensor that is exactly zero is measured against (float32's smallest normal number):
#: every other tensor is compared relative to its own ``max |value|``.
SCALE_FLOOR = float(np.finfo(np.float32).tiny)

def _check_inputs(model: Any, x: Any, n: int = 4, seed: int = 0) -> list[np.ndarray]:
    if x is not None:
        return [np.asarray(a) for a in (x if isinstance(x, (list, tuple)) else [x])]
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = [n] + [32 if d is None else int(d) for d in t.shape[1:]]
        if t.dtype.is_integer:
            out.append(rng.integers(0, 2, size=shape).astype(t.dtype.as_numpy_dtype))
        else:
            out.append(rng.normal(size=shape).astype(np.float32))
    return out


def _all_tensors(model: Any, keys: list[TensorKey]) -> Any:
    outs = [tf.nest.flatten(model.get_layer(n).output)[i] for n, i in keys]
    return keras.Model(model.inputs, outs)


def _compare(cg: ChannelGraph, ref: Any, new: Any, xs: list[np.ndarray], keep: dict[TensorKey, np.ndarray]) -> tuple[float, float, float]:
    """(max |diff| over the outputs, max |output|, max relative diff over every tensor), kept entries only.

    Every intermediate tensor is compared too (relative to its own ``max |tensor|``,
    floored at `SCALE_FLOOR`), so a difference cannot hide behind a saturating
    output such as a softmax, nor behind a small scale.
    """
    from tfprune.inventory.config_graph import refs

    keys = [k for n in cg.nodes.values() for k in n.outputs if cg.nodes[k[0]].kind != "input"]
    feed = xs if len(xs) > 1 else xs[0]
    a = [np.asarray(t) for t in tf.nest.flatten(_all_tensors(ref, keys)(feed, training=False))]
    b = [np.asarray(t) for t in tf.nest.flatten(_all_tensors(new, keys)(feed, training=False))]
    outputs = {(r[0], r[2]) for r in refs(cg.graph.output_layers)}
    diff, scale, rel = 0.0, 0.0, 0.0
    for k, ya, yb in zip(keys, a, b):
        km = keep.get(k)
        if km is not None and ya.ndim and ya.shape[-1] == km.size:
            ya = ya[..., km]
        if ya.shape != yb.shape:
            raise RuntimeError(f"internal error: tensor {k} has shape {yb.shape} in the shrunk model, expected {ya.shape}")
        if not ya.size:
            continue
        d = float(np.max(np.abs(ya.astype(np.float64) - yb)))
        m = float(np.max(np.abs(ya)))
        rel = max(rel, d / max(m, SCALE_FLOOR))
        if k in outputs:
            diff, scale = max(diff, d), max(scale, m)
    return diff, scale, rel


# ------------------------------------------------------------- shrink
def shrink(
    model: Any,
    remove: Mapping[Any, Sequence[int]] | None = None,
    *,
    include_outputs: bool = False,
    on_inexact: str | None = None,
    x: Any = None,
    atol: float = 1e-4,
) -> tuple[Any, ShrinkReport]:
    """A new, physically smaller model without the masked channels; outputs checked equal to the masked model's.

    Args:
      model: a tf-keras model whose channels were masked: a wrapped model
        after channel pruning (`tfprune.Pruning(granularity="channel")`),
        or a plain model with zero filters. Not modified.
      remove: instead of reading zeros, remove these channels:
        ``{group (name, index or ChannelGroup from channel_graph(model)): channel indices}``.
        Their whole groups are masked first (see the module docstring).
      include_outputs: also remove channels of the model's outputs (the
        check then compares the kept output channels).
      on_inexact: ``"keep"`` keeps a masked channel whose removal would not
        be exact (reported in ``report.kept``); ``"error"`` raises. Default:
        ``"error"`` with ``remove=``, ``"keep"`` otherwise.
      x: inputs for the check (default: 4 random normal examples).
      atol: the check's relative bound: ``max |new - masked| <= atol * max |masked|``
        on the outputs and on every tensor of the graph (each its own scale;
        `SCALE_FLOOR` for one that is exactly zero). Reported in the `ShrinkReport`.

    Returns ``(new_model, ShrinkReport)``.
    Raises ValueError for groups that cannot be pruned or bad channel
    indices, and RuntimeError if the outputs differ by more than the bound.
    A Keras 3 model is shrunk on its tf-keras twin (`tfprune.keras3.convert`) and comes back as Keras 3.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(shrink, model, remove, include_outputs=include_outputs, on_inexact=on_inexact, x=x, atol=atol)
    t0 = time.perf_counter()
    policy = on_inexact or ("error" if remove is not None else "keep")
    if policy not in ("keep", "error"):
        one_of(on_inexact, "on_inexact", ("keep", "error"))
    atol = number(atol, "atol", minimum=0.0, strict=True, what="a relative tolerance (e.g. 1e-4)")
    model = plain(model)
    cg = channel_graph(model, include_outputs)
    requested = None
    if remove is not None:
        requested = _requested(cg, remove)
        _zero_labels(cg, [int(cg.groups[g].labels[j]) for g, js in requested.items() for j in js])
    values = _propagate(cg)
    chosen, kept, fold = _choose(cg, values, requested)
    names = {(g, j): f"{cg.groups[g].name}[{j}]" for g, j in kept}
    if kept and policy == "error":
        lines = "; ".join(f"{names[k]}: {v}" for k, v in list(kept.items())[:5])
        raise ValueError(f"cannot remove these channels exactly: {lines}. Fix: mask the BatchNorm channels too (shrink(model, remove=...) "
                         "masks whole groups), or pass on_inexact='keep' to leave them in")
    removed_labels = [int(cg.groups[g].labels[j]) for g, js in chosen.items() for j in js]
    keep = cg.keep_masks(removed_labels)
    new, folded = _build(cg, keep, fold, f"{model.name}_shrunk")
    xs = _check_inputs(cg.flat, x)
    diff, scale, rel = _compare(cg, cg.flat, new, xs, keep)
    bound = atol * max(scale, SCALE_FLOOR)
    before, after = profile(cg.flat), profile(new)
    n_kept = {g.index: sum(1 for (gi, _) in kept if gi == g.index) for g in cg.prunable}
    report = ShrinkReport(
        model.name, "remove" if remove is not None else "masks", before.params, after.params, before.macs, after.macs, diff, scale, bound, rel,
        atol, SCALE_FLOOR, [GroupChange(g.name, g.channels, len(chosen.get(g.index, [])), n_kept[g.index]) for g in cg.prunable],
        {cg.groups[g].name: js for g, js in chosen.items() if js}, {names[k]: v for k, v in kept.items()}, folded, cg.frozen,
        time.perf_counter() - t0,
    )
    if not (diff <= bound and rel <= atol):
        raise RuntimeError(f"the shrunk model's outputs differ from the masked model's by {diff:.3g}, {report.max_rel_diff:.3g} of their scale "
                           f"{scale:.3g} (bound: atol={atol:g} of it, {bound:.3g}; largest relative difference of any tensor {rel:.3g}); this is a "
                           f"tfprune bug, please report it with the model. Report:\n{report.table()}")
    return new, report
