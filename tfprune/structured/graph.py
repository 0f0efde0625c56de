"""The channel graph of a tf-keras model: which channels must be removed together.

Removing output channel ``c`` of a convolution also removes input row ``c``
of every layer that reads it, the BatchNorm statistics of ``c``, the
depthwise filter of ``c``... and, through an ``Add``, channel ``c`` of every
other branch of the residual. This module finds those ties.

How it works. The graph is read from ``model.get_config()`` (nested models
inlined, see `tfprune.inventory.config_graph.flat_graph`); shapes and layer types come
from a flat copy of the model built from that config. Every **channel
element** of every tensor (one entry of its last axis; for ``Flatten``, one
entry of the flat vector) gets an id, and layers either create fresh ids or
tie ids together (union-find):

=========================  ====================================================
layer                      channel rule
=========================  ====================================================
Conv1D/2D/3D, Dense,       **producer**: fresh output ids; reads its input
Conv*Transpose,            channels as kernel rows (a *consumer*); SeparableConv
SeparableConv1D/2D,        rows are its depthwise filters plus pointwise rows
Embedding                  (Embedding reads indices, not channels)
DepthwiseConv1D/2D, and a  output ``c*M+m`` *is* input ``c`` (same id); the
depthwise convolution      grouped form's ``groups`` and ``filters`` shrink with
written as                 the channels
``Conv2D(groups=C)`` on C
inputs, ``filters=M*C``
grouped convolution        **producer** whose channels are tied across its groups
(``groups=G``, 1<G<C)      (see *grouped convolutions* below)
BatchNormalization,        element-wise per channel: same ids (their per-channel
activations, PReLU,        parameters are sliced with the channel)
Rescaling, Normalization,
per-channel scales
(tf_keras.applications
ConvNeXt's ``LayerScale``:
``x * gamma``, gamma (C,))
pooling, global pooling,   the channel axis passes through: same ids
padding, cropping,
up-sampling, dropout,
noise, RepeatVector,
Reshape keeping the
last axis
Flatten (or a Reshape to   flat entry ``p*C+c`` is channel ``c``: one channel
a vector)                  = ``positions`` rows of the next Dense
Add, Subtract, Multiply,   inputs with the output's channel count are tied
Average, Maximum, Minimum  element by element (residuals); an input with one
                           channel is broadcast (squeeze-and-excitation
                           ``x * s`` with ``s`` of shape (1, 1, C) ties ``s``'s
                           C channels to ``x``'s)
Concatenate                on the channel axis: ids concatenated (channel
                           offsets); on another axis: inputs tied
=========================  ====================================================

A **group** is the set of tied channels that behave alike: channels whose
ids appear in the same tensors. Removing channel ``j`` of a group removes
one id class: every element of it in every tensor.

**Grouped convolutions** (``Conv1D/2D/3D(groups=G)`` with ``1 < G`` and
``a = C_in / G > 1`` input channels per group, ``b = C_out / G`` outputs per
group). Input channel ``g*a + i`` is read only by group ``g``'s filters, so a
valid smaller grouped convolution needs the same input channels per group
(and the same outputs per group). The rule: **channel ``i`` of every group is
one coupled channel**. Input entries ``i, a+i, ..., (G-1)*a+i`` are tied (one
id class: removing it removes one input channel from each group, i.e. row
``i`` of the kernel's ``(..., a, C_out)`` input axis); output entries
``j, b+j, ..., (G-1)*b+j`` share one fresh id (removing it removes filter
``j`` of each group). Input and output are not coupled to each other (within a
group the convolution is dense). So a group of channels that feeds (or is made
by) a grouped convolution has ``a`` (or ``b``) removable channels, each of them
``G`` tensor entries; the shrunk layer keeps ``groups=G`` with ``a'`` inputs
and ``b'`` outputs per group. The rule is stricter than validity needs (any
equal count per group would do), but it keeps every removable channel one id
class, which the scorers, the planner's cost model and `shrink` handle as
they are; the price is granularity: one step removes ``G`` tensor channels
(RegNetX002's groups of 8 channels: 8 steps per group). When ``a = 1`` (``groups == C_in``) the layer is a
depthwise convolution and follows the depthwise rule instead (its output
``c*M+m`` is input ``c``; removing channel ``c`` lowers ``groups`` and
``filters``).

``TFOpLambda`` layers (raw TensorFlow ops in a functional model) are followed
when they are known element-wise functions (``tf.nn.relu``, ``x + 3.0``,
``x * (1 / 6)``, ``tf.clip_by_value``...: channels pass through, scalar
constants only), element-wise ``+ - * maximum minimum`` of two tensors (a
merge), ``tf.concat`` and ``tf.split`` on the channel axis (offsets; a split
is rebuilt with explicit sizes).

Anything the graph cannot follow **freezes** the tensors it touches (their
groups are reported, with the reason, and never pruned; the rest of the
model stays prunable): unknown layers, ``Lambda`` layers (arbitrary Python)
and other ``TFOpLambda`` ops, layers that normalize over the channels
(LayerNormalization on the last axis: its mean and variance mix every
channel, so removing one changes the value of all the others; softmax),
``channels_first`` layers, a Reshape that moves channels, the model's inputs,
and the model's outputs (``include_outputs=False``, the default: the layers
that produce the outputs keep every channel).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model, is_keras3_object, keras
from tfprune.report import Report, Table

__all__ = ["ChannelGraph", "ChannelGroup", "LayerNode", "channel_graph", "TensorKey", "conv_groups", "is_channel_scale"]

L = keras.layers
TensorKey = tuple  # (flat layer name, output tensor index)

INPUT, PRODUCER, DEPTHWISE, VALUE, SPATIAL, ZEROPAD, PERCHANNEL, FLATTEN, MERGE, CONCAT, SPLIT, FROZEN = (
    "input", "producer", "depthwise", "value", "spatial", "zeropad", "perchannel", "flatten", "merge", "concat", "split", "frozen")
#: a depthwise convolution written as ``ConvND(groups=C_in, filters=M*C_in)``: the DEPTHWISE rule on a ``kernel`` (..., 1, C_in*M)
DEPTHWISE_GROUPS = "depthwise_groups"
#: layers whose channels pass through unchanged in value (constant in, same constant out)
_SPATIAL = tuple(getattr(L, n) for n in (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization", "RepeatVector", "Identity") if hasattr(L, n))
_ZEROPAD = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_VALUE = (L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.PReLU, L.Rescaling)
_MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = tuple(c for c in (getattr(L, "DepthwiseConv1D", None), L.DepthwiseConv2D) if c is not None)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_CHANNEL_ACTIVATIONS = ("softmax", "log_softmax")


@dataclass
class LayerNode:
    """One layer of the flat graph: its channel rule (``kind``) and the tensors it reads and makes."""

    name: str
    class_name: str
    kind: str
    inputs: list[TensorKey]
    outputs: list[TensorKey]
    reason: str = ""  # why a frozen layer is frozen
    broadcast: list[bool] = field(default_factory=list)  # merge inputs broadcast over the channels
    op: str = ""  # merges: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate
    call_kwargs: dict | None = None  # element-wise TFOpLambda: the constant arguments it is called with
    groups: int = 1  # grouped convolution (PRODUCER): its ``groups``; DEPTHWISE_GROUPS: the input channels


@dataclass
class ChannelGroup:
    """Channels that must be removed together.

    Attributes:
      index: position in `ChannelGraph.groups`.
      name: the first layer whose output holds the group (with ``[a:b]`` when
        it holds only part of that output).
      channels: how many removable channels the group has (channel ``j`` is
        one coupled channel: its entries in every tensor of the group).
      producers: layers whose output channels (filters, units) shrink.
      consumers: layers whose input channels (kernel rows) shrink.
      members: element-wise layers in between (BatchNorm, depthwise,
        activations, pooling, merges, ...), sliced along.
      tensors: ``(layer, output index)`` of every tensor holding the group.
      frozen: why the group cannot be pruned; empty when it can.
      labels: the id class of each channel, in channel order (internal).
    """

    index: int
    name: str
    channels: int
    producers: list[str]
    consumers: list[str]
    members: list[str]
    tensors: list[TensorKey]
    frozen: str = ""
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def prunable(self) -> bool:
        """True when channels of this group can be removed (not frozen, made by a layer, at least two channels)."""
        return not self.frozen and bool(self.producers) and self.channels >= 2


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray([self.find(i) for i in ids.tolist()], dtype=np.int64)


@dataclass
class ChannelGraph(Report):
    """The channel groups of a model (``channel_graph(model)``), with why each frozen group is frozen.

    ``table()`` lists every group; ``group(name_or_index)`` finds one;
    ``positions(group, tensor)`` gives where each of its channels sits in
    a tensor; ``keep_masks(removed)`` the entries each tensor keeps.
    The flat graph (``graph``), the flat copy of the model the shapes come
    from (``flat``), the per-layer rules (``nodes``, in topological order),
    the id class of every tensor entry (``labels``) and the tensor shapes
    (``shapes``) are kept for `tfprune.structured.removal`.
    """

    model_name: str
    groups: list[ChannelGroup]
    include_outputs: bool = False
    nodes: dict[str, LayerNode] = field(default_factory=dict, repr=False)
    labels: dict[TensorKey, np.ndarray] = field(default_factory=dict, repr=False)
    frozen_tensors: dict[TensorKey, str] = field(default_factory=dict, repr=False)
    shapes: dict[TensorKey, tuple] = field(default_factory=dict, repr=False)
    graph: Any = field(default=None, repr=False)
    flat: Any = field(default=None, repr=False)

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    @property
    def frozen(self) -> dict[str, str]:
        """Group name -> reason, for every group that cannot be pruned."""
        return {g.name: g.frozen or ("a single channel" if g.channels < 2 else "no layer makes it") for g in self.groups if not g.prunable}

    def group(self, key: Any) -> ChannelGroup:
        """A group by index, name, or the group itself (checked to belong here)."""
        if isinstance(key, ChannelGroup):
            if key.index < len(self.groups) and self.groups[key.index].name == key.name:
                return self.groups[key.index]
            raise ValueError(f"group {key.name!r} is not a group of this graph ({self.model_name!r}). Fix: take groups from this graph")
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if 0 <= int(key) < len(self.groups):
                return self.groups[int(key)]
            raise ValueError(f"group index {key} out of range: {self.model_name!r} has {len(self.groups)} groups (0..{len(self.groups) - 1}). "
                             "Fix: use a group name or an index in that range")
        for g in self.groups:
            if g.name == key:
                return g
        names = [g.name for g in self.groups]
        raise ValueError(f"no channel group named {key!r} in {self.model_name!r}. Groups: {names[:20]}{' ...' if len(names) > 20 else ''}. "
                         "Fix: use one of those names (a group is named after its first producer layer)")

    def positions(self, group: Any, tensor: TensorKey) -> list[np.ndarray]:
        """For each channel of ``group``, its indices in ``tensor``'s last axis (flat vector for Flatten)."""
        g = self.group(group)
        lab = self.labels[tuple(tensor)]
        return [np.flatnonzero(lab == c) for c in g.labels]

    def keep_masks(self, removed_labels: Iterable[int]) -> dict[TensorKey, np.ndarray]:
        """Per tensor, True for the entries kept when the id classes ``removed_labels`` go."""
        removed = np.asarray(sorted(set(int(x) for x in removed_labels)), dtype=np.int64)
        return {k: ~np.isin(v, removed) for k, v in self.labels.items()}

    def group_of_labels(self) -> dict[int, tuple[int, int]]:
        """id class -> (group index, channel index)."""
        return {int(c): (g.index, j) for g in self.groups for j, c in enumerate(g.labels)}

    def _blocks(self) -> list[str | Table]:
        pr = self.prunable
        rows = []
        for g in self.groups:
            status = "prunable" if g.prunable else f"frozen: {self.frozen[g.name]}"
            rows.append([g.name, g.channels, ", ".join(g.producers), ", ".join(g.consumers), status])
        return [
            f"{self.model_name}: {len(self.groups)} channel groups, {len(pr)} prunable ({sum(g.channels for g in pr)} channels)",
            Table(["group", "channels", "producers", "consumers", "status"], rows, "lrlll"),
        ]

    def _extra_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "n_prunable": len(self.prunable)}


# ------------------------------------------------------------ layer rules
def _axes(axis: Any) -> list[int]:
    if isinstance(axis, (list, tuple)):
        return [int(a) for a in axis]
    return [int(axis)]


def _on_last_axis(axis: Any, rank: int) -> bool:
    return [a % rank for a in _axes(axis)] == [rank - 1]


def _touches_last_axis(axis: Any, rank: int) -> bool:
    return (rank - 1) in [a % rank for a in _axes(axis)]


def activation_name(layer: Any) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", str(fn)) if fn is not None else ""


def conv_groups(layer: Any) -> int:
    """``groups`` of a Conv1D/2D/3D (1 for any other layer, and for an ungrouped convolution)."""
    return int(getattr(layer, "groups", 1) or 1) if isinstance(layer, _CONV) else 1


def _channel_scale_classes() -> tuple[type, ...]:
    from tfprune.compat import layer_scale_class

    cls = layer_scale_class()
    return () if cls is None else (cls,)


def is_channel_scale(layer: Any) -> bool:
    """True for a per-channel scale layer: ``y = x * gamma`` with one weight ``gamma`` of shape (C,).

    Known: ``tf_keras.applications.convnext``'s ``LayerScale`` (weight ``gamma``,
    config ``projection_dim`` = C). Its weight is sliced with the channels.
    """
    return isinstance(layer, _channel_scale_classes())


def _classify(layer: Any, in_shapes: list[tuple], out_shapes: list[tuple]) -> tuple[str, str]:
    """``(kind, reason)``: the channel rule of one layer (reason only for frozen layers)."""
    cls = type(layer).__name__
    if isinstance(layer, L.InputLayer):
        return INPUT, ""
    if not in_shapes or not out_shapes:
        return FROZEN, f"{cls} {layer.name!r} has no input or output tensor tfprune can follow"
    for s in in_shapes + out_shapes:
        if len(s) < 2 or s[-1] is None:
            return FROZEN, f"{cls} {layer.name!r}: a tensor of shape {s} has no known channel axis"
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return FROZEN, f"{cls} {layer.name!r} uses data_format='channels_first'; tfprune follows channels_last models only"
    c_in, c_out = in_shapes[0][-1], out_shapes[0][-1]
    if isinstance(layer, _DEPTHWISE):
        if c_out != c_in * layer.depth_multiplier:
            return FROZEN, f"{cls} {layer.name!r}: output channels {c_out} != input {c_in} x multiplier {layer.depth_multiplier}"
        return DEPTHWISE, ""
    if isinstance(layer, _SEPARABLE + _TRANSPOSE + (L.Dense,)):
        return PRODUCER, ""
    if isinstance(layer, _CONV):
        groups = conv_groups(layer)
        if groups > 1 and (c_in % groups or c_out % groups):
            return FROZEN, f"{cls} {layer.name!r}: groups={groups} does not divide its {c_in} input and {c_out} output channels"
        if groups > 1 and groups == c_in:
            return DEPTHWISE_GROUPS, ""
        return PRODUCER, ""
    if isinstance(layer, L.Embedding):
        return PRODUCER, ""
    rank = len(in_shapes[0])
    if isinstance(layer, L.BatchNormalization):
        if not _on_last_axis(layer.axis, rank):
            return FROZEN, f"BatchNormalization {layer.name!r} normalizes axis {layer.axis}, not the channel axis"
        kind = VALUE
    elif isinstance(layer, L.LayerNormalization):
        if _touches_last_axis(layer.axis, rank):
            return FROZEN, (f"LayerNormalization {layer.name!r} normalizes over the channels (axis {layer.axis}): its mean and "
                            "variance mix all channels, so removing a channel would change every other channel's value (not exact). "
                            "Its input and output channels are kept")
        kind = PERCHANNEL
    elif is_channel_scale(layer):
        kind = VALUE
    elif isinstance(layer, L.Normalization):
        if not _on_last_axis(layer.axis, rank):
            return FROZEN, f"Normalization {layer.name!r} has axis {layer.axis}, not the channel axis alone"
        kind = VALUE
    elif isinstance(layer, L.Softmax):
        return FROZEN, f"Softmax {layer.name!r} normalizes over an axis: removing a channel changes the others"
    elif isinstance(layer, L.Activation):
        if activation_name(layer) in _CHANNEL_ACTIVATIONS:
            return FROZEN, f"Activation {layer.name!r} ({activation_name(layer)}) normalizes over the channels"
        kind = VALUE
    elif isinstance(layer, _VALUE):
        kind = VALUE
    elif isinstance(layer, _SPATIAL):
        kind = SPATIAL
    elif isinstance(layer, _ZEROPAD):
        kind = ZEROPAD
    elif isinstance(layer, L.Flatten):
        return FLATTEN, ""
    elif isinstance(layer, L.Reshape):
        if c_out == c_in and len(out_shapes[0]) >= 2:
            kind = SPATIAL
        elif len(out_shapes[0]) == 2:
            return FLATTEN, ""
        else:
            return FROZEN, f"Reshape {layer.name!r} {in_shapes[0][1:]} -> {out_shapes[0][1:]} moves channels off the last axis"
    elif isinstance(layer, _MERGE):
        for s in in_shapes:
            if s[-1] not in (c_out, 1):
                return FROZEN, f"{cls} {layer.name!r} merges tensors with {s[-1]} and {c_out} channels"
        return MERGE, ""
    elif isinstance(layer, L.Concatenate):
        return CONCAT, ""
    elif isinstance(layer, L.Lambda):
        return FROZEN, (f"Lambda {layer.name!r} runs Python code tfprune cannot read, so it does not know how it maps channels: "
                        "the channels it reads and makes are kept (only their groups are frozen). Fix: write it with Keras "
                        "built-in layers (e.g. Multiply, Add, Activation) to let those channels be removed")
    else:
        return FROZEN, (f"{cls} {layer.name!r}: tfprune does not know how this layer maps channels (a custom or unsupported layer "
                        "is opaque). Fix: build it from Keras built-in layers in the functional graph, or leave these channels in")
    if len(in_shapes) != 1 or len(out_shapes) != 1 or c_out != c_in:
        return FROZEN, f"{cls} {layer.name!r} changes the channel count ({c_in} -> {c_out})"
    return kind, ""


# ------------------------------------------------------ TensorFlow ops
#: TFOpLambda functions that act element by element (with scalar constants), so channels pass through
_TF_ELEMENTWISE = frozenset({
    "nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.gelu", "nn.silu", "nn.swish", "nn.sigmoid", "math.sigmoid", "nn.tanh", "math.tanh",
    "nn.softplus", "math.softplus", "nn.softsign", "math.softsign", "nn.leaky_relu", "math.abs", "math.negative", "math.square",
    "math.exp", "math.log", "math.sqrt", "math.rsqrt", "math.erf", "math.reciprocal", "identity", "clip_by_value",
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.divide", "math.maximum", "math.minimum",
    "math.pow",
})
#: TFOpLambda functions of two tensors that act like a Keras merge layer
_TF_MERGE = {"__operators__.add": "Add", "math.add": "Add", "math.subtract": "Subtract", "math.multiply": "Multiply",
             "math.maximum": "Maximum", "math.minimum": "Minimum"}


def _is_scalar(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float, bool, np.integer, np.floating)))


def _tf_op(entry: dict, layer: Any, in_shapes: list[tuple], out_shapes: list[tuple]) -> tuple[str, str, str, dict | None]:
    """``(kind, reason, merge op, constant kwargs)`` of a TFOpLambda: element-wise ops of known TF functions pass channels through."""
    from tfprune.inventory.config_graph import refs

    fn = entry["config"].get("function", layer.name)
    unknown = (FROZEN, (f"TFOpLambda {layer.name!r} (tf.{fn}): a raw TensorFlow op whose channel mapping tfprune cannot read. "
                        "Fix: use a Keras layer instead (e.g. keras.layers.Permute, Reshape, Multiply)"), "", None)
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1 or not nodes[0]:
        return unknown
    node = nodes[0]
    if not out_shapes or any(len(sh) < 2 or sh[-1] is None for sh in in_shapes + out_shapes):
        return unknown
    rank = len(out_shapes[0])
    if fn == "concat" and isinstance(node[0], (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == 4 for r in node):
        axes = {r[3].get("axis") for r in node}
        extra = {k for r in node for k in r[3] if k not in ("axis", "name")}
        if len(axes) == 1 and isinstance(next(iter(axes)), int) and next(iter(axes)) % rank == rank - 1 and not extra:
            return CONCAT, "", "Concatenate", None
        return unknown
    first = node if isinstance(node[0], str) else node[0]
    if not (isinstance(first, (list, tuple)) and len(first) == 4 and isinstance(first[0], str) and isinstance(first[3], dict)):
        return unknown
    if isinstance(node[0], (list, tuple)) and len(node) > 1:  # more positional arguments than the tensor
        return unknown
    n_refs = len(refs(entry["inbound_nodes"]))
    kwargs = {k: v for k, v in first[3].items() if k != "name"}
    tensor_kw = [k for k, v in kwargs.items() if not _is_scalar(v)]
    if fn == "split" and n_refs == 1 and set(kwargs) <= {"num_or_size_splits", "axis", "num"}:
        axis = kwargs.get("axis", 0)
        if isinstance(axis, int) and axis % len(in_shapes[0]) == len(in_shapes[0]) - 1 and sum(sh[-1] for sh in out_shapes) == in_shapes[0][-1]:
            return SPLIT, "", "", kwargs
        return unknown
    if len(out_shapes) != 1:
        return unknown
    if fn in _TF_ELEMENTWISE and n_refs == 1 and not tensor_kw:
        if in_shapes[0][-1] != out_shapes[0][-1]:
            return unknown
        return VALUE, "", "", kwargs
    if fn in _TF_MERGE and n_refs == 2 and tensor_kw == ["y"] and all(_is_scalar(v) for k, v in kwargs.items() if k != "y"):
        if any(s[-1] not in (out_shapes[0][-1], 1) for s in in_shapes):
            return unknown
        return MERGE, "", _TF_MERGE[fn], None
    return unknown


# ------------------------------------------------------------- the graph
def _flat(model: Any) -> Any:
    from tfprune.inventory.config_graph import flat_graph

    try:
        try:
            return flat_graph(model)
        except TypeError:
            # a functional model whose class overrides get_config (keras-cv backbones return their constructor
            # arguments): read the same layers through a plain functional model over its inputs and outputs
            if not (isinstance(model, keras.Model) and model.inputs and model.outputs) or isinstance(model, keras.Sequential):
                raise
            return flat_graph(keras.Model(model.inputs, model.outputs, name=model.name))
    except (ValueError, TypeError) as err:
        text = str(err).replace("shallowing needs", "channel removal needs").replace("Shallowing", "Channel removal")
        raise type(err)(f"cannot build the channel graph of {model.name!r}: {text}") from err


_WRAPPER_CLASSES = ("PruneLayer", "PruneLowMagnitude", "ChannelMask")


def _plain(model: Any) -> Any:
    """``model`` itself; a model holding pruning wrappers is refused (the graph stage sits below the masks stage)."""

    def wrapped(m: Any) -> bool:
        return any(type(layer).__name__ in _WRAPPER_CLASSES or (isinstance(layer, keras.Model) and wrapped(layer))
                   for layer in getattr(m, "layers", []))

    if wrapped(model):
        raise ValueError(f"model {model.name!r} holds pruning wrappers; the channel graph reads plain models. "
                         "Fix: pass tfprune.strip(model) (the masks are kept as zeros)")
    return model


def _shape(t: Any) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def _toposort(graph: Any) -> list[str]:
    names = graph.names()
    deps = {n: {r[0] for r in graph.inputs_of(n)} for n in names}
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in done and deps[n] <= done]
        if not ready:
            raise ValueError(f"the layer graph has a cycle or a missing layer among {sorted(set(names) - done)[:10]}")
        for n in ready:
            order.append(n)
            done.add(n)
    return order


def channel_graph(model: Any, include_outputs: bool = False) -> ChannelGraph:
    """The channel groups of a Sequential, functional or nested tf-keras model.

    Args:
      model: a built tf-keras model; a wrapped model (`tfprune.wrap`) is read
        through `tfprune.strip` (masks applied). It is not modified.
      include_outputs: allow removing channels of the model's outputs
        (changes the output shape). Off by default: the layers producing the
        outputs keep all their channels.

    Returns a `ChannelGraph` (``print`` it for the table of groups). A Keras 3 model is read through its tf-keras twin
    (`tfprune.keras3.convert`): the groups, names and channel counts are the same.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(channel_graph, model, include_outputs)
    check_model(model)
    plain = _plain(model)
    graph = _flat(plain)
    flat = graph.build(copy_weights=True)
    uf = _UnionFind()
    ids: dict[TensorKey, np.ndarray] = {}
    shapes: dict[TensorKey, tuple] = {}
    frozen: dict[TensorKey, str] = {}
    nodes: dict[str, LayerNode] = {}

    def freeze(key: TensorKey, reason: str) -> None:
        if key not in frozen:
            frozen[key] = reason
        elif reason not in frozen[key]:
            frozen[key] += "; " + reason

    for name in _toposort(graph):
        layer = flat.get_layer(name)
        ins = [(r[0], r[2]) for r in graph.inputs_of(name)]
        out_tensors = tf.nest.flatten(layer.output)
        outs = [(name, i) for i in range(len(out_tensors))]
        for k, t in zip(outs, out_tensors):
            shapes[k] = _shape(t)
        in_shapes, out_shapes = [shapes[k] for k in ins], [shapes[k] for k in outs]
        op, call_kwargs = type(layer).__name__, None
        if op == "TFOpLambda":
            kind, reason, op, call_kwargs = _tf_op(graph._entry(name), layer, in_shapes, out_shapes)
        else:
            kind, reason = _classify(layer, in_shapes, out_shapes)
        node = LayerNode(name, type(layer).__name__, kind, ins, outs, reason, op=op, call_kwargs=call_kwargs, groups=conv_groups(layer))
        nodes[name] = node
        if kind == INPUT:
            for k in outs:
                ids[k] = uf.fresh(int(shapes[k][-1]) if len(shapes[k]) >= 2 and shapes[k][-1] is not None else 0)
                freeze(k, f"model input {name!r}")
        elif kind == FROZEN:
            for k in ins:
                freeze(k, reason)
            for k in outs:
                s = shapes[k]
                ids[k] = uf.fresh(int(s[-1]) if len(s) >= 2 and s[-1] is not None else 0)
                freeze(k, reason)
        elif kind == PRODUCER and node.groups > 1:  # channel i of every group is one channel (module docstring)
            g = node.groups
            per_in = ids[ins[0]].reshape(g, -1)
            for row in per_in[1:]:
                uf.union(per_in[0], row)
            ids[outs[0]] = np.tile(uf.fresh(int(out_shapes[0][-1]) // g), g)
            if activation_name(layer) in _CHANNEL_ACTIVATIONS:
                freeze(outs[0], f"{node.class_name} {name!r} has activation {activation_name(layer)!r}, which normalizes over its channels")
        elif kind == PRODUCER:
            ids[outs[0]] = uf.fresh(int(out_shapes[0][-1]))
            if isinstance(layer, L.Embedding):
                for k in ins:
                    freeze(k, f"feeds Embedding {name!r}, which reads indices, not channels")
            if activation_name(layer) in _CHANNEL_ACTIVATIONS:
                freeze(outs[0], f"{node.class_name} {name!r} has activation {activation_name(layer)!r}, which normalizes over its channels")
        elif kind == DEPTHWISE:
            ids[outs[0]] = np.repeat(ids[ins[0]], layer.depth_multiplier)
        elif kind == DEPTHWISE_GROUPS:
            ids[outs[0]] = np.repeat(ids[ins[0]], int(out_shapes[0][-1]) // int(in_shapes[0][-1]))
        elif kind in (VALUE, SPATIAL, ZEROPAD, PERCHANNEL):
            ids[outs[0]] = ids[ins[0]]
        elif kind == FLATTEN:
            c = int(in_shapes[0][-1])
            n = int(np.prod([d for d in out_shapes[0][1:]]))
            ids[outs[0]] = np.tile(ids[ins[0]], n // c)
        elif kind == SPLIT:  # contiguous chunks of the channels
            start = 0
            for k, sh in zip(outs, out_shapes):
                ids[k] = ids[ins[0]][start:start + int(sh[-1])]
                start += int(sh[-1])
        elif kind == MERGE:
            c = int(out_shapes[0][-1])
            node.broadcast = [s[-1] != c for s in in_shapes]
            full = [ids[k] for k, b in zip(ins, node.broadcast) if not b]
            if not full:  # every input has one channel
                full, node.broadcast = [ids[k] for k in ins], [False] * len(ins)
            for other in full[1:]:
                uf.union(full[0], other)
            ids[outs[0]] = full[0]
        elif kind == CONCAT:
            rank = len(out_shapes[0])
            if node.op == "Concatenate" and node.class_name == "TFOpLambda" or int(layer.axis) % rank == rank - 1:
                ids[outs[0]] = np.concatenate([ids[k] for k in ins])
            else:  # along another axis: channel c of every input is channel c of the output
                node.kind, node.broadcast, node.op = MERGE, [False] * len(ins), "Concatenate"
                for k in ins[1:]:
                    uf.union(ids[ins[0]], ids[k])
                ids[outs[0]] = ids[ins[0]]
    if not include_outputs:
        for r in _refs(graph.output_layers):
            freeze((r[0], r[2]), f"model output {r[0]!r} (include_outputs=True allows removing its channels)")
    labels = {k: uf.roots(v) for k, v in ids.items()}
    groups = _groups(labels, nodes, frozen)
    return ChannelGraph(model.name, groups, include_outputs, nodes, labels, frozen, shapes, graph, flat)


def _refs(data: Any) -> list[tuple]:
    from tfprune.inventory.config_graph import refs

    return refs(data)


def _groups(labels: dict[TensorKey, np.ndarray], nodes: dict[str, LayerNode], frozen: dict[TensorKey, str]) -> list[ChannelGroup]:
    """Id classes grouped by the tensors they appear in; each group's channels ordered by their place in its lead tensor."""
    where: dict[int, list[TensorKey]] = defaultdict(list)
    order = [k for n in nodes.values() for k in n.outputs if k in labels]
    for k in order:
        for c in np.unique(labels[k]).tolist():
            where[c].append(k)
    by_sig: dict[tuple, list[int]] = defaultdict(list)
    for c, keys in where.items():
        by_sig[tuple(keys)].append(c)
    reads: dict[TensorKey, list[str]] = defaultdict(list)
    for n in nodes.values():
        for k in n.inputs:
            reads[k].append(n.name)
    groups: list[ChannelGroup] = []
    taken: set[str] = set()
    pos = {k: i for i, k in enumerate(order)}
    for sig, cls in sorted(by_sig.items(), key=lambda kv: (pos[kv[0][0]], min(kv[1]))):
        tensors = list(sig)
        prod = [k[0] for k in tensors if nodes[k[0]].kind == PRODUCER]
        lead = next((k for k in tensors if nodes[k[0]].kind == PRODUCER), tensors[0])
        lab = labels[lead]
        first = {c: int(np.flatnonzero(lab == c)[0]) for c in cls}
        cls = sorted(cls, key=lambda c: first[c])
        lo, hi = first[cls[0]], first[cls[-1]]
        name = lead[0] if lead[1] == 0 else f"{lead[0]}:{lead[1]}"
        if len(cls) * max(1, int(np.sum(lab == cls[0]))) != lab.size:
            name = f"{name}[{lo}:{hi + 1}]"
        base, i = name, 2
        while name in taken:
            name, i = f"{base}#{i}", i + 1
        taken.add(name)
        in_sig = set(tensors)
        consumers = [n.name for n in nodes.values() if n.kind == PRODUCER and n.class_name != "Embedding"
                     and n.inputs and n.inputs[0] in in_sig]
        members = [k[0] for k in tensors if nodes[k[0]].kind not in (PRODUCER, INPUT, FROZEN)]
        reasons = list(dict.fromkeys(r for k in tensors if k in frozen for r in frozen[k].split("; ")))
        for k in tensors:  # frozen readers (their inputs are frozen too, but say which layer)
            for r in reads[k]:
                if nodes[r].kind == FROZEN and nodes[r].reason not in reasons:
                    reasons.append(nodes[r].reason)
        groups.append(ChannelGroup(len(groups), name, len(cls), prod, consumers, members, tensors, "; ".join(reasons),
                                   np.asarray(cls, dtype=np.int64)))
    return groups


def channel_mask_owners(cg: ChannelGraph, layer_of: Any, include: list | None = None, exclude: list | None = None) -> set[str]:
    """Names of the layers that get a channel mask: weighted, foldable, and producing channels of a prunable group.

    ``layer_of(name)`` gives the model's layer of that name (tf-keras or Keras 3) or None; ``include`` / ``exclude``
    are selector lists (`tfprune.inventory.selectors`). Raises ValueError when the model has no prunable group.
    """
    from tfprune.inventory.selectors import selector_matches
    from tfprune.masks.channel_mask import foldable

    prunable = np.concatenate([g.labels for g in cg.prunable] or [np.zeros(0, np.int64)])
    if not prunable.size:
        reasons = sorted({r for reason in cg.frozen.values() for r in reason.split("; ")})[:4]
        raise ValueError(f"model {cg.graph.name!r} has no channel group tfprune can remove: all {len(cg.groups)} are frozen ({'; '.join(reasons)}). "
                         "See tfprune.channel_graph(model).table(). Fix: build the frozen blocks from Keras built-in layers, or pass "
                         "include_outputs=True if only the outputs are left")
    chosen: set[str] = set()
    for name, node in cg.nodes.items():
        src = layer_of(name)
        if src is None or not src.weights or not node.outputs or node.outputs[0] not in cg.labels:
            continue
        if not np.isin(cg.labels[node.outputs[0]], prunable).any() or not foldable(src):
            continue
        if (include is not None and not selector_matches(src, include)) or (exclude is not None and selector_matches(src, exclude)):
            continue
        chosen.add(name)
    if not chosen:
        raise ValueError("include/exclude selected no layer of a prunable channel group. See tfprune.channel_graph(model).table().")
    return chosen
