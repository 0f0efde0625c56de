"""`wrap` a model with tfmot pruning wrappers (one `LayerwiseSchedule` each), and `strip` them.

Both return **new** models: every layer is cloned from its config and the
weights are copied, so the input model is never changed, and the result
shares no variable with it. Wrapping goes layer by layer through
``clone_model(clone_function=...)`` instead of ``prune_low_magnitude(model)``,
which fails on models with ``TFOpLambda`` or ``Rescaling`` layers.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterable, Iterator, Mapping, Union

import tensorflow as tf

from tfprune._keras import check_is_model, check_model, is_keras3_object, keras
from tfprune.compat import PruneLowMagnitude, batch_input_shape, is_graph_network, set_batch_input_shape, tfmot_can_prune
from tfprune.inventory.layers import WRAPPER_PREFIX, nested_wrappers, prunable_layers, weight_kind
from tfprune.inventory.selectors import as_selectors, check_selectors_match, selector_matches
from tfprune.masks.channel_mask import ChannelMask
from tfprune.masks.granularity import check_block_size, parse_granularity
from tfprune.masks.schedule import LayerwiseSchedule
from tfprune.masks.wrapper import PruneLayer
from tfprune.validation import check_sparsity

__all__ = ["wrap", "strip", "plain", "clone", "is_wrapped", "wrappers", "channel_masks", "mid_ramp", "is_subclassed", "holds_subclassed", "rewrap_fix",
           "masked_inference", "SUBCLASS_ROUTE"]

Selector = Union[str, type, "re.Pattern[str]"]


def _check_selectors_match(model: Any, selectors: list[Any] | None, argname: str) -> None:
    layers = [m for m in getattr(model, "submodules", ()) if isinstance(m, keras.layers.Layer)] or list(model.layers)
    check_selectors_match(layers, selectors, argname, model.name)


def _clone_layer(layer: Any) -> Any:
    return layer.__class__.from_config(layer.get_config())


#: The one route that prunes a subclassed model, named by every error that meets one.
SUBCLASS_ROUTE = (
    "put tfprune.PruneLayer around each Dense/Conv layer to prune inside the subclass, e.g. "
    "`self.fc = tfprune.PruneLayer(keras.layers.Dense(10))`; call the model once on a batch to build it, compile, fit with "
    "callbacks=[tfprune.Pruning(0.8)], then `tfprune.export_tflite(model, path)` exports the wrapped model as it is"
)


def is_subclassed(model: Any) -> bool:
    """True for a subclassed ``keras.Model`` (neither Sequential nor functional): it has no layer graph to rebuild."""
    return isinstance(model, keras.Model) and not isinstance(model, keras.Sequential) and not is_graph_network(model)


def holds_subclassed(model: Any) -> bool:
    """True when ``model`` is subclassed or holds a subclassed model at any depth (then no clone can copy it)."""
    if is_subclassed(model):
        return True
    return any(isinstance(layer, keras.Model) and holds_subclassed(layer) for layer in getattr(model, "layers", []))


def rewrap_fix(model: Any) -> str:
    """The fix for layers wrapped by another wrapper than `PruneLayer` (tfmot's own, or a foreign schedule) in ``model``."""
    if is_subclassed(model):
        return ("put tfprune.PruneLayer in place of that wrapper inside the subclass, e.g. "
                "`self.fc = tfprune.PruneLayer(keras.layers.Dense(10))` (it takes the same arguments as prune_low_magnitude; a "
                "pruning_schedule, if given, must be a tfprune.LayerwiseSchedule), then build, compile and fit again")
    return "strip and wrap again, `model = tfprune.wrap(tfprune.strip(model))`, then compile and fit"


def _refuse_subclassed(model: Any, action: str) -> None:
    """TypeError naming the subclassed-model route, when ``model`` is subclassed (``action``: wrap, strip or clone)."""
    if not is_subclassed(model):
        return
    if action == "wrap":
        if is_wrapped(model):
            raise TypeError(f"model {model.name!r} is a subclassed keras.Model that already holds pruning wrappers. Fix: train it as it "
                            "is (compile, fit with callbacks=[tfprune.Pruning(0.8)]), then `tfprune.export_tflite(model, path)`")
        raise TypeError(f"model {model.name!r} is a subclassed keras.Model: tfprune.wrap rebuilds a model layer by layer from its "
                        f"config, which a subclass does not have. Fix: build it with the Sequential or functional API, or {SUBCLASS_ROUTE}")
    raise TypeError(f"tfprune.{action} cannot copy model {model.name!r}: it is a subclassed keras.Model, and Keras rebuilds only "
                    "Sequential and functional models. Fix: export it as it is, `tfprune.export_tflite(model, path)` (it applies the "
                    "masks for the conversion and puts the weights back: the model is not changed), and keep it with "
                    "model.save_weights(path) (masks and pruning state included; load_weights into a new instance called once on a batch). "
                    "What works on a copy (data-driven importance such as 'sensitivity', OBS) does not take a subclass: keep "
                    "tfprune.Pruning's default importance")


def _clone_model(model: Any, fn: Any) -> Any:
    try:
        return keras.models.clone_model(model, clone_function=fn)
    except (ValueError, NotImplementedError) as err:
        if is_subclassed(model):
            raise TypeError(
                f"model {model.name!r} is a subclassed keras.Model nested in the model, which cannot be cloned layer by layer. "
                f"Fix: build it with the Sequential or functional API, or {SUBCLASS_ROUTE}."
            ) from err
        raise


@contextlib.contextmanager
def masked_inference(model: Any) -> Iterator[Any]:
    """Inside: every `PruneLayer` in ``model`` holds its masked weights and computes as its layer alone; after: all restored.

    What a subclassed model, which `strip` cannot copy, is exported with: a
    graph traced inside holds the inner layers' ops on the masked weights (no
    mask multiplication, no step update), as the stripped model would. On
    exit the raw weights are put back bit for bit and the wrappers compute as
    before, so ``model`` is not changed. Run nothing inside that caches a
    trace on the model (``model.predict``); call the model directly.

    Raises TypeError for tfmot's own wrappers there (their call assigns the
    masked kernel in every graph, which no converter can freeze): the fix is
    `PruneLayer` in their place.
    """
    ws = wrappers(model)
    foreign = [w for w in ws if not isinstance(w, PruneLayer)]
    if foreign:
        where = "the subclass" if is_subclassed(model) else "the custom layer that builds it"
        raise TypeError(f"layer {foreign[0].layer.name!r} of model {model.name!r} is wrapped by {type(foreign[0]).__name__}, whose call "
                        f"assigns the masked kernel in every graph, so it cannot be exported as it is. Fix: put tfprune.PruneLayer in place "
                        f"of that wrapper inside {where}, e.g. `self.fc = tfprune.PruneLayer(keras.layers.Dense(10))` (it takes the same "
                        "arguments; a pruning_schedule, if given, must be a tfprune.LayerwiseSchedule), then build, compile and fit it with "
                        "tfprune.Pruning")
    saved = [(w, [(var, var.numpy()) for var, _, _ in w.pruning_vars]) for w in ws]
    try:
        for w in ws:
            for var, mask, _ in w.pruning_vars:
                var.assign(var * tf.cast(mask, var.dtype))
            w.as_layer = True
        yield model
    finally:
        for w, values in saved:
            w.as_layer = False
            for var, value in values:
                var.assign(value)


_MERGE_TYPES = ("Concatenate", "Add", "Average", "Maximum", "Minimum", "Multiply", "Subtract", "Dot")


def _singleton_merges(model: Any) -> set[int]:
    """ids of merge layers (``Concatenate``...) called on a list of ONE tensor, in ``model`` and its nested models.

    ``keras.layers.Concatenate(name="box")([x])`` is an identity that names
    its output (keras-cv's YOLOV8 head does this). A functional config stores
    that call as a plain tensor, so Keras cannot rebuild it (``clone_model``
    and ``load_model`` both fail with "should be called on a list"). The
    rebuild replaces such layers by a linear ``Activation`` of the same name:
    the same function, and a graph Keras can clone and reload.
    """
    out: set[int] = set()

    def visit(m: Any) -> None:
        for layer in getattr(m, "layers", []):
            if isinstance(layer, keras.Model):
                visit(layer)
            elif type(layer).__name__ in _MERGE_TYPES:
                nodes = getattr(layer, "inbound_nodes", [])
                args = [getattr(n, "call_args", ()) for n in nodes]
                if nodes and all(a and isinstance(a[0], (list, tuple)) and len(a[0]) == 1 for a in args):
                    out.add(id(layer))

    visit(model)
    return out


def _rebuild(model: Any, layer_fn: Any) -> Any:
    """Clone ``model`` recursively (nested models too), each layer through ``layer_fn``; copy weights."""
    singletons = _singleton_merges(model)

    def clone_fn(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return _clone_model(layer, clone_fn)
        if id(layer) in singletons:
            return keras.layers.Activation("linear", name=layer.name, dtype=layer.dtype_policy.name if hasattr(layer, "dtype_policy") else None)
        return layer_fn(layer)

    new_model = _clone_model(model, clone_fn)
    _copy_weights(model, new_model)
    return new_model


def _layers_of(model: Any, cls: type, inside_custom: bool = True) -> list[Any]:
    """Every layer of class ``cls`` in ``model`` (nested models, and custom layers' sublayers, included), once each, in layer order."""
    out: list[Any] = []

    def visit(m: Any) -> None:
        for layer in m.layers:
            if isinstance(layer, cls):
                if all(layer is not o for o in out):
                    out.append(layer)
            elif isinstance(layer, keras.Model):
                visit(layer)
            elif inside_custom:  # a custom layer holding wrappers (PruneLayer inside a subclass's block)
                out.extend(s for s in nested_wrappers(layer, cls) if all(s is not o for o in out))

    visit(model)
    return out


def wrappers(model: Any) -> list[Any]:
    """All pruning wrappers in ``model`` (nested models included): tfmot ``PruneLowMagnitude`` ones, or a Keras 3 model's `PruneWrapper`s."""
    if is_keras3_object(model):
        from tfprune.keras3.inventory import keras3_wrappers

        return keras3_wrappers(model)
    return _layers_of(model, PruneLowMagnitude)


def channel_masks(model: Any) -> list[Any]:
    """All `ChannelMask` wrappers in ``model`` (nested models included), in layer order (a Keras 3 model: its Keras 3 `ChannelMask` s)."""
    if is_keras3_object(model):
        from tfprune.keras3.inventory import keras3_channel_masks

        return keras3_channel_masks(model)
    return _layers_of(model, ChannelMask)


def mid_ramp(model: Any) -> str:
    """A sentence saying ``model``'s wrappers stopped before their ramp's ``end_step`` ("" when none did, or none has a target).

    A model saved by ``ModelCheckpoint(save_best_only=True)`` or stopped by
    EarlyStopping during pruning holds less sparsity than planned; this says how far it got.
    """
    short = []
    for w in wrappers(model) + channel_masks(model):
        sched = getattr(w, "pruning_schedule", None)
        target = float(getattr(sched, "target_sparsity", 0.0) or 0.0)
        end = getattr(sched, "end_step", None)
        if end is None or target <= 0:
            continue
        step = int(w.pruning_step.numpy())
        if 0 <= step < int(end):
            short.append((w.layer.name, step, int(end)))
    if not short:
        return ""
    step, end = short[0][1], short[0][2]
    return (f"model {model.name!r} stopped mid-ramp: pruning step {step} of end_step {end} ({len(short)} wrapped layer(s) short of their "
            "target). Fix: fit it again with tfprune.Pruning and the same target to finish the ramp (it resumes), or accept its lower sparsity")


def is_wrapped(model: Any) -> bool:
    """True when ``model`` holds at least one pruning wrapper (tfmot's, or a `ChannelMask`)."""
    return bool(wrappers(model)) or bool(channel_masks(model))


def _copy_weights(src: Any, dst: Any) -> None:
    """Copy weights from ``src`` to its clone ``dst`` by layer name (wrappers understood)."""
    by_name = {}
    for layer in dst.layers:
        by_name[layer.name] = layer
        if isinstance(layer, (PruneLowMagnitude, ChannelMask)):
            by_name[layer.layer.name] = layer
    for s in src.layers:
        if not s.weights:
            continue
        key = s.layer.name if isinstance(s, (PruneLowMagnitude, ChannelMask)) else s.name
        d = by_name.get(key)
        if d is None:
            raise RuntimeError(f"internal error: cloned model has no layer {key!r}")
        if isinstance(s, keras.Model) and not isinstance(s, PruneLowMagnitude):
            _copy_weights(s, d)
            continue
        if isinstance(s, ChannelMask):
            if isinstance(d, ChannelMask):  # wrapped -> wrapped: every value (keep, ranks, ramp, step)
                d.set_weights(s.get_weights())
            else:  # stripped: the keep-vector folded into the weights
                d.set_weights(s.folded_weights())
            continue
        if isinstance(d, ChannelMask):
            d.layer.set_weights(s.get_weights())
            continue
        if isinstance(s, PruneLowMagnitude):
            masks = {id(w): m for w, m, _ in s.pruning_vars}
            values = [w.numpy() * masks[id(w)].numpy() if id(w) in masks else w.numpy() for w in s.layer.weights]
            target = d.layer if isinstance(d, PruneLowMagnitude) else d
            target.set_weights(values)
            if isinstance(d, PruneLowMagnitude):  # wrapped -> wrapped: keep masks and step
                for (_, m_src, t_src), (_, m_dst, t_dst) in zip(s.pruning_vars, d.pruning_vars):
                    m_dst.assign(m_src)
                    t_dst.assign(t_src)
                d.pruning_step.assign(s.pruning_step)
        elif isinstance(d, PruneLowMagnitude):
            d.layer.set_weights(s.get_weights())
        else:
            d.set_weights(s.get_weights())


def wrap(
    model: Any,
    targets: float | Mapping[str, float] | Any | None = None,
    *,
    include: Selector | Iterable[Selector] | None = None,
    exclude: Selector | Iterable[Selector] | None = None,
    granularity: str = "unstructured",
    block_size: tuple[int, int] | None = None,
    begin_step: int = 0,
    end_step: int = 1000,
    frequency: int = 10,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
    include_outputs: bool = False,
) -> Any:
    """Return a copy of ``model`` whose prunable layers carry tfmot pruning wrappers.

    Each wrapped layer gets its own `LayerwiseSchedule`, so every layer can
    have its own target (fraction of weights removed). The pruning callbacks
    (`tfprune.Pruning`, and later ones) set targets and the ramp at
    train begin; the schedule arguments here are only the defaults used when
    training with tfmot's own ``UpdatePruningStep`` instead.

    Args:
      model: a built tf-keras Sequential or functional model (nested models,
        shared layers, TFOpLambda, Rescaling, BatchNorm, Add... are fine).
        It is not modified. A subclassed model is refused with its route
        (`SUBCLASS_ROUTE`): `PruneLayer` around its layers inside the subclass.
      targets: initial per-layer targets: one float for every wrapped layer, a
        dict ``{layer_name: sparsity}`` (missing layers get 0.0), or an
        `Allocation`. Default 0.0 (wrapped, nothing removed yet).
      include: only wrap layers matching these names, regexes (full match) or
        layer classes. Default: every prunable layer.
      exclude: never wrap layers matching these.
      granularity: the mask rule each wrapper starts with (see
        `tfprune.masks.granularity`): ``unstructured`` (default), ``block``,
        ``channel``, ``"N:M"`` (e.g. ``"2:4"``) or ``frozen`` (the masks are
        set now from the zeros the weights already hold and never change:
        fine-tuning that keeps a pruned model's zeros). The pruning callback
        can switch among the first three later; ``N:M`` fixes N and M here.
      block_size: ``(height, width)`` of the ``block`` rule for Dense kernels
        (e.g. ``(4, 1)`` for XNNPack's native sparse inference); giving it
        with the default granularity selects ``block``. Convolutions are
        always pruned element-wise under ``block``.
      begin_step, end_step, frequency, initial_sparsity, power: see
        `LayerwiseSchedule`.

    Returns:
      A new, uncompiled model. Compile it before ``fit``.

    A Keras 3 model (``import keras``) gets Keras 3 wrappers
    (`tfprune.keras3.wrapper.PruneWrapper`, any Keras backend) with the same
    arguments (``channel``: Keras 3 `ChannelMask` s, the groups read through the model's tf-keras twin).
    """
    if is_keras3_object(model):
        from tfprune.keras3.models import wrap_keras3

        return wrap_keras3(model, targets, include=include, exclude=exclude, granularity=granularity, block_size=block_size,
                           begin_step=begin_step, end_step=end_step, frequency=frequency, initial_sparsity=initial_sparsity, power=power,
                           include_outputs=include_outputs)
    check_is_model(model)
    _refuse_subclassed(model, "wrap")  # before the built check: its fix is the route, whether built or not
    check_model(model)
    if _layers_of(model, (PruneLowMagnitude, ChannelMask), inside_custom=False):  # wrappers inside custom layers are cloned with them
        raise ValueError(
            f"model {model.name!r} already holds pruning wrappers. Fix: train it as it is"
            + (" (compile, fit with callbacks=[tfprune.Pruning(0.8)]), then `tfprune.export_tflite(model, path)`: it holds a subclassed "
               "model, which strip cannot copy." if holds_subclassed(model) else ", or call tfprune.strip(model) first to wrap it anew.")
        )
    inventory = prunable_layers(model)
    if not len(inventory):
        raise ValueError(
            f"model {model.name!r} has no prunable layers (Dense, Conv, SeparableConv, Embedding).\n"
            + inventory.table()
        )
    inc = as_selectors(include, "include")
    exc = as_selectors(exclude, "exclude")
    _check_selectors_match(model, inc, "include")
    _check_selectors_match(model, exc, "exclude")
    if block_size is not None:
        block_size = check_block_size(block_size)
        if granularity == "unstructured" and block_size != (1, 1):
            granularity = "block"
    g = parse_granularity(granularity, block_size)
    if g.kind == "channel":
        if targets is not None:
            raise ValueError("targets= sets per-layer weight sparsities; under granularity='channel' the Pruning callback plans the "
                             "channel groups. Fix: drop targets= and pass macs=/params= to tfprune.Pruning (or tfprune.plan).")
        return _wrap_channels(model, inc, exc, include_outputs)
    # Targets: resolve to {name: sparsity} over the prunable names.
    names = set(inventory.names)
    if targets is None:
        per_layer: dict[str, float] = {}
        default = 0.0
    elif isinstance(targets, Mapping) or hasattr(targets, "targets"):
        per_layer = dict(getattr(targets, "targets", targets))
        default = 0.0
        unknown = [n for n in per_layer if _strip_prefix(n) not in names]
        if unknown:
            raise ValueError(f"unknown layer name(s) in targets: {unknown}. Prunable layers: {sorted(names)}. Fix: use those names")
        per_layer = {_strip_prefix(k): check_sparsity(v, f"targets[{k!r}]") for k, v in per_layer.items()}
    else:
        default = check_sparsity(targets, "targets")
        per_layer = {}
    schedule_args = dict(begin_step=begin_step, end_step=end_step, frequency=frequency, initial_sparsity=initial_sparsity, power=power)
    LayerwiseSchedule(**schedule_args)  # validate once, before cloning anything

    selected: list[str] = []

    def wrap_layer(layer: Any) -> Any:
        new = _clone_layer(layer)
        if weight_kind(layer) is None:
            return new
        if inc is not None and not selector_matches(layer, inc):
            return new
        if exc is not None and selector_matches(layer, exc):
            return new
        if not tfmot_can_prune(new):
            return new
        schedule = LayerwiseSchedule(target_sparsity=per_layer.get(layer.name, default), **schedule_args)
        selected.append(layer.name)
        return PruneLayer(new, pruning_schedule=schedule, granularity=g.name, block_size=g.block_size, n_m=(g.n, g.m))

    new_model = _rebuild(model, wrap_layer)
    if not selected:
        raise ValueError(f"include/exclude selected no layer to wrap. Prunable layers: {sorted(names)}")
    not_selected = [n for n in per_layer if n not in selected and per_layer[n] > 0]
    if not_selected:
        raise ValueError(f"targets name layer(s) {not_selected} that include/exclude left unwrapped.")
    if g.kind == "frozen":
        for w in wrappers(new_model):
            for weight, mask, _ in w.pruning_vars:
                mask.assign(tf.cast(tf.not_equal(weight, 0), mask.dtype))
    return new_model


def _wrap_channels(model: Any, inc: list[Any] | None, exc: list[Any] | None, include_outputs: bool) -> Any:
    """`wrap` under ``channel``: a `ChannelMask` on each weighted layer whose output holds a prunable group's channels."""
    from tfprune.structured.graph import channel_graph, channel_mask_owners

    cg = channel_graph(model, include_outputs)
    owners = channel_mask_owners(cg, cg.graph.sources.get, inc, exc)
    chosen = {id(cg.graph.sources[name]) for name in owners}

    def wrap_layer(layer: Any) -> Any:
        new = _clone_layer(layer)
        return ChannelMask(new) if id(layer) in chosen else new

    return _rebuild(model, wrap_layer)


def _strip_prefix(name: str) -> str:
    return name[len(WRAPPER_PREFIX):] if name.startswith(WRAPPER_PREFIX) else name


def strip(model: Any) -> Any:
    """Return a copy of ``model`` without pruning wrappers, masks applied to the weights.

    The result has the original layer names and types and exactly the zeros
    the wrappers' masks hold, ready to save or export. ``model`` is not
    modified (unlike tfmot's ``strip_pruning``, no layer is shared).

    A subclassed model cannot be copied (Keras rebuilds only Sequential and
    functional models): `tfprune.export_tflite` takes it wrapped, as it is.
    A Keras 3 model gives a plain Keras 3 model (no tfprune class left in it).
    """
    if is_keras3_object(model):
        from tfprune.keras3.cloning import strip_keras3

        return strip_keras3(model)
    check_is_model(model)
    _refuse_subclassed(model, "strip")  # before the built check: its fix is the route, whether built or not
    check_model(model)

    def unwrap_layer(layer: Any) -> Any:
        if isinstance(layer, (PruneLowMagnitude, ChannelMask)):
            inner = _clone_layer(layer.layer)
            if batch_input_shape(inner) is None and batch_input_shape(layer) is not None:
                set_batch_input_shape(inner, batch_input_shape(layer))
            return inner
        return _clone_layer(layer)

    return _rebuild(model, unwrap_layer)


def plain(model: Any) -> Any:
    """``model`` without wrappers: `strip` of it when it holds any, else the model itself (not copied)."""
    return strip(model) if is_wrapped(model) else model


def clone(model: Any) -> Any:
    """A deep copy of ``model`` (wrappers, masks and pruning step kept)."""
    check_is_model(model)
    _refuse_subclassed(model, "clone")  # before the built check: its fix is the route, whether built or not
    check_model(model)
    return _rebuild(model, _clone_layer)
