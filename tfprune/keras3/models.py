"""Keras 3 models: find the prunable layers, wrap them, strip the wrappers (the Keras 3 side of `tfprune.wrap` / `strip` / `prunable_layers`).

Sequential and functional models are handled, nested ones too (a model used
as a layer, e.g. a ``keras.applications`` backbone inside a classifier):
`wrap` and `strip` rebuild the model with ``keras.models.clone_model(...,
recursive=True)``, copying every weight, so the model passed in is never
changed. Subclassed Keras 3 models are refused with the route that works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from tfprune.inventory.selectors import as_selectors, check_selectors_match, selector_matches
from tfprune.keras3.cloning import copy_layer, copy_model_weights
from tfprune.keras3.inventory import check_keras3_model, keras3_inventory, strip_prefix, walk
from tfprune.keras3.wrapper import ChannelMask, PruneWrapper, pruned_weight_name
from tfprune.masks.granularity import check_block_size, layer_units, parse_granularity
from tfprune.validation import check_sparsity, schedule_values

__all__ = ["wrap_keras3", "output_layer_names"]


def output_layer_names(model: Any) -> set[str]:
    """Names of the layers whose outputs are the model's outputs (kept dense by the channel rule on tf-keras)."""
    names = set()
    for t in model.outputs or []:
        hist = getattr(t, "_keras_history", None)
        if hist is not None:
            names.add(strip_prefix(hist[0].name))
    return names


def _wrap_channels(model: Any, inc: list | None, exc: list | None, include_outputs: bool) -> Any:
    """`wrap_keras3` under ``channel``: a Keras 3 `ChannelMask` on each weighted layer whose output holds a prunable group's channels.

    The groups come from `tfprune.channel_graph` (read through the model's tf-keras twin: the same names and channels).
    """
    from tfprune.structured.graph import channel_graph, channel_mask_owners

    cg = channel_graph(model, include_outputs)
    by_name = {layer.name: layer for _, layer in walk(model)}
    chosen = channel_mask_owners(cg, by_name.get, inc, exc)

    def clone(layer: Any) -> Any:
        copy = copy_layer(layer)
        return ChannelMask(copy) if layer.name in chosen else copy

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy_model_weights(model, new)
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
        per_layer = {strip_prefix(k): v for k, v in dict(getattr(targets, "targets", targets) or {}).items()}
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
        copy = copy_layer(layer)
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
    copy_model_weights(model, new)
    if g.kind == "frozen":
        for _, layer in walk(new):
            if isinstance(layer, PruneWrapper):
                layer.mask.assign(ops.cast(ops.not_equal(getattr(layer.layer, layer.weight_attr), 0), layer.mask.dtype))
    return new


