"""Which units of a Keras model can be removed while the graph stays valid, and the rebuild without them.

The graph is read from ``model.get_config()`` only: a functional model's
``layers[*].inbound_nodes``, ``input_layers`` and ``output_layers``, a
Sequential model's list of ``layers`` (a chain). Nested models (a Sequential
block in a Sequential, a functional model called as a layer) are inlined, so
the analysis, the probes and the student all work on one flat functional
graph; a nested layer whose name clashes with another layer's gets its
submodel's name as a prefix (``block1_conv``). The student is rebuilt with
``keras.Model.from_config`` and each layer's weights are copied from the
input model's layer of the same (flat) name; the input model is only read.

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

from tfprune._keras import keras
from tfprune.inventory.config_graph import Graph, Ref, flat_graph, map_refs, refs  # noqa: F401

__all__ = ["Unit", "find_units", "remove_units", "units_of"]

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


# ------------------------------------------------------------------ the units
def _same_shape(a: Any, b: Any) -> bool:
    return tuple(a) == tuple(b)


def units_of(graph: Graph, flat: Any) -> list[Unit]:
    """Units of ``graph``; ``flat`` is ``graph.build()`` (layer types and shapes are read from it)."""
    from tfprune.inventory.profiling import profile

    lay = {layer.name: layer for layer in flat.layers}
    prof = {r.name: r for r in profile(flat).layers}
    prods = {n: graph.producers(n) for n in graph.names()}
    cons = graph.consumers()
    outputs = graph.output_names()
    units: list[Unit] = []
    in_block: set[str] = set()

    def trail(end: str, members: list[str]) -> str:
        while len(cons[end]) == 1 and isinstance(lay[cons[end][0]], ELEMENTWISE) and end not in outputs:
            end = cons[end][0]
            members.append(end)
        return end

    # residual blocks first (their inner layers are not separate units)
    for add in graph.names():
        if not isinstance(lay[add], L.Add) or len(prods[add]) != 2:
            continue
        found = None
        for s, br in (tuple(prods[add]), tuple(reversed(prods[add]))):
            path, cur = [], br
            while cur != s and len(prods[cur]) == 1 and len(path) < 64:
                path.append(cur)
                cur = prods[cur][0]
            if cur == s and path:
                found = (s, path[::-1])
                break
        members = [add]
        if found is None:
            end = trail(add, members)
            units.append(Unit("block", members, end, prods[add][0], False, "projection shortcut (no identity path): removing it would change shapes"))
            in_block.update(prods[add])
            continue
        s, path = found
        end = trail(add, members)
        names = path + members
        in_block.update(names)
        ok = _same_shape(lay[s].output_shape, lay[end].output_shape) and end not in outputs
        units.append(Unit("block", names, end, s, ok, "" if ok else "block output shape differs from its input"))
    # projection blocks: walk up from the block's end (its inner convs stay probe points, kept, as before)
    for u in units:
        if u.kind == "block" and not u.removable:
            for p in prods[u.end]:
                cur = p
                for _ in range(64):
                    in_block.add(cur)
                    if len(prods[cur]) != 1 or len(cons[prods[cur][0]]) > 1:
                        break
                    cur = prods[cur][0]
    for name in graph.names():
        layer = lay[name]
        if not isinstance(layer, WEIGHTED) or name in in_block:
            continue
        members = [name]
        end = trail(name, members)
        p = prods[name]
        reason = ""
        if len(p) != 1:
            reason = "has several inputs"
        elif not _same_shape(layer.input_shape, lay[end].output_shape):
            reason = f"changes the shape {tuple(layer.input_shape)[1:]} -> {tuple(lay[end].output_shape)[1:]}"
        elif len(cons[p[0]]) > 1:
            reason = "its input also feeds another layer"
        elif end in outputs:
            reason = "produces the model output"
        elif len(cons[end]) == 1 and isinstance(lay[cons[end][0]], MERGE):
            reason = "feeds a merge layer"
        units.append(Unit("layer", members, end, p[0] if p else "", not reason, reason))
    order = {n: i for i, n in enumerate(graph.names())}
    units.sort(key=lambda u: order[u.end])
    for u in units:
        u.params = sum(prof[n].params for n in u.layers if n in prof)
        u.macs = sum(prof[n].macs for n in u.layers if n in prof)
    return units


def find_units(model: Any) -> list[Unit]:
    """Every Conv/Dense unit and residual block of a Sequential or functional model, in graph order, removable or not.

    Nested models are inlined (see the module docstring): unit and layer names are those of the flat graph.
    """
    graph = flat_graph(model)
    return units_of(graph, graph.build(copy_weights=False))


def remove_units(model: Any, units: list[Unit]) -> Any:
    """A new flat functional model without ``units`` (rebuilt from the config, weights copied by name, shapes checked)."""
    graph = flat_graph(model)
    bad = [f"{u.end!r} ({u.reason})" for u in units if not u.removable]
    if bad:
        raise ValueError(f"unit(s) not removable: {', '.join(bad)}. Fix: pass only units with removable=True")
    names = set(graph.names())
    unknown = sorted({n for u in units for n in [*u.layers, u.input_from] if n not in names})
    if unknown:
        raise ValueError(f"layers {unknown} are not in model {model.name!r}. Fix: pass units from find_units() or probe_layers() of this model")
    removed = {n for u in units for n in u.layers}
    redirect: dict[str, Ref] = {}
    for u in units:
        ref = next((r for n in u.layers for r in graph.inputs_of(n) if r[0] == u.input_from), None)
        if ref is None:
            raise ValueError(f"unit ending at {u.end!r} does not read from {u.input_from!r}. Fix: pass units from find_units() of this model")
        redirect[u.end] = ref

    def resolve(name: str, node: int, tensor: int) -> Ref:
        while name in redirect:
            name, node, tensor = redirect[name]
        if name in removed:
            raise ValueError(f"layer {name!r} is removed but still feeds a kept layer; the units do not match this model")
        return (name, node, tensor)

    kept = [dict(e, inbound_nodes=map_refs(e["inbound_nodes"], resolve)) for e in graph.layers if e["name"] not in removed]
    new_graph = Graph(graph.name, kept, map_refs(graph.input_layers, resolve), map_refs(graph.output_layers, resolve), graph.sources)
    new = new_graph.build(f"{model.name}_shallow")
    if tuple(new.output_shape) != tuple(model.output_shape):
        raise RuntimeError(f"rebuilt model's output {new.output_shape} differs from {model.output_shape}")
    return new
