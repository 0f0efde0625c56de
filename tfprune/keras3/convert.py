"""Translate a Keras 3 model into a tf-keras twin and back: the same layers, names and weights, the other Keras.

A Sequential or functional model (nested ones too) is rebuilt from its
configuration in the other Keras's format and its weights are copied layer by
layer, so both compute the same function. The two formats differ in a few
places, translated here:

* call nodes: Keras 3 writes ``{"args": [...], "kwargs": {...}}`` with
  ``__keras_tensor__`` entries holding ``keras_history``; tf-keras writes
  ``[[layer, node, tensor, kwargs], ...]``;
* ``InputLayer``: ``batch_shape`` (Keras 3) and ``batch_input_shape`` (tf-keras);
* ``dtype``: a ``DTypePolicy`` dict (Keras 3) or its name (tf-keras);
* arguments one Keras has and the other lacks (e.g. Keras 3's ``lora_rank``)
  are dropped when they hold their default, and refused otherwise.

A functional subclass whose configuration holds constructor arguments (a
keras-hub backbone) is read as a plain functional model over the same layers
(`plain_graph`); the twin, and what comes back from it, is plain functional.

Functions of tfprune that work on tf-keras models only use this to serve a
Keras 3 model (`to_tf_keras`, run, `to_keras3` of the result). Custom layers
cannot be translated (their class exists for one Keras only): refused with the
layer named.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import keras as keras3
import numpy as np

from tfprune._keras import keras as tf_keras

__all__ = ["to_tf_keras", "to_keras3", "copy_weights", "on_tf_keras_twin", "plain_graph"]

_TENSOR = "__keras_tensor__"
#: Arguments one Keras has and the other's class lacks, with the value that means "not used" (dropped then; any other value is
#: refused): Keras 3's LoRA, quantization and fan axes; tf-keras's ``groups`` on DepthwiseConv2D.
_DROPPABLE = {"lora_rank": None, "lora_alpha": None, "quantization_config": None, "optional": False, "synchronized": False,
              "input_axes": None, "output_axes": None, "groups": 1}


# --------------------------------------------------------------------- nodes
def _k3_refs(data: Any, out: list) -> None:
    """Collect the tensor references ``[layer, node, tensor]`` of a Keras 3 node's arguments, in order."""
    if isinstance(data, dict):
        if data.get("class_name") == _TENSOR:
            out.append(list(data["config"]["keras_history"]))
            return
        for v in data.values():
            _k3_refs(v, out)
    elif isinstance(data, (list, tuple)):
        for v in data:
            _k3_refs(v, out)


def _node_to_tf(node: dict, layer: str, models: set[str]) -> list:
    """One Keras 3 call node -> tf-keras's ``[[layer, node, tensor, kwargs], ...]``.

    tf-keras counts a nested model's own construction as its node 0, Keras 3 does not: references to a nested model's outputs
    (``models``: the names of the nested models) get node index + 1.
    """
    refs: list = []
    _k3_refs(node.get("args", []), refs)
    refs = [[r[0], r[1] + 1 if r[0] in models else r[1], r[2]] for r in refs]
    kwargs = {k: v for k, v in dict(node.get("kwargs", {})).items() if v is not None}  # Keras 3 records mask=None and the like
    tensor_kwargs: list = []
    _k3_refs(kwargs, tensor_kwargs)
    if tensor_kwargs:
        raise ValueError(f"layer {layer!r} is called with tensors as keyword arguments, which tfprune cannot translate to tf-keras. "
                         "Fix: pass them positionally, or build the model with tf_keras")
    if not refs:
        raise ValueError(f"layer {layer!r} is called without an input tensor (a constant), which tfprune cannot translate")
    return [[*r, kwargs if i == 0 else {}] for i, r in enumerate(refs)]


def _node_to_k3(node: list, layer: str, shapes: dict, models: set[str]) -> dict:
    """One tf-keras call node ``[[layer, node, tensor, kwargs], ...]`` -> Keras 3's ``{"args": [...], "kwargs": {...}}`` (see `_node_to_tf`)."""
    def tensor(ref: list) -> dict:
        shape, dtype = shapes.get(ref[0], (None, "float32"))
        node_index = ref[1] - 1 if ref[0] in models else ref[1]
        return {"class_name": _TENSOR, "config": {"shape": shape, "dtype": dtype, "keras_history": [ref[0], node_index, ref[2]]}}

    entries = [r for r in node if isinstance(r, (list, tuple)) and len(r) >= 3 and isinstance(r[0], str)]
    if len(entries) != len(node):
        raise ValueError(f"layer {layer!r} has call arguments tfprune cannot translate to Keras 3 ({node!r})")
    kwargs = dict(entries[0][3]) if len(entries[0]) > 3 else {}
    args = [tensor(entries[0])] if len(entries) == 1 else [[tensor(r) for r in entries]]
    return {"args": args, "kwargs": kwargs}


# -------------------------------------------------------------------- layers
def _dtype_name(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "Policy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name", "float32")
    return value


def _accepted(cls: type) -> set[str] | None:
    """Constructor arguments of ``cls`` (None: it takes **kwargs we cannot list)."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
    return names


def _object_config(value: Any, target: Any, owner: str) -> Any:
    """An initializer / regularizer / constraint config for the other Keras: unknown arguments at their default dropped."""
    if not (isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict)):
        return value
    module = str(value.get("module") or "")
    kind = next((k for k in ("initializers", "regularizers", "constraints") if k in module), None)
    if kind is None:
        return value
    cls = getattr(getattr(target, kind), value["class_name"], None)
    if cls is None:
        raise ValueError(f"{owner}: {value['class_name']} has no twin in the other Keras's {kind}")
    accepted = _accepted(cls) or set()
    config = {}
    for k, v in value["config"].items():
        if k in accepted:
            config[k] = v
        elif _DROPPABLE.get(k, "<required>") != v:
            raise ValueError(f"{owner}: {value['class_name']}({k}={v!r}) has no twin in the other Keras")
    return {"module": f"keras.{kind}", "class_name": value["class_name"], "config": config, "registered_name": None}


def _layer_config(entry: dict, target: Any) -> dict:
    """A layer entry's ``config`` for ``target`` (tf-keras or Keras 3): dtype, shapes, initializers, and the arguments both take."""
    name = entry.get("name") or entry["config"].get("name")
    cls = getattr(target.layers, entry["class_name"], None)
    if cls is None or (entry.get("registered_name") and "keras" not in str(entry.get("module", "keras"))):
        raise ValueError(f"layer {name!r} is a {entry['class_name']}, which has no twin in the other Keras (a custom layer?). Fix: build "
                         "it from built-in Keras layers to use this tfprune function on a Keras 3 model")
    config = copy.deepcopy(entry["config"])
    config["dtype"] = _dtype_name(config.get("dtype"))
    if entry["class_name"] == "InputLayer":
        if "batch_shape" in config and target is tf_keras:
            config["batch_input_shape"] = config.pop("batch_shape")
        elif "batch_input_shape" in config and target is keras3:
            config["batch_shape"] = config.pop("batch_input_shape")
    if entry["class_name"] == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1 and target is keras3:
        config["axis"] = config["axis"][0]  # tf-keras writes [3]; Keras 3 takes one int
    accepted = _accepted(cls)
    base = _accepted(target.layers.Layer) | {"name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape", "input_dim"}
    out = {}
    for k, v in config.items():
        v = _object_config(v, target, f"layer {name!r}")
        if accepted is None or k in accepted or k in base:
            out[k] = v
        elif _DROPPABLE.get(k, "<required>") != v:
            raise ValueError(f"layer {name!r}: {entry['class_name']}({k}={v!r}) has no twin in the other Keras. Fix: build the layer "
                             "without it, or use this tfprune function on a tf-keras model")
    return out


# -------------------------------------------------------------------- models
def _output_shapes(model: Any, out: dict | None = None) -> dict:
    """Layer name -> (output shape as a list, dtype) for every layer of ``model`` with one output (nested models too)."""
    out = {} if out is None else out
    for layer in model.layers:
        try:
            t = layer.output
            if not isinstance(t, (list, tuple, dict)):
                out[layer.name] = ([None if d is None else int(d) for d in t.shape], str(getattr(t.dtype, "name", t.dtype)))
        except (AttributeError, RuntimeError, ValueError):
            pass
        if hasattr(layer, "layers"):
            _output_shapes(layer, out)
    return out


def _model_config(cfg: dict, target: Any, shapes: dict) -> dict:
    """A (nested) model's ``{"class_name", "config"}`` for ``target``."""
    cls, conf = cfg["class_name"], cfg["config"]
    if cls == "Sequential":
        layers = [_entry(layer, target, None, shapes) for layer in conf["layers"]]
        return {"class_name": "Sequential", "config": {"name": conf["name"], "layers": layers}}
    if cls not in ("Functional", "Model"):
        return {"class_name": cls, "config": _layer_config(cfg, target), "module": "keras.layers", "registered_name": None}
    models = {e["name"] for e in conf["layers"] if e["class_name"] in ("Functional", "Sequential", "Model")}
    entries = [_entry(layer, target, models, shapes) for layer in conf["layers"]]
    shift = 1 if target is tf_keras else -1

    def io(value: Any) -> list:
        value = value if value and isinstance(value[0], (list, tuple)) else [value]
        return [[v[0], v[1] + shift if v[0] in models else v[1], v[2]] for v in value]

    ins, outs = io(conf["input_layers"]), io(conf["output_layers"])
    if target is keras3:
        ins, outs = (ins[0] if len(ins) == 1 else ins), (outs[0] if len(outs) == 1 else outs)
    return {"class_name": "Functional", "config": {"name": conf["name"], "trainable": conf.get("trainable", True), "layers": entries,
                                                   "input_layers": ins, "output_layers": outs}}


def _entry(layer: dict, target: Any, models: set[str] | None, shapes: dict) -> dict:
    """One layer entry for ``target``; ``models``: the nested models of the functional parent (None inside a Sequential)."""
    name = layer.get("name") or layer["config"].get("name")
    if layer["class_name"] in ("Functional", "Sequential", "Model"):
        new = _model_config(layer, target, shapes)
        module = "keras.src.models.functional" if target is keras3 and new["class_name"] == "Functional" else "keras"
        new.update(name=name, module=module, registered_name=None)
    else:
        new = {"module": "keras.layers", "class_name": layer["class_name"], "config": _layer_config(layer, target), "registered_name": None,
               "name": name}
    if models is not None:
        nodes = layer.get("inbound_nodes", [])
        if target is tf_keras:
            new["inbound_nodes"] = [_node_to_tf(n, name, models) if isinstance(n, dict) else n for n in nodes]
        else:
            new["inbound_nodes"] = [_node_to_k3(n, name, shapes, models) if isinstance(n, list) else n for n in nodes]
    return new


def _build(config: dict, target: Any) -> Any:
    if config["class_name"] == "Sequential":
        return target.Sequential.from_config(config["config"])
    return target.Model.from_config(config["config"])


def copy_weights(src: Any, dst: Any) -> None:
    """Copy every layer's weights of ``src`` into the same-named layer of its twin ``dst`` (either Keras; nested models too)."""
    by_name = {layer.name: layer for layer in dst.layers}
    for layer in src.layers:
        twin = by_name.get(layer.name)
        if twin is None:
            raise RuntimeError(f"internal error: the translated model has no layer {layer.name!r}")
        if hasattr(layer, "layers") and hasattr(twin, "layers") and not hasattr(layer, "weight_attr"):
            copy_weights(layer, twin)
            continue
        values = [np.asarray(v) for v in layer.get_weights()]
        shapes = [tuple(w.shape) for w in twin.get_weights()]
        if [v.shape for v in values] != shapes:
            raise ValueError(f"layer {layer.name!r}: weights {[v.shape for v in values]} do not fit its twin's {shapes}")
        twin.set_weights(values)


def _subclassed_graph(model: Any) -> bool:
    """A functional model of a subclass whose configuration holds its constructor arguments, not its graph (keras-hub backbones, tasks)."""
    from keras.src.models.functional import Functional, functional_like_constructor

    return isinstance(model, Functional) and type(model) is not Functional and not functional_like_constructor(type(model))


def plain_graph(model: Any) -> Any:
    """``model`` with every functional subclass in it (itself included) rebuilt as a plain functional model over the same layers.

    A keras-hub ``Backbone`` is a functional model whose ``get_config`` holds
    its constructor arguments, so its graph cannot be read from the
    configuration; the plain view has the same layer objects (weights shared,
    nothing copied) and a configuration that lists them. ``model`` itself is
    returned when nothing needs rebuilding; it is never changed.
    """
    def needs(m: Any) -> bool:
        return _subclassed_graph(m) or any(isinstance(la, keras3.Model) and needs(la) for la in getattr(m, "layers", []))

    if not needs(model):
        return model
    return keras3.models.clone_model(model, clone_function=lambda la: plain_graph(la) if isinstance(la, keras3.Model) else la)


def _translate(model: Any, target: Any) -> Any:
    import json

    if target is tf_keras:
        model = plain_graph(model)
    cfg = json.loads(model.to_json())
    new = _build(_model_config(cfg, target, _output_shapes(model)), target)
    copy_weights(model, new)
    return new


def to_tf_keras(model: Any) -> Any:
    """A tf-keras twin of a plain Keras 3 Sequential or functional ``model`` (same layers, names and weights; not compiled).

    Wrapped models are refused: `tfprune.strip` them first.
    """
    from tfprune.keras3.inventory import check_keras3_model, keras3_channel_masks, keras3_wrappers

    check_keras3_model(model)
    if keras3_wrappers(model) or keras3_channel_masks(model):
        raise ValueError(f"model {model.name!r} holds pruning wrappers. Fix: tfprune.strip(model) first")
    return _translate(model, tf_keras)


def to_keras3(model: Any) -> Any:
    """A Keras 3 twin of a plain tf-keras Sequential or functional ``model`` (same layers, names and weights; not compiled)."""
    from tfprune._keras import check_model
    from tfprune.inventory.layers import prunable_layers

    check_model(model)
    if any(p.wrapped for p in prunable_layers(model)):
        raise ValueError(f"model {model.name!r} holds pruning wrappers. Fix: tfprune.strip(model) first")
    return _translate(model, keras3)


def on_tf_keras_twin(fn: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(twin, *args, **kwargs)`` on a tf-keras twin of the Keras 3 ``model`` (stripped first when wrapped).

    Every tf-keras model in the result (the result itself, or an item of a
    returned tuple) comes back as a Keras 3 model; a returned report with a
    ``notes`` list says the route. How tfprune's tf-keras-only functions
    (Layer-wise OBS, channel removal, shallowing) serve Keras 3 models.
    """
    from tfprune.keras3.cloning import strip_keras3
    from tfprune.keras3.inventory import keras3_channel_masks, keras3_wrappers

    plain = strip_keras3(model) if keras3_wrappers(model) or keras3_channel_masks(model) else model
    result = fn(to_tf_keras(plain), *args, **kwargs)
    note = (f"{getattr(fn, '__name__', 'this function')} ran on a tf-keras twin of the Keras 3 model {model.name!r} (same layers, names "
            "and weights, tfprune.keras3.convert); the model returned is Keras 3 again")

    def back(item: Any) -> Any:
        if isinstance(item, tf_keras.Model):
            return to_keras3(item)
        notes = getattr(item, "notes", None)
        if isinstance(notes, list):
            notes.append(note)
        return item

    return tuple(back(item) for item in result) if isinstance(result, tuple) else back(result)
