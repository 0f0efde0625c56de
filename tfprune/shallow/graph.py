"""Which layers of a functional model can be removed while the graph stays valid, and the rebuild.

Two kinds of removable units:

* ``layer``: a Conv/Dense layer whose output shape equals its input shape,
  plus the element-wise layers right after it (BatchNorm, activations,
  Dropout) in a plain chain: its input feeds only it, and its end feeds one
  layer that is not a merge.
* ``block``: a residual block with an identity shortcut: an ``Add`` whose
  one input is the block's input tensor itself, the other a single-input
  branch from that tensor; the element-wise layers after the Add belong to it.

Removing a unit wires its input tensor to whatever consumed its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from tfprune._keras import check_model, keras

__all__ = ["Unit", "find_units", "remove_units", "producers", "consumers"]

L = keras.layers
ELEMENTWISE = (L.BatchNormalization, L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.PReLU, L.Dropout, L.SpatialDropout2D, L.GaussianNoise, L.LayerNormalization)
MERGE = (L.Add, L.Concatenate, L.Multiply, L.Average, L.Maximum, L.Minimum, L.Subtract)
WEIGHTED = (L.Conv1D, L.Conv2D, L.Dense)


@dataclass
class Unit:
    """A group of layers probed together (``end``'s output) and removable together when ``removable``."""

    kind: str  # "layer" | "block"
    layers: list[str]
    end: str
    input_from: str  # the layer whose output feeds the unit
    removable: bool
    reason: str = ""
    params: int = 0
    macs: int = 0
    extra: dict = field(default_factory=dict)


def _single_node(layer: Any) -> None:
    if len(layer._inbound_nodes) > 1:
        raise ValueError(f"layer {layer.name!r} is shared (called {len(layer._inbound_nodes)} times); shallowing needs each layer called once")


def producers(layer: Any) -> list[Any]:
    """Layers whose outputs feed ``layer`` (none for an InputLayer)."""
    if isinstance(layer, L.InputLayer):
        return []
    return [t._keras_history.layer for t in tf.nest.flatten(layer.input)]


def consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for p in producers(layer):
            out[p.name].append(layer)
    return out


def _same_shape(a: Any, b: Any) -> bool:
    return tuple(a) == tuple(b)


def find_units(model: Any) -> list[Unit]:
    """Every Conv/Dense unit and residual block of a flat functional model, in graph order, removable or not."""
    check_model(model)
    if not getattr(model, "_is_graph_network", False):
        raise TypeError("shallowing needs a Sequential or functional model (a subclassed model has no graph to edit)")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(f"nested model {layer.name!r}: shallowing needs a flat model")
        _single_node(layer)
    from tfprune.profile import profile

    prof = {r.name: r for r in profile(model).layers}
    cons = consumers(model)
    output_layers = {t._keras_history.layer.name for t in model.outputs}
    units: list[Unit] = []
    in_block: set[str] = set()

    def trail(end: Any, members: list[Any]) -> Any:
        while len(cons[end.name]) == 1 and isinstance(cons[end.name][0], ELEMENTWISE) and end.name not in output_layers:
            end = cons[end.name][0]
            members.append(end)
        return end

    # residual blocks first (their inner layers are not separate units)
    for add in model.layers:
        if not isinstance(add, L.Add) or len(producers(add)) != 2:
            continue
        found = None
        for s, br in (tuple(producers(add)), tuple(reversed(producers(add)))):
            path, cur = [], br
            while cur is not s and len(producers(cur)) == 1 and len(path) < 64:
                path.append(cur)
                cur = producers(cur)[0]
            if cur is s and path:
                found = (s, path[::-1])
                break
        members = [add]
        if found is None:
            end = trail(add, members)
            units.append(
                Unit("block", [m.name for m in members], end.name, producers(add)[0].name, False,
                     "projection shortcut (no identity path): removing it would change shapes")
            )
            for p in producers(add):  # mark the branch layers as inside a block
                in_block.add(p.name)
            continue
        s, path = found
        end = trail(add, members)
        names = [layer.name for layer in path] + [m.name for m in members]
        in_block.update(names)
        ok = _same_shape(s.output_shape, end.output_shape) and end.name not in output_layers
        units.append(Unit("block", names, end.name, s.name, ok, "" if ok else "block output shape differs from its input"))
    # projection branches: mark every layer between a non-identity Add and its inputs' common root as inside a block
    for u in units:
        if u.kind == "block" and not u.removable:
            add = model.get_layer(u.end)
            for p in producers(add):
                cur = p
                for _ in range(64):
                    in_block.add(cur.name)
                    prods = producers(cur)
                    if len(prods) != 1 or len(cons[prods[0].name]) > 1:
                        break
                    cur = prods[0]
    for layer in model.layers:
        if not isinstance(layer, WEIGHTED) or layer.name in in_block:
            continue
        members = [layer]
        end = trail(layer, members)
        names = [m.name for m in members]
        prods = producers(layer)
        reason = ""
        if len(prods) != 1:
            reason = "has several inputs"
        elif not _same_shape(layer.input_shape, end.output_shape):
            reason = f"changes the shape {tuple(layer.input_shape)[1:]} -> {tuple(end.output_shape)[1:]}"
        elif len(cons[prods[0].name]) > 1:
            reason = "its input also feeds another layer"
        elif end.name in output_layers:
            reason = "produces the model output"
        elif len(cons[end.name]) == 1 and isinstance(cons[end.name][0], MERGE):
            reason = "feeds a merge layer"
        units.append(Unit("layer", names, end.name, prods[0].name if prods else "", not reason, reason))
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    units.sort(key=lambda u: order[u.end])
    for u in units:
        u.params = sum(prof[n].params for n in u.layers if n in prof)
        u.macs = sum(prof[n].macs for n in u.layers if n in prof)
    return units


def remove_units(model: Any, units: list[Unit]) -> Any:
    """A new functional model without ``units`` (kept layers cloned, weights copied, shapes checked)."""
    check_model(model)
    bad = [u.end for u in units if not u.removable]
    if bad:
        raise ValueError(f"unit(s) ending at {bad} are not removable")
    removed = {n for u in units for n in u.layers}
    redirect = {u.end: u.input_from for u in units}
    new_out: dict[str, Any] = {}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            cfg = layer.get_config()
            new_out[layer.name] = keras.Input(batch_shape=cfg["batch_input_shape"], dtype=cfg.get("dtype"), name=layer.name, sparse=cfg.get("sparse", False))
            continue
        if layer.name in removed:
            if layer.name in redirect:
                new_out[layer.name] = new_out[redirect[layer.name]]
            continue
        node = layer._inbound_nodes[0]

        def remap(obj: Any) -> Any:
            if hasattr(obj, "_keras_history"):
                return new_out[obj._keras_history.layer.name]
            return obj

        args = tf.nest.map_structure(remap, node.call_args)
        kwargs = tf.nest.map_structure(remap, node.call_kwargs)
        clone = layer.__class__.from_config(layer.get_config())
        new_out[layer.name] = clone(*args, **kwargs)
        if layer.weights:
            clone.set_weights(layer.get_weights())
    inputs = [new_out[t._keras_history.layer.name] for t in model.inputs]
    outputs = [new_out[t._keras_history.layer.name] for t in model.outputs]
    new = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_shallow")
    if tuple(new.output_shape) != tuple(model.output_shape):
        raise RuntimeError(f"rebuilt model's output {new.output_shape} differs from {model.output_shape}")
    return new
