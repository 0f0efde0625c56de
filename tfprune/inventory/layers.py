"""Layer discovery: which weights of a model tfprune can prune, and why not the rest.

`prunable_layers(model)` walks Sequential, functional and nested models (a
model used as a layer) and returns a `LayerInventory`: one `PrunableLayer`
per prunable weight tensor, plus one `SkippedLayer` (with the reason) for
every other layer. Wrapped models (after `tfprune.wrap`) are understood too:
the entry then points at the tfmot wrapper, also where it sits inside a custom
layer (``tfprune.PruneLayer`` put around a layer in a subclass's block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from tfprune._keras import check_model, is_keras3_object, keras
from tfprune.compat import PruneLowMagnitude

__all__ = ["PrunableLayer", "SkippedLayer", "LayerInventory", "prunable_layers", "nested_wrappers", "PRUNABLE_WEIGHTS", "WRAPPER_PREFIX"]

WRAPPER_PREFIX = "prune_low_magnitude_"
_KERAS_MODULES = ("tf_keras.", "keras.")

L = keras.layers
#: Layer type -> attribute name of the weight tfprune prunes (most specific first).
PRUNABLE_WEIGHTS: list[tuple[type, str]] = [
    (L.SeparableConv1D, "pointwise_kernel"),
    (L.SeparableConv2D, "pointwise_kernel"),
    (L.Conv1DTranspose, "kernel"),
    (L.Conv2DTranspose, "kernel"),
    (L.Conv3DTranspose, "kernel"),
    (L.Conv1D, "kernel"),
    (L.Conv2D, "kernel"),
    (L.Conv3D, "kernel"),
    (L.Dense, "kernel"),
    (L.Embedding, "embeddings"),
]

_SKIP_REASONS: list[tuple[type, str]] = [
    (L.DepthwiseConv2D, "depthwise kernels are tiny and tfmot does not prune them"),
    (L.BatchNormalization, "normalization parameters are not pruned"),
    (L.LayerNormalization, "normalization parameters are not pruned"),
    (L.InputLayer, "input placeholder"),
    (L.RNN, "recurrent layers are not supported by tfprune yet"),
    (L.MultiHeadAttention, "attention layers are not supported by tfprune yet"),
]


def weight_kind(layer: Any) -> str | None:
    for cls, attr in PRUNABLE_WEIGHTS:
        if isinstance(layer, cls):
            return attr
    return None


@dataclass
class PrunableLayer:
    """One prunable weight tensor.

    Attributes:
      name: the original layer's name (without the wrapper prefix).
      path: ``outer/inner/name`` for layers inside nested models, else ``name``.
      layer_type: class name of the original layer (e.g. ``Dense``).
      weight: attribute of the pruned weight (``kernel``, ``pointwise_kernel``, ``embeddings``).
      shape: shape of that weight.
      n_params: number of entries of that weight (the unit of every sparsity count).
      wrapped: True when the layer already carries a tfmot ``PruneLowMagnitude`` wrapper.
    """

    name: str
    path: str
    layer_type: str
    weight: str
    shape: tuple[int, ...]
    n_params: int
    wrapped: bool = False
    layer: Any = field(default=None, repr=False, compare=False)

    @property
    def inner(self) -> Any:
        """The original Keras layer (unwrapped)."""
        return self.layer.layer if self.wrapped else self.layer

    def kernel(self) -> np.ndarray:
        """Current value of the pruned weight (masked if wrapped), as numpy."""
        w = getattr(self.inner, self.weight).numpy()
        if self.wrapped:
            mask = self.mask()
            if mask is not None:
                w = w * mask
        return w

    def mask(self) -> np.ndarray | None:
        """The tfmot mask (1 = kept) of a wrapped layer, else None."""
        if not self.wrapped or not self.layer.pruning_vars:
            return None
        return self.layer.pruning_vars[0][1].numpy()

    def sparsity(self) -> float:
        """Fraction of this weight that is exactly zero now (masked if wrapped)."""
        w = self.kernel()
        return float(np.count_nonzero(w == 0)) / w.size

    @property
    def schedule(self) -> Any:
        """The wrapper's pruning schedule (None if not wrapped)."""
        return self.layer.pruning_schedule if self.wrapped else None


@dataclass
class SkippedLayer:
    """A layer that holds no prunable weight, and why."""

    name: str
    path: str
    layer_type: str
    reason: str
    n_params: int = 0
    kernels_inside: int = 0  # weights of Conv/Dense-type layers nested inside this (custom) layer, which tfprune does not prune


@dataclass
class LayerInventory:
    """Result of `prunable_layers`: iterate it for the prunable entries."""

    prunable: list[PrunableLayer]
    skipped: list[SkippedLayer]

    def __iter__(self) -> Iterator[PrunableLayer]:
        return iter(self.prunable)

    def __len__(self) -> int:
        return len(self.prunable)

    def __getitem__(self, key: int | str) -> PrunableLayer:
        if isinstance(key, str):
            for p in self.prunable:
                if key in (p.name, p.path, WRAPPER_PREFIX + p.name):
                    return p
            raise KeyError(f"no prunable layer named {key!r}; prunable layers: {self.names}")
        return self.prunable[key]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prunable]

    @property
    def n_params(self) -> int:
        """Total number of prunable weights (the denominator of total sparsity)."""
        return int(sum(p.n_params for p in self.prunable))

    @property
    def n_skipped_kernels(self) -> int:
        """Weights of prunable layer types that sit inside skipped (custom) layers: not counted in ``n_params``, never pruned."""
        return int(sum(s.kernels_inside for s in self.skipped))

    def sparsity(self) -> dict[str, float]:
        """Current fraction of zeros of every prunable weight, by layer name."""
        return {p.name: p.sparsity() for p in self.prunable}

    def total_sparsity(self) -> float:
        """Zeros over all prunable weights / their count."""
        zeros = sum(int(np.count_nonzero(p.kernel() == 0)) for p in self.prunable)
        return zeros / max(self.n_params, 1)

    def table(self) -> str:
        """A plain-text table of prunable and skipped layers (columns sized to the names)."""
        from tfprune.report import format_table

        rows = [[p.path, p.layer_type, p.weight, str(p.shape), p.n_params, "yes" if p.wrapped else "no"] for p in self.prunable]
        out = [format_table(["layer", "type", "weight", "shape", "params", "wrapped"], rows, "llllrl"), f"total prunable weights: {self.n_params}"]
        if self.skipped:
            out += ["skipped:", format_table(["layer", "type", "reason"], [[s.path, s.layer_type, s.reason] for s in self.skipped], "lll")]
        return "\n".join(out)

    __str__ = table


def _skip_reason(layer: Any) -> str:
    for cls, reason in _SKIP_REASONS:
        if isinstance(layer, cls):
            return reason
    if not layer.weights:
        return "has no weights"
    return f"{type(layer).__name__} is not a prunable layer type (prunable: Dense, Conv1D/2D/3D, ConvTranspose, SeparableConv pointwise, Embedding)"


def _kernels_inside(layer: Any) -> int:
    """Weights of prunable layer types (their kernel) nested anywhere inside ``layer`` (not ``layer`` itself)."""
    total, seen = 0, set()
    subs = list(getattr(layer, "submodules", ()))
    wrapped = {id(s.layer) for s in subs if isinstance(s, PruneLowMagnitude) or getattr(s, "masks_output_channels", False)}  # pruned by their wrapper
    for sub_layer in subs:
        if sub_layer is layer or id(sub_layer) in seen or id(sub_layer) in wrapped or not isinstance(sub_layer, keras.layers.Layer):
            continue
        seen.add(id(sub_layer))
        attr = weight_kind(sub_layer)
        w = getattr(sub_layer, attr, None) if attr else None
        if w is not None and hasattr(w, "shape"):
            total += int(np.prod(w.shape))
    return total


def nested_wrappers(layer: Any, cls: Any = PruneLowMagnitude) -> list[Any]:
    """The wrappers of class ``cls`` (default tfmot's, `tfprune.PruneLayer` among them) inside a custom, non-Model ``layer``, at any depth.

    Keras' own layers are not searched (walking ``submodules`` is slow, and
    they hold no wrapper), so this costs nothing on a model of built-in layers.
    """
    if type(layer).__module__.startswith(_KERAS_MODULES):
        return []
    return [s for s in getattr(layer, "submodules", ()) if isinstance(s, cls) and s is not layer]


def prunable_layers(model: Any) -> LayerInventory:
    """List every prunable weight of ``model`` and the reason each other layer is skipped.

    Args:
      model: a built tf-keras Sequential or functional model (nested models,
        shared layers and tfmot-wrapped layers are fine).

    Returns:
      A `LayerInventory`; ``list(inventory)`` gives the `PrunableLayer`s in
      the order of ``model.layers`` (depth first into nested models).

    A Keras 3 model is read by `tfprune.keras3.models.keras3_inventory` (same result types).
    """
    if is_keras3_object(model):
        from tfprune.keras3.models import keras3_inventory

        return keras3_inventory(model)
    check_model(model)
    prunable: list[PrunableLayer] = []
    skipped: list[SkippedLayer] = []
    seen: set[int] = set()

    def visit(m: Any, prefix: str) -> None:
        for layer in m.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            path = f"{prefix}{layer.name}"
            if isinstance(layer, PruneLowMagnitude):
                wrapped_entry(layer, prefix)
            elif isinstance(layer, keras.Model):
                visit(layer, f"{path}/")
            else:
                if getattr(layer, "masks_output_channels", False):  # a ChannelMask: its layer's weights are the model's
                    layer = layer.layer
                    path = f"{prefix}{layer.name}"
                attr = weight_kind(layer)
                w = getattr(layer, attr, None) if attr else None
                if attr and w is not None:
                    prunable.append(PrunableLayer(layer.name, path, type(layer).__name__, attr, tuple(w.shape), int(np.prod(w.shape)), False, layer))
                elif attr:
                    skipped.append(SkippedLayer(layer.name, path, type(layer).__name__, "layer is not built (no weights yet)"))
                else:
                    n = int(sum(np.prod(v.shape) for v in layer.weights))
                    inside = _kernels_inside(layer)
                    reason = _skip_reason(layer)
                    held = nested_wrappers(layer)
                    if held:
                        reason += f"; the {len(held)} wrapped layer(s) inside it are listed as prunable"
                    if inside:
                        reason += (f"; it holds {inside} weights of Conv/Dense layers that are not pruned. Fix: build the model from those "
                                   "layers directly (functional), or put tfprune.PruneLayer around them inside the custom layer")
                    skipped.append(SkippedLayer(layer.name, path, type(layer).__name__, reason, n, inside))
                    for sub in nested_wrappers(layer):  # tfprune.PruneLayer put around layers inside a custom layer: pruned as they are
                        if id(sub) not in seen:
                            seen.add(id(sub))
                            wrapped_entry(sub, f"{path}/")

    def wrapped_entry(layer: Any, prefix: str) -> None:
        inner = layer.layer
        attr = weight_kind(inner)
        if attr is None:  # a custom PrunableLayer: take its first prunable weight
            weights = inner.get_prunable_weights()
            if not weights:
                skipped.append(SkippedLayer(inner.name, f"{prefix}{inner.name}", type(inner).__name__, "wrapped layer has no prunable weights"))
                return
            w = weights[0]
            attr = next((a for a in ("kernel", "embeddings", "pointwise_kernel") if getattr(inner, a, None) is w), "kernel")
        w = getattr(inner, attr)
        prunable.append(PrunableLayer(inner.name, f"{prefix}{inner.name}", type(inner).__name__, attr, tuple(w.shape), int(np.prod(w.shape)), True, layer))

    visit(model, "")
    names = [p.name for p in prunable]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        # Names must identify layers; fall back to paths for the duplicates.
        for p in prunable:
            if p.name in dupes:
                p.name = p.path
    return LayerInventory(prunable, skipped)
