"""The one reader of a Keras model's layer graph, from ``model.get_config()`` only.

A functional model's ``layers[*].inbound_nodes``, ``input_layers`` and ``output_layers``, a
Sequential model's list of ``layers`` (a chain). Nested models (a Sequential block in a
Sequential, a functional model called as a layer) are inlined into one flat functional
graph; a nested layer whose name clashes with another layer's gets its submodel's name as
a prefix (``block1_conv``). `Graph.build` makes that flat model with
``keras.Model.from_config`` and copies each layer's weights from the input model's layer
of the same flat name; the input model is only read. Used by `tfprune.structured.graph`
(channel groups) and `tfprune.shallow.graph` (removable units).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from tfprune._keras import check_model, keras

__all__ = ["Graph", "Ref", "flat_graph", "map_refs", "refs"]

L = keras.layers
_CONSTANT = "_CONSTANT_VALUE"

Ref = tuple  # (layer name, node index, tensor index)


# ----------------------------------------------------------- config node data
def _is_ref(obj: Any) -> bool:
    """A serialized tensor reference: ``[layer, node_index, tensor_index]`` or the same plus a kwargs dict."""
    return (isinstance(obj, (list, tuple)) and len(obj) in (3, 4) and isinstance(obj[0], str) and obj[0] != _CONSTANT
            and isinstance(obj[1], int) and isinstance(obj[2], int) and (len(obj) == 3 or isinstance(obj[3], dict)))


def map_refs(data: Any, fn: Callable[[str, int, int], Ref]) -> Any:
    """A copy of config node data with every tensor reference ``(layer, node, tensor)`` replaced by ``fn(...)``."""
    if _is_ref(data):
        new = list(fn(data[0], data[1], data[2]))
        return new + [map_refs(data[3], fn)] if len(data) == 4 else new
    if isinstance(data, dict):
        return {k: map_refs(v, fn) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [map_refs(v, fn) for v in data]
    return copy.deepcopy(data)


def refs(data: Any) -> list[Ref]:
    """Every tensor reference in config node data, in order (call arguments and keyword arguments)."""
    out: list[Ref] = []

    def keep(name: str, node: int, tensor: int) -> Ref:
        out.append((name, node, tensor))
        return (name, node, tensor)

    map_refs(data, keep)
    return out


# ------------------------------------------------------------------ the graph
@dataclass
class Graph:
    """A flat functional graph in config form, plus the input model's layer that holds each layer's weights."""

    name: str
    layers: list[dict]  # functional layer entries in topological order: class_name, config, name, inbound_nodes
    input_layers: list
    output_layers: list
    sources: dict[str, Any]  # flat layer name -> the input model's layer object (weights are copied from it)

    def names(self) -> list[str]:
        return [e["name"] for e in self.layers]

    def inputs_of(self, name: str) -> list[Ref]:
        """References to the tensors ``name`` is called on (none for an InputLayer)."""
        return refs(self._entry(name)["inbound_nodes"])

    def producers(self, name: str) -> list[str]:
        """Names of the layers whose outputs feed ``name``, one per input tensor."""
        return [r[0] for r in self.inputs_of(name)]

    def consumers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.names()}
        for n in self.names():
            for p in self.producers(n):
                out[p].append(n)
        return out

    def output_names(self) -> set[str]:
        return {r[0] for r in refs(self.output_layers)}

    def config(self, name: str | None = None) -> dict:
        return {"name": name or self.name, "layers": copy.deepcopy(self.layers), "input_layers": copy.deepcopy(self.input_layers),
                "output_layers": copy.deepcopy(self.output_layers)}

    def build(self, name: str | None = None, copy_weights: bool = True) -> Any:
        """A new functional model from this graph (``keras.Model.from_config``), weights copied by layer name."""
        custom: dict[str, Any] = {}
        for obj in self.sources.values():
            cls = type(obj)
            custom[cls.__name__] = cls
            custom[keras.saving.get_registered_name(cls)] = cls
        try:
            if any(isinstance(obj, keras.layers.Lambda) for obj in self.sources.values()):
                # the Lambda functions were serialized in this process from the model's own in-memory layers (not read from
                # a file): rebuilding them runs nothing the model would not run, so Keras' safe mode for Lambda is lifted here
                from tfprune.compat import unsafe_lambda_scope

                with unsafe_lambda_scope():
                    new = keras.Model.from_config(self.config(name), custom_objects=custom)
            else:
                new = keras.Model.from_config(self.config(name), custom_objects=custom)
        except Exception as err:  # noqa: BLE001  (re-raised with the fix)
            raise ValueError(
                f"could not rebuild {name or self.name!r} from its config ({type(err).__name__}: {err}). Shallowing rebuilds the model "
                "with keras.Model.from_config: every layer needs a working get_config()/from_config() (custom layers: implement "
                "get_config and register them with keras.saving.register_keras_serializable)"
            ) from err
        if copy_weights:
            for layer in new.layers:
                src = self.sources.get(layer.name)
                if src is not None and src.weights:
                    layer.set_weights(src.get_weights())
        return new

    def _entry(self, name: str) -> dict:
        for e in self.layers:
            if e["name"] == name:
                return e
        raise KeyError(name)


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    return out


def _entry(e: dict, name: str, inbound: list) -> dict:
    out = {k: copy.deepcopy(v) for k, v in e.items() if k not in ("name", "inbound_nodes", "config")}
    out["config"] = dict(copy.deepcopy(e["config"]), name=name)
    out["name"] = name
    out["inbound_nodes"] = inbound
    return out


def _model_config(model: Any) -> dict:
    cfg = model.get_config()
    if not isinstance(cfg, dict) or "layers" not in cfg or (not isinstance(model, keras.Sequential)
                                                           and not {"input_layers", "output_layers"} <= set(cfg)):
        raise TypeError(f"model {model.name!r} ({type(model).__name__}) is subclassed: it has no layer graph in get_config() to edit. "
                        "Fix: build it as a Sequential or functional model")
    return cfg


class _Flattener:
    """Inline nested models into one list of functional layer entries with unique names."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.sources: dict[str, Any] = {}
        self.seen: dict[int, str] = {}

    def source(self, flat: str, obj: Any) -> None:
        if id(obj) in self.seen:
            raise ValueError(f"layer {obj.name!r} is used twice (as {self.seen[id(obj)]!r} and {flat!r}); shallowing needs each layer "
                             "called once. Fix: give each position its own layer")
        self.seen[id(obj)] = flat
        self.sources[flat] = obj

    def reserve(self, model: Any, names: list[str]) -> dict[str, str]:
        """Flat names for this model's own layers: the same name unless taken, else prefixed by the model's name."""
        out = {}
        for n in names:
            out[n] = n if n not in self.taken else _unique(f"{model.name}_{n}", self.taken)
            self.taken.add(out[n])
        return out

    def run(self, model: Any, inputs: list[Ref] | None = None) -> tuple[list[dict], list, list]:
        """(entries, input_layers, output_layers) of ``model``; ``inputs``: the outer tensors a nested model is called on."""
        cfg = _model_config(model)
        if isinstance(model, keras.Sequential):
            return self._sequential(model, cfg, inputs)
        return self._functional(model, cfg, inputs)

    def _sequential(self, model: Any, cfg: dict, inputs: list[Ref] | None) -> tuple[list[dict], list, list]:
        body = [e for e in cfg["layers"] if e["class_name"] != "InputLayer"]
        objs = list(model.layers)
        if len(body) != len(objs):
            raise RuntimeError(f"Sequential {model.name!r}: get_config() lists {len(body)} layers, model.layers {len(objs)}")
        entries: list[dict] = []
        if inputs is None:
            in_cfg = next((e for e in cfg["layers"] if e["class_name"] == "InputLayer"), None)
            if in_cfg is None:
                try:
                    shape = list(model.input_shape)
                except (AttributeError, RuntimeError) as err:
                    raise ValueError(f"Sequential {model.name!r} has no known input shape. Fix: start it with keras.Input(shape)") from err
                in_cfg = {"class_name": "InputLayer", "config": {"batch_input_shape": shape, "dtype": model.dtype or "float32",
                                                                 "sparse": False, "ragged": False, "name": f"{model.name}_input"}}
            in_name = self.reserve(model, [in_cfg["config"]["name"]])[in_cfg["config"]["name"]]
            entries.append(_entry(in_cfg, in_name, []))
            inputs = [(in_name, 0, 0)]
        if len(inputs) != 1:
            raise ValueError(f"Sequential {model.name!r} is called on {len(inputs)} tensors; it takes one")
        flat = self.reserve(model, [o.name for o in objs if not isinstance(o, keras.Model)])
        prev = tuple(inputs[0])
        for e, obj in zip(body, objs):
            if isinstance(obj, keras.Model):
                sub, _, outs = self.run(obj, [prev])
                if len(refs(outs)) != 1:
                    raise ValueError(f"nested model {obj.name!r} in Sequential {model.name!r} has {len(refs(outs))} outputs; it needs one")
                entries += sub
                prev = refs(outs)[0]
                continue
            entries.append(_entry(e, flat[obj.name], [[[*prev, {}]]]))
            self.source(flat[obj.name], obj)
            prev = (flat[obj.name], 0, 0)
        return entries, [list(r) for r in inputs], [list(prev)]

    def _functional(self, model: Any, cfg: dict, inputs: list[Ref] | None) -> tuple[list[dict], list, list]:
        in_refs = refs(cfg["input_layers"])
        alias: dict[tuple[str, int], Ref] = {}  # (layer, tensor index) -> flat reference
        if inputs is not None:
            if len(inputs) != len(in_refs):
                raise ValueError(f"nested model {model.name!r} takes {len(in_refs)} inputs but is called on {len(inputs)}")
            alias.update({(r[0], r[2]): tuple(t) for r, t in zip(in_refs, inputs)})
        for e in cfg["layers"]:
            if len(e["inbound_nodes"]) > 1:
                raise ValueError(f"layer {e['name']!r} of {model.name!r} is shared (called {len(e['inbound_nodes'])} times); shallowing needs "
                                 "each layer called once. Fix: give each call its own layer")
        nested = {e["name"] for e in cfg["layers"] if isinstance(model.get_layer(e["name"]), keras.Model)}
        own = [e["name"] for e in cfg["layers"] if e["name"] not in nested and (inputs is None or e["class_name"] != "InputLayer")]
        flat = self.reserve(model, own)

        def resolve(name: str, node: int, tensor: int) -> Ref:
            if (name, tensor) in alias:
                return alias[(name, tensor)]
            if name not in flat:
                raise ValueError(f"{model.name!r}: layer {name!r} is used before the layer that makes it; cannot follow the graph")
            return (flat[name], 0, tensor)

        entries: list[dict] = []
        for e in cfg["layers"]:
            name = e["name"]
            if inputs is not None and e["class_name"] == "InputLayer":
                continue
            obj = model.get_layer(name)
            if name in nested:
                node = e["inbound_nodes"][0] if e["inbound_nodes"] else []
                kwargs = [r[3] for r in _raw_refs(node) if len(r) == 4 and r[3]]
                if any(v is not None for kw in kwargs for v in kw.values()):
                    raise ValueError(f"nested model {name!r} is called with arguments {kwargs[0]}; flattening cannot keep them. "
                                     "Fix: call it on its input alone")
                sub, _, outs = self.run(obj, [resolve(*r) for r in refs(node)])
                entries += sub
                alias.update({(name, i): tuple(r) for i, r in enumerate(refs(outs))})
                continue
            entries.append(_entry(e, flat[name], map_refs(e["inbound_nodes"], resolve)))
            if e["class_name"] != "InputLayer":
                self.source(flat[name], obj)
        return entries, map_refs(cfg["input_layers"], resolve), map_refs(cfg["output_layers"], resolve)


def _raw_refs(data: Any) -> list[list]:
    """The reference lists themselves (with their kwargs dict), first-level only."""
    if _is_ref(data):
        return [list(data)]
    if isinstance(data, dict):
        return [r for v in data.values() for r in _raw_refs(v)]
    if isinstance(data, (list, tuple)):
        return [r for v in data for r in _raw_refs(v)]
    return []


def flat_graph(model: Any) -> Graph:
    """The layer graph of a Sequential or functional model (nested models inlined), read from ``model.get_config()``."""
    check_model(model)
    fl = _Flattener()
    entries, inputs, outputs = fl.run(model)
    return Graph(model.name, entries, inputs, outputs, fl.sources)
