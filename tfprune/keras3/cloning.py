"""Copies of Keras 3 models: layer by layer, weights copied by path; `strip_keras3` folds the masks into the weights and drops the wrappers."""

from __future__ import annotations

import warnings
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
    """Copy every variable of the layers of ``source`` into the layers of ``target`` at the same place (wrappers: into the inner layer).

    ``target`` is a layer-by-layer copy of ``source`` (`keras.models.clone_model`
    with `copy_layer`, wrappers added or removed), so the layers pair up in
    order. Raises RuntimeError when they do not (another class, another count,
    other weight shapes): never a partial copy. A layer whose class renames it
    on ``from_config`` (some keras-hub blocks do) keeps its weights; a warning
    names it.
    """
    old_layers, new_layers = list(walk(source)), list(walk(target))
    if len(old_layers) != len(new_layers):
        raise RuntimeError(f"internal error: copying weights from {source.name!r} ({len(old_layers)} layers) into a copy with "
                           f"{len(new_layers)} layers")
    renamed = []
    for (old_path, old), (path, layer) in zip(old_layers, new_layers):
        new_inner = layer.layer if isinstance(layer, (PruneWrapper, ChannelMask)) else layer
        old_inner = old.layer if isinstance(old, (PruneWrapper, ChannelMask)) else old
        if type(new_inner) is not type(old_inner):
            raise RuntimeError(f"internal error: layer {old_path!r} ({type(old_inner).__name__}) pairs with {path!r} "
                               f"({type(new_inner).__name__}) in the copy")
        if _plain_path(old_path) != _plain_path(path):
            renamed.append(f"{_plain_path(old_path)!r} -> {_plain_path(path)!r}")
        values = [ops.convert_to_numpy(v.value) for v in old_inner.weights]
        if isinstance(old, ChannelMask) and not isinstance(layer, ChannelMask):  # strip: the keep-vector folded into the weights
            values = old.folded_weights()
        if isinstance(old, PruneWrapper) and not isinstance(layer, PruneWrapper):  # strip: the zeros go into the weight
            masked = ops.convert_to_numpy(old.masked_weight())
            var = getattr(old_inner, old.weight_attr)
            values = [masked if v is var else ops.convert_to_numpy(v.value) for v in old_inner.weights]
        shapes = [tuple(v.shape) for v in new_inner.weights]
        if shapes != [tuple(v.shape) for v in values]:
            raise RuntimeError(f"internal error: layer {old_path!r} has weights {[tuple(v.shape) for v in values]}, its copy {shapes}")
        for var, value in zip(new_inner.weights, values):
            var.assign(value)
    if renamed:
        warnings.warn(f"{len(renamed)} layer(s) of {source.name!r} were renamed by their own class when copied ({', '.join(renamed[:4])}"
                      f"{', ...' if len(renamed) > 4 else ''}): their from_config does not keep the name (a custom or keras-hub "
                      "layer). Their weights were copied by position; refer to them by the new name", stacklevel=3)


def strip_keras3(model: Any) -> Any:
    """A plain Keras 3 copy of ``model``: no wrappers, every pruned weight multiplied by its mask (exact zeros). ``model`` is not changed."""
    check_keras3_model(model)

    def clone(layer: Any) -> Any:
        return copy_layer(layer.layer if isinstance(layer, (PruneWrapper, ChannelMask)) else layer)

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy_model_weights(model, new)
    return new
