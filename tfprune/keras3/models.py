"""Keras 3 models: find the prunable layers, wrap them, strip the wrappers (the Keras 3 side of `tfprune.wrap` / `strip` / `prunable_layers`).

Sequential and functional models are handled, nested ones too (a model used
as a layer, e.g. a ``keras.applications`` backbone inside a classifier):
`wrap` and `strip` rebuild the model with ``keras.models.clone_model(...,
recursive=True)``, copying every weight, so the model passed in is never
changed. Subclassed Keras 3 models are refused with the route that works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import keras
import numpy as np
from keras import ops

from tfprune.inventory.entries import LayerInventory, PrunableLayer, SkippedLayer
from tfprune.inventory.selectors import as_selectors, check_selectors_match, selector_matches
from tfprune.keras3.wrapper import WRAPPER_PREFIX, ChannelMask, PruneWrapper, pruned_weight_name
from tfprune.masks.granularity import check_block_size, layer_units, parse_granularity
from tfprune.validation import check_sparsity, schedule_values

__all__ = ["keras3_wrappers", "keras3_channel_masks", "is_keras3", "check_keras3_model", "walk", "keras3_inventory", "wrap_keras3",
           "strip_keras3", "output_layer_names"]


def is_keras3(obj: Any) -> bool:
    """True for a Keras 3 layer or model."""
    return isinstance(obj, keras.layers.Layer)


def check_keras3_model(model: Any, argname: str = "model") -> None:
    """A built Keras 3 Sequential or functional model, else a ValueError/TypeError with the fix."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{argname}` must be a Keras 3 Model, got {type(model).__name__}. Fix: put the layer in a "
                        "keras.Sequential([keras.Input(shape=...), layer]) or a functional model")
    if not isinstance(model, (keras.Sequential, keras.models.Model)) or not _is_graph_model(model):
        raise TypeError(f"`{argname}` ({model.name}) is a subclassed Keras 3 model; tfprune prunes Keras 3 Sequential and functional "
                        "models (nested ones too). Fix: build the model with the functional API (keras.Input -> layers -> keras.Model), "
                        "or wrap the layers yourself with tfprune.keras3.wrapper.PruneWrapper inside your subclass")
    if not model.built:
        raise ValueError(f"`{argname}` ({model.name}) is not built, so its weights do not exist yet. Fix: start it with keras.Input(shape=...) "
                         "or call model.build(input_shape)")


def _is_graph_model(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` of every layer, depth first, descending into nested models (not into wrappers)."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            yield from walk(layer, path + "/")
        else:
            yield path, layer


def _strip_prefix(name: str) -> str:
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
            name = _strip_prefix(layer.name)
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


def output_layer_names(model: Any) -> set[str]:
    """Names of the layers whose outputs are the model's outputs (kept dense by the channel rule on tf-keras)."""
    names = set()
    for t in model.outputs or []:
        hist = getattr(t, "_keras_history", None)
        if hist is not None:
            names.add(_strip_prefix(hist[0].name))
    return names


def keras3_wrappers(model: Any) -> list[PruneWrapper]:
    """Every `PruneWrapper` of a Keras 3 model, nested models included, in layer order."""
    return [layer for _, layer in walk(model) if isinstance(layer, PruneWrapper)]


def keras3_channel_masks(model: Any) -> list[ChannelMask]:
    """Every Keras 3 `ChannelMask` of a Keras 3 model, nested models included, in layer order."""
    return [layer for _, layer in walk(model) if isinstance(layer, ChannelMask)]


def _plain_path(path: str) -> str:
    return "/".join(_strip_prefix(part) for part in path.split("/"))


def _copy_layer(layer: Any) -> Any:
    return layer.__class__.from_config(layer.get_config())


def _copy_weights(source: Any, target: Any) -> None:
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


def _wrap_channels(model: Any, inc: list | None, exc: list | None, include_outputs: bool) -> Any:
    """`wrap_keras3` under ``channel``: a Keras 3 `ChannelMask` on each weighted layer whose output holds a prunable group's channels.

    The groups come from `tfprune.channel_graph` (read through the model's tf-keras twin: the same names and channels).
    """
    from tfprune.structured.graph import channel_graph, channel_mask_owners

    cg = channel_graph(model, include_outputs)
    by_name = {layer.name: layer for _, layer in walk(model)}
    chosen = channel_mask_owners(cg, by_name.get, inc, exc)

    def clone(layer: Any) -> Any:
        copy = _copy_layer(layer)
        return ChannelMask(copy) if layer.name in chosen else copy

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, new)
    return new


def wrap_keras3(model: Any, targets: Any = None, *, include: Any = None, exclude: Any = None, granularity: str = "unstructured",
                block_size: tuple[int, int] | None = None, begin_step: int = 0, end_step: int = 1000, frequency: int = 10,
                initial_sparsity: float = 0.0, power: float = 3.0, include_outputs: bool = False) -> Any:
    """`tfprune.wrap` for a Keras 3 model: a copy with every selected prunable layer in a `PruneWrapper` (same arguments).

    Under ``N:M`` a layer whose input size is not a multiple of M is left
    unwrapped (as on the tf-keras path). ``model`` is not changed.
    """
    check_keras3_model(model)
    if block_size is not None:
        block_size = check_block_size(block_size)
        if granularity == "unstructured" and block_size != (1, 1):
            granularity = "block"
    g = parse_granularity(granularity, block_size)
    layers = [layer for _, layer in walk(model)]
    if any(isinstance(layer, (PruneWrapper, ChannelMask)) for layer in layers):
        raise ValueError(f"model {model.name!r} already holds pruning wrappers. Fix: train it as it is, or tfprune.strip(model) first to wrap it anew")
    inventory = keras3_inventory(model)
    if not len(inventory):
        raise ValueError(f"model {model.name!r} has no prunable layers (Dense, Conv, SeparableConv, Embedding).\n" + inventory.table())
    inc, exc = as_selectors(include, "include"), as_selectors(exclude, "exclude")
    check_selectors_match(layers, inc, "include", model.name)
    check_selectors_match(layers, exc, "exclude", model.name)
    if g.kind == "channel":
        if targets is not None:
            raise ValueError("targets= sets per-layer weight sparsities; under granularity='channel' the Pruning callback plans the "
                             "channel groups. Fix: drop targets= and pass macs=/params= to tfprune.Pruning (or tfprune.plan)")
        return _wrap_channels(model, inc, exc, include_outputs)
    names = set(inventory.names)
    if targets is None or isinstance(targets, Mapping) or hasattr(targets, "targets"):
        per_layer = {_strip_prefix(k): v for k, v in dict(getattr(targets, "targets", targets) or {}).items()}
        unknown = sorted(set(per_layer) - names)
        if unknown:
            raise ValueError(f"unknown layer name(s) in targets: {unknown}. Prunable layers: {sorted(names)}. Fix: use those names")
        per_layer = {k: check_sparsity(v, f"targets[{k!r}]") for k, v in per_layer.items()}
        default = 0.0
    else:
        per_layer, default = {}, check_sparsity(targets, "targets")
    schedule = dict(begin_step=begin_step, end_step=end_step, frequency=frequency, initial_sparsity=initial_sparsity, power=power)
    schedule_values(target_sparsity=0.0, **schedule)  # validate once, before cloning anything
    selected: list[str] = []

    def clone(layer: Any) -> Any:
        attr = pruned_weight_name(layer)
        copy = _copy_layer(layer)
        if attr is None or (inc is not None and not selector_matches(layer, inc)) or (exc is not None and selector_matches(layer, exc)):
            return copy
        if g.kind == "n:m" and layer_units(tuple(int(d) for d in getattr(layer, attr).shape), g, "Transpose" in type(layer).__name__)[2]:
            return copy
        selected.append(layer.name)
        return PruneWrapper(copy, granularity=g.name, block_size=g.block_size, n_m=(g.n, g.m),
                            schedule={**schedule, "target_sparsity": per_layer.get(layer.name, default)})

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not selected:
        raise ValueError(f"include/exclude selected no layer to wrap. Prunable layers: {sorted(names)}")
    not_selected = [n for n in per_layer if n not in selected and per_layer[n] > 0]
    if not_selected:
        raise ValueError(f"targets name layer(s) {not_selected} that include/exclude left unwrapped")
    _copy_weights(model, new)
    if g.kind == "frozen":
        for _, layer in walk(new):
            if isinstance(layer, PruneWrapper):
                layer.mask.assign(ops.cast(ops.not_equal(getattr(layer.layer, layer.weight_attr), 0), layer.mask.dtype))
    return new


def strip_keras3(model: Any) -> Any:
    """A plain Keras 3 copy of ``model``: no wrappers, every pruned weight multiplied by its mask (exact zeros). ``model`` is not changed."""
    check_keras3_model(model)

    def clone(layer: Any) -> Any:
        return _copy_layer(layer.layer if isinstance(layer, (PruneWrapper, ChannelMask)) else layer)

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, new)
    return new
