"""Copies of Keras 3 models: layer by layer, weights copied by path; `strip_keras3` folds the masks into the weights and drops the wrappers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfprune.keras3.inventory import check_keras3_model, strip_prefix, walk
from tfprune.keras3.wrapper import ChannelMask, PruneWrapper

__all__ = ["copy_layer", "copy_model_weights", "strip_keras3"]


def _plain_path(path: str) -> str:
    return "/".join(strip_prefix(part) for part in path.split("/"))


def copy_layer(layer: Any) -> Any:
    return layer.__class__.from_config(layer.get_config())


def copy_model_weights(source: Any, target: Any) -> None:
    """Copy every variable of the layers of ``source`` into the same-named layers of ``target`` (wrappers: into the inner layer)."""
    src = {_plain_path(path): layer for path, layer in walk(source)}
    for path, layer in walk(target):
        old = src.get(_plain_path(path))
        if old is None:
            continue
        new_inner = layer.layer if isinstance(layer, (PruneWrapper, ChannelMask)) else layer
        old_inner = old.layer if isinstance(old, (PruneWrapper, ChannelMask)) else old
        values = [ops.convert_to_numpy(v.value) for v in old_inner.weights]
        if isinstance(old, ChannelMask) and not isinstance(layer, ChannelMask):  # strip: the keep-vector folded into the weights
            values = old.folded_weights()
        if isinstance(old, PruneWrapper) and not isinstance(layer, PruneWrapper):  # strip: the zeros go into the weight
            masked = ops.convert_to_numpy(old.masked_weight())
            var = getattr(old_inner, old.weight_attr)
            values = [masked if v is var else ops.convert_to_numpy(v.value) for v in old_inner.weights]
        for var, value in zip(new_inner.weights, values):
            var.assign(value)


def strip_keras3(model: Any) -> Any:
    """A plain Keras 3 copy of ``model``: no wrappers, every pruned weight multiplied by its mask (exact zeros). ``model`` is not changed."""
    check_keras3_model(model)

    def clone(layer: Any) -> Any:
        return copy_layer(layer.layer if isinstance(layer, (PruneWrapper, ChannelMask)) else layer)

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy_model_weights(model, new)
    return new
