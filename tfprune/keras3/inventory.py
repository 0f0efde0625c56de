"""The inventory of a Keras 3 model (`tfprune.prunable_layers` dispatches here): walk its layers, list what can be pruned and why not the rest."""

from __future__ import annotations

from typing import Any, Iterator

import keras
import numpy as np

from tfprune.inventory.entries import LayerInventory, PrunableLayer, SkippedLayer
from tfprune.keras3.wrapper import WRAPPER_PREFIX, ChannelMask, PruneWrapper, pruned_weight_name

__all__ = ["walk", "is_graph_model", "strip_prefix", "keras3_inventory", "is_keras3", "check_keras3_model", "keras3_wrappers",
           "keras3_channel_masks"]


def is_graph_model(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` of every layer, depth first, descending into nested models (not into wrappers)."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from walk(layer, path + "/")
        else:
            yield path, layer


def strip_prefix(name: str) -> str:
    from tfprune.masks.channel_mask import CHANNEL_MASK_PREFIX

    for prefix in (WRAPPER_PREFIX, CHANNEL_MASK_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def keras3_inventory(model: Any) -> LayerInventory:
    """`tfprune.prunable_layers` for a Keras 3 model: one `PrunableLayer` per prunable weight (wrapped or not), the rest skipped with why."""
    prunable, skipped = [], []
    for path, layer in walk(model):
        wrapped = isinstance(layer, PruneWrapper)
        inner = layer.layer if wrapped or isinstance(layer, ChannelMask) else layer
        attr = pruned_weight_name(inner)
        if attr is not None and inner.built:
            w = getattr(inner, attr)
            shape = tuple(int(d) for d in w.shape)
            name = strip_prefix(layer.name)
            prunable.append(PrunableLayer(name=name, path=path.rsplit("/", 1)[0] + "/" + name if "/" in path else name,
                                          layer_type=type(inner).__name__, weight=attr, shape=shape, n_params=int(np.prod(shape)),
                                          wrapped=wrapped, layer=layer if wrapped else inner))
            continue
        n = int(sum(int(np.prod(v.shape)) for v in layer.weights))
        if isinstance(layer, keras.layers.InputLayer):
            reason = "input placeholder"
        elif "Depthwise" in type(layer).__name__:
            reason = "depthwise kernels are tiny and tfprune does not prune them"
        elif "Normalization" in type(layer).__name__:
            reason = "normalization parameters are not pruned"
        elif not layer.weights:
            reason = "no weights"
        else:
            reason = f"{type(layer).__name__} weights are not pruned by tfprune"
        inside = sum(int(np.prod(getattr(sub, pruned_weight_name(sub)).shape)) for sub in _sublayers(layer)
                     if pruned_weight_name(sub) and sub.built) if not isinstance(layer, keras.Model) else 0
        skipped.append(SkippedLayer(name=layer.name, path=path, layer_type=type(layer).__name__, reason=reason, n_params=n,
                                    kernels_inside=inside))
    return LayerInventory(prunable, skipped)


def _sublayers(layer: Any) -> list[Any]:
    try:
        return [s for s in layer._flatten_layers(include_self=False, recursive=True)]
    except AttributeError:
        return []


def is_keras3(obj: Any) -> bool:
    """True for a Keras 3 layer or model."""
    return isinstance(obj, keras.layers.Layer)


def check_keras3_model(model: Any, argname: str = "model") -> None:
    """A built Keras 3 Sequential or functional model, else a ValueError/TypeError with the fix."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{argname}` must be a Keras 3 Model, got {type(model).__name__}. Fix: put the layer in a "
                        "keras.Sequential([keras.Input(shape=...), layer]) or a functional model")
    if not isinstance(model, (keras.Sequential, keras.models.Model)) or not is_graph_model(model):
        raise TypeError(f"`{argname}` ({model.name}) is a subclassed Keras 3 model; tfprune prunes Keras 3 Sequential and functional "
                        "models (nested ones too). Fix: build the model with the functional API (keras.Input -> layers -> keras.Model), "
                        "or wrap the layers yourself with tfprune.keras3.wrapper.PruneWrapper inside your subclass")
    if not model.built:
        raise ValueError(f"`{argname}` ({model.name}) is not built, so its weights do not exist yet. Fix: start it with keras.Input(shape=...) "
                         "or call model.build(input_shape)")


def keras3_wrappers(model: Any) -> list[PruneWrapper]:
    """Every `PruneWrapper` of a Keras 3 model, nested models included, in layer order."""
    return [layer for _, layer in walk(model) if isinstance(layer, PruneWrapper)]


def keras3_channel_masks(model: Any) -> list[ChannelMask]:
    """Every Keras 3 `ChannelMask` of a Keras 3 model, nested models included, in layer order."""
    return [layer for _, layer in walk(model) if isinstance(layer, ChannelMask)]
