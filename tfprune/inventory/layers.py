"""Layer discovery: which weights of a model tfprune can prune, and why not the rest.

`prunable_layers(model)` walks Sequential, functional and nested models (a
model used as a layer) and returns a `LayerInventory`: one `PrunableLayer`
per prunable weight tensor, plus one `SkippedLayer` (with the reason) for
every other layer. Wrapped models (after `tfprune.wrap`) are understood too:
the entry then points at the tfmot wrapper, also where it sits inside a custom
layer (``tfprune.PruneLayer`` put around a layer in a subclass's block).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune._keras import check_model, is_keras3_object, keras
from tfprune.compat import PruneLowMagnitude
from tfprune.inventory.entries import WRAPPER_PREFIX, LayerInventory, PrunableLayer, SkippedLayer, pruned_weight_table

__all__ = ["PrunableLayer", "SkippedLayer", "LayerInventory", "prunable_layers", "nested_wrappers", "PRUNABLE_WEIGHTS", "WRAPPER_PREFIX"]

_KERAS_MODULES = ("tf_keras.", "keras.")

L = keras.layers
#: Layer type -> attribute name of the weight tfprune prunes (most specific first).
PRUNABLE_WEIGHTS: list[tuple[type, str | None]] = pruned_weight_table(L)

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
        from tfprune.keras3.inventory import keras3_inventory

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
