"""`plan`: one total sparsity -> per-layer targets, the one path every tfprune entry point uses.

Flow (How Compact?, Jung, Kim & Choe 2019): score each prunable layer's
importance (`tfprune.importance`), split the total target across layers with
an allocator (`tfprune.allocation`), then round every layer to whole units of
the granularity (weights, blocks, channels, N:M groups; see
`tfprune.masks.granularity`) while keeping the total as close to the request as
whole units allow. The pruning callback, `tfprune.analyze`, `tfprune.obs.prune`
and the CLI all call `plan` with the same defaults:
``importance="capacity"``, ``allocation="importance"``.

Units: ``sparsity`` is the fraction of **all prunable kernel weights
removed** (0.9 = nine in ten weights are zero). `Plan.targets` holds, per
layer, the fraction of that layer's *units* removed, which is what the mask
rule of the layer's wrapper applies (for ``unstructured`` it is the fraction
of weights; for ``channel`` the fraction of output channels).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Iterable, Mapping

import numpy as np

from tfprune._keras import is_keras3_object
from tfprune.allocation import Allocation, allocate_sparsity, allocator_needs_scores, get_allocator
from tfprune.importance import ImportanceScores, get_importance, score_layers
from tfprune.inventory.layers import prunable_layers
from tfprune.masks.granularity import Granularity, layer_units, parse_granularity
from tfprune.planning.plans import Plan
from tfprune.validation import check_sparsity, finite_weights, positive_scores

__all__ = [
    "Plan",
    "plan",
    "output_layer_names",
    "DEFAULT_IMPORTANCE",
    "DEFAULT_ALLOCATION",
    "DEFAULT_CHANNEL_IMPORTANCE",
    "DEFAULT_CHANNEL_ALLOCATION",
    "default_methods",
]

DEFAULT_IMPORTANCE = "capacity"
DEFAULT_ALLOCATION = "importance"
DEFAULT_CHANNEL_IMPORTANCE = "l2"
DEFAULT_CHANNEL_ALLOCATION = "uniform"


def default_methods(granularity: str | Granularity = "unstructured") -> tuple[str, str]:
    """``(importance, allocation)`` that `plan` and `tfprune.Pruning` use when given None, for a granularity.

    Layers (weight granularities): How Compact?'s ``("capacity", "importance")``; channel groups:
    ``("l2", "uniform")`` (the best measured; benchmarks/results/README.md).
    """
    if parse_granularity(granularity).kind == "channel":
        return DEFAULT_CHANNEL_IMPORTANCE, DEFAULT_CHANNEL_ALLOCATION
    return DEFAULT_IMPORTANCE, DEFAULT_ALLOCATION


def _plain(model: Any) -> Any:
    from tfprune.masks.wrapping import plain  # the masks stage, reached lazily: a plan reads the model without wrappers

    return plain(model)


def params_to_sparsity(model: Any, params: float) -> float:
    """The weight sparsity that removes the fraction ``params`` of the model's parameters (wrapper variables not counted)."""
    value = check_sparsity(params, "params")
    inv = model if isinstance(model, list) else prunable_layers(model)
    prunable_total = sum(p.n_params for p in inv)
    total = prunable_total if isinstance(model, list) else int(_plain(model).count_params())
    sparsity = value * total / max(prunable_total, 1)
    if sparsity >= 1.0:
        raise ValueError(f"params={value} asks to remove {int(value * total)} parameters, but only {prunable_total} of the model's "
                         f"{total} are prunable kernel weights. Fix: params < {prunable_total / total:.4f}")
    return sparsity
OUTPUT_REASON = "produces a model output: channel pruning would delete output units (classes). Fix: include_outputs=True to allow it"


# ----------------------------------------------------------------- outputs
def _refs(obj: Any) -> Iterable[str]:
    """Layer names referenced by a functional config's ``inbound_nodes`` entry (any nesting)."""
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) and isinstance(obj[2], int):
            yield obj[0]
            if len(obj) > 3:
                yield from _refs(obj[3])
            return
        for item in obj:
            yield from _refs(item)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _refs(v)


_PREFIX = "prune_low_magnitude_"


def _inner_name(layer_cfg: dict) -> str:
    cfg = layer_cfg.get("config", {})
    if layer_cfg.get("class_name") in ("PruneLayer", "PruneLowMagnitude") and "layer" in cfg:
        return cfg["layer"]["config"]["name"]
    return cfg.get("name", layer_cfg.get("name", ""))


def _producers(config: dict, class_name: str) -> set[str]:
    """Names of the weighted layers that produce the outputs of a (Sequential or functional) model config."""
    layers = config.get("layers", [])
    mixing = {"Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
              "SeparableConv1D", "SeparableConv2D", "Embedding", "PruneLayer", "PruneLowMagnitude"}
    if class_name == "Sequential" or "output_layers" not in config:
        for lc in reversed(layers):
            if lc.get("class_name") in ("Sequential", "Functional", "Model"):
                return _producers(lc["config"], lc["class_name"])
            if lc.get("class_name") in mixing:
                return {_inner_name(lc)}
        return set()
    by_name = {lc.get("name", lc["config"].get("name")): lc for lc in layers}
    out: set[str] = set()
    seen: set[str] = set()
    stack = [ref[0] for ref in config["output_layers"]] if config["output_layers"] and isinstance(config["output_layers"][0], list) \
        else [config["output_layers"][0]]
    while stack:
        name = stack.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        lc = by_name[name]
        if lc.get("class_name") in mixing:
            out.add(_inner_name(lc))
        elif lc.get("class_name") in ("Sequential", "Functional", "Model"):
            out |= _producers(lc["config"], lc["class_name"])
        else:
            stack.extend(_refs(lc.get("inbound_nodes", [])))
    return out


def output_layer_names(model: Any) -> set[str]:
    """Names of the prunable layers whose channels are the model's outputs.

    Walks back from each model output through layers that do not mix
    channels (activations, BatchNorm, Dropout, reshapes, pooling...) to the
    first Dense/Conv/Embedding. Uses ``model.get_config()`` only.
    """
    return _producers(model.get_config(), type(model).__name__)


# ------------------------------------------------------------------- units
def round_to_units(real_removed: np.ndarray, unit_weights: np.ndarray, max_units: np.ndarray, budget: int) -> np.ndarray:
    """Integer units removed per layer whose weight total is as close to ``budget`` as whole units allow.

    Args:
      real_removed: (L,) weights each layer should lose (from the allocator).
      unit_weights: (L,) weights one unit removes (>= 1).
      max_units: (L,) most units each layer may lose.
      budget: total weights to remove.

    Floors every layer, then adds single units to the layers with the
    largest remainders while an addition brings the total closer to
    ``budget``. With ``unit_weights == 1`` the result is exact.
    """
    uw = np.maximum(np.asarray(unit_weights, dtype=np.int64), 1)
    real_units = np.asarray(real_removed, dtype=np.float64) / uw
    units = np.minimum(np.floor(real_units + 1e-9).astype(np.int64), max_units)
    deficit = int(budget - (units * uw).sum())
    order = np.lexsort((np.arange(len(uw)), -(real_units - units)))
    changed = True
    while deficit > 0 and changed:
        changed = False
        for i in order:
            if units[i] < max_units[i] and 2 * uw[i] <= 2 * deficit + uw[i]:  # the addition does not overshoot by more than it closes
                units[i] += 1
                deficit -= int(uw[i])
                changed = True
                if deficit <= 0:
                    break
    return units


def _resolve_scores(importance: Any, inv: Any, model: Any, data: Any, importance_kwargs: Mapping[str, Any], sparsity: float) -> ImportanceScores | None:
    names = [p.name for p in inv]
    if isinstance(importance, ImportanceScores):
        missing = [n for n in names if n not in importance.scores]
        if missing:
            raise ValueError(f"the ImportanceScores given lack layer(s) {missing}; they score {sorted(importance.scores)}")
        positive_scores({n: importance.scores[n] for n in names})
        return importance
    if isinstance(importance, Mapping):
        missing = [n for n in names if n not in importance]
        if missing:
            raise ValueError(f"importance scores lack layer(s) {missing}. Fix: give every planned layer a score > 0, e.g. start from "
                             "tfprune.score_layers(model).scores and change the ones you want")
        return ImportanceScores("given", positive_scores({n: importance[n] for n in names}), 0.0)
    if not isinstance(importance, str):
        raise TypeError(f"importance must be a scorer name, an ImportanceScores or a dict of scores; got {type(importance).__name__}")
    _, wants_data = get_importance(importance)
    kw = dict(importance_kwargs)
    if importance == "sensitivity":
        kw.setdefault("sparsity", sparsity)
    if wants_data and model is None:
        raise ValueError(f"importance={importance!r} needs the model and data, not only its layers")
    return score_layers(model if wants_data else inv, importance, data=data, **kw)


def plan(
    model: Any,
    sparsity: float | None = None,
    *,
    macs: float | None = None,
    params: float | None = None,
    latency: float | None = None,
    latency_table: Any = None,
    importance: str | ImportanceScores | Mapping[str, float] | None = None,
    allocation: str | None = None,
    granularity: str | Granularity = "unstructured",
    data: Any = None,
    min_density: float = 0.0,
    max_sparsity: float | Mapping[str, float] | None = None,
    exclude: Iterable[str] | None = None,
    include_outputs: bool = False,
    importance_kwargs: Mapping[str, Any] | None = None,
    allocation_kwargs: Mapping[str, Any] | None = None,
    layers: Any = None,
    min_channels: int = 1,
    gamma: float = 1.0,
    layer_importance: str = "capacity",
    tolerance: float = 0.01,
    max_iter: int = 4,
) -> Plan:
    """Turn one total into per-owner targets: layers for weight granularities, channel groups for ``channel``.

    Nothing in ``model`` changes. Give exactly one budget:

    * ``sparsity``: fraction of all prunable kernel weights removed (weight granularities);
    * ``params``: fraction of the model's parameters removed (any granularity);
    * ``macs``: fraction of the model's multiply-accumulates removed (``channel``:
      only physical removal lowers MACs);
    * ``latency`` (``channel``): the latency wanted, as a **ratio** of the dense
      model's (0.5: half the milliseconds), predicted by ``latency_table`` (a
      `tfprune.latency.LatencyTable`; built with `tfprune.latency.build_table`,
      timing the model's layers on this machine, when None). The plan's
      ``requested`` and ``achieved`` are then fractions of the latency removed.

    Args:
      model: a tf-keras model (wrapped or not), or ``tfprune.prunable_layers(model)``.
      sparsity: fraction of all prunable weights to remove, in [0, 1).
      macs, params: see above, in [0, 1).
      importance: a scorer name (``tfprune.importance.list_importance()``), an
        `ImportanceScores` (e.g. from `tfprune.score_layers`), or a dict of
        per-layer scores. Score-free allocators (uniform, global, lamp, erk,
        global_ratio) skip scoring.
      allocation: an allocator name (``tfprune.allocation.list_allocators()``).
      granularity: ``unstructured``, ``block``, ``channel``, ``"N:M"`` (e.g. "2:4").
      data: calibration data for data-driven scorers (x, (x, y), tf.data...).
      min_density: every layer keeps at least this fraction of its weights.
      max_sparsity: cap on a layer's sparsity (a float, or a dict by name).
      exclude: layer names kept dense (they still count in the total).
      include_outputs: under ``channel``, also prune the layers whose channels
        are the model's outputs (off by default: it would delete classes).
      importance_kwargs, allocation_kwargs: passed to the scorer / allocator.
      layers: restrict the plan to these prunable layers (a `LayerInventory`
        or list of `PrunableLayer`; default: all of the model's).
      min_channels, gamma, layer_importance, tolerance, max_iter: channel plans:
        channels every group keeps; exponent on group importance; the layer
        scorer giving each group its importance (``allocation="importance"``);
        accepted |achieved - requested|; shrinks at most to measure the total.

    Under ``channel``: ``importance`` is a channel scorer
    (``tfprune.importance.list_importance("channel")``, default ``"l2"``),
    ``allocation`` the channel-group form of an allocator (default
    ``"uniform"``; `tfprune.allocation.list_group_allocators`), and the
    achieved total is measured with `tfprune.profile` on the shrunk model.
    Elsewhere the defaults are ``importance="capacity"``, ``allocation="importance"``.

    Returns:
      A `Plan`. Under ``unstructured`` the planned total equals
      ``round(sparsity * N) / N`` exactly; under coarser rules it is the
      closest total whole units allow (``Plan.achieved``).
    """
    t0 = time.perf_counter()
    g = parse_granularity(granularity)
    given = {k: v for k, v in (("sparsity", sparsity), ("macs", macs), ("params", params), ("latency", latency)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one budget: sparsity= (fraction of prunable weights removed), macs= or params= (fractions of the "
                         f"model's MACs / parameters removed), or latency= (channel plans: a ratio of the dense model's latency); "
                         f"got {sorted(given) or 'none'}")
    (budget, value), = given.items()
    if budget == "latency" and g.kind != "channel":
        raise ValueError(f"granularity={g.name!r} keeps every multiply of the dense kernels on this machine's LiteRT, so it cannot lower "
                         "the latency a table predicts. Fix: granularity='channel' with latency=")
    if latency_table is not None and budget != "latency":
        raise ValueError("latency_table= is read only with a latency= budget. Fix: drop it, or pass latency=")
    if g.kind == "channel":
        if budget == "sparsity":
            raise ValueError("granularity='channel' removes whole channels: its budget is counted in MACs or parameters. "
                             "Fix: tfprune.plan(model, macs=0.5, granularity='channel') (or params=0.5)")
        from tfprune.structured.plan import plan_and_shrink

        if isinstance(model, (list,)) or not hasattr(model, "get_config"):
            raise TypeError("a channel plan needs the Keras model itself (its graph), not its prunable_layers()")
        if budget != "latency":
            check_sparsity(value, budget)
        if is_keras3_object(model):  # planned on its tf-keras twin: the same groups, names and channels
            from tfprune.keras3.convert import to_tf_keras
            from tfprune.masks.wrapping import is_wrapped, strip

            model = to_tf_keras(strip(model) if is_wrapped(model) else model)
        latency_cost = None
        if budget == "latency":
            from tfprune.latency import LatencyCost, LatencyTable, build_table

            table = build_table(_plain(model)) if latency_table is None else latency_table
            if not isinstance(table, LatencyTable):
                raise TypeError(f"latency_table must be a tfprune.latency.LatencyTable, got {type(table).__name__}. Fix: "
                                "tfprune.latency.build_table(model), or tfprune.latency.LatencyTable.load(path)")
            latency_cost = lambda cg: LatencyCost(cg, table)  # noqa: E731
        return plan_and_shrink(_plain(model), macs, params, latency=latency, latency_cost=latency_cost,
                               importance=importance or default_methods(g)[0],
                               allocation=allocation or default_methods(g)[1], layer_importance=layer_importance, gamma=gamma,
                               min_channels=min_channels, include_outputs=include_outputs, tolerance=tolerance, max_iter=max_iter,
                               data=data, importance_options=importance_kwargs)[0]
    importance = default_methods(g)[0] if importance is None else importance
    allocation = default_methods(g)[1] if allocation is None else allocation
    if budget == "macs":
        raise ValueError(f"granularity={g.name!r} zeroes weights but keeps every multiply of the dense kernels: a MACs budget needs "
                         "physical removal. Fix: granularity='channel' with macs=, or sparsity= / params= for weight sparsity")
    if budget == "params":
        sparsity = params_to_sparsity(model, value)
    sparsity = check_sparsity(sparsity, "sparsity")
    get_allocator(allocation)  # validates the name
    if isinstance(importance, str):
        get_importance(importance)
    g = parse_granularity(granularity)
    if g.kind == "frozen":
        raise ValueError("granularity 'frozen' keeps existing masks; it takes no plan. Use 'unstructured', 'block', 'channel' or 'N:M'.")
    from tfprune.inventory.layers import LayerInventory
    if isinstance(model, (LayerInventory, list)):
        inv, keras_model = list(model), None
        notes = []
    else:
        keras_model = model
        inventory = prunable_layers(model)
        inv = list(inventory)
        notes = skipped_notes(inventory)
    if isinstance(importance, Mapping):
        unknown = [k for k in importance if k not in {p.name for p in inv}]
        if unknown:
            raise ValueError(f"importance names unknown layer(s) {unknown}. Fix: give scores for the prunable layers "
                             f"{[p.name for p in inv]} (tfprune.prunable_layers(model).names)")
    if layers is not None:
        wanted = {p.name for p in layers}
        inv = [p for p in inv if p.name in wanted]
    if not inv:
        raise ValueError("no prunable layers to plan over (Dense, Conv, SeparableConv, Embedding). See tfprune.prunable_layers(model). "
                         "Fix: pass a model that holds such layers (their weights are what a plan removes)")
    names = [p.name for p in inv]
    if all(getattr(p, "layer", None) is not None for p in inv):
        finite_weights({p.name: p.kernel() for p in inv}, "plan")
    excluded: dict[str, str] = {}
    if exclude is not None:
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        unknown = sorted(set(exclude) - set(names))
        if unknown:
            raise ValueError(f"exclude names unknown layer(s) {unknown}; prunable layers: {names}. Fix: use those names")
        excluded.update({n: "excluded by the caller" for n in exclude})
    units, unit_w = {}, {}
    for p in inv:
        n_u, w_u, reason = layer_units(tuple(p.shape), g, transpose="Transpose" in p.layer_type)
        units[p.name], unit_w[p.name] = n_u, w_u
        if reason and g.kind == "n:m":
            excluded.setdefault(p.name, reason)
    if len(excluded) == len(names):
        raise ValueError(f"every prunable layer is excluded under granularity {g.name!r}: {excluded}. Fix: exclude fewer layers "
                         "(exclude=/min_density=/max_sparsity=), or choose a granularity those layers support")
    # Bounds in weights: the caller's caps.
    caps: dict[str, float] = {}
    if max_sparsity is not None:
        if isinstance(max_sparsity, Mapping):
            unknown = sorted(set(max_sparsity) - set(names))
            if unknown:
                raise ValueError(f"max_sparsity names unknown layer(s) {unknown}; prunable layers: {names}. Fix: use those names")
            for k, v in max_sparsity.items():
                caps[k] = min(caps.get(k, 1.0), check_sparsity(v, f"max_sparsity[{k!r}]"))
        else:
            ms = check_sparsity(max_sparsity, "max_sparsity")
            for n in names:
                caps[n] = min(caps.get(n, 1.0), ms)
    scores = None
    if allocator_needs_scores(allocation):
        scores = _resolve_scores(importance, inv, keras_model, data, dict(importance_kwargs or {}), sparsity)
    elif not isinstance(importance, str):
        scores = _resolve_scores(importance, inv, keras_model, data, {}, sparsity)
    alloc = allocate_sparsity(
        inv, sparsity, allocation=allocation, scores=None if scores is None else scores.scores,
        min_density=min_density, max_sparsity=caps or None, exclude=list(excluded) or None, **dict(allocation_kwargs or {}),
    )
    n = np.array([p.n_params for p in inv], dtype=np.int64)
    uw = np.array([unit_w[k] for k in names], dtype=np.int64)
    if g.kind == "n:m":
        removed_units = _nm_layers(names, alloc, units, unit_w, excluded, round(sparsity * n.sum()))
    else:
        max_units = np.array([int(np.floor(alloc_cap(alloc, k, caps, excluded, min_density, p.n_params) / unit_w[k] + 1e-9))
                              for k, p in zip(names, inv)], dtype=np.int64)
        real = np.array([alloc.removed[k] for k in names], dtype=np.float64)
        removed_units = round_to_units(real, uw, max_units, int(sum(alloc.removed.values())))
    targets, removed = {}, {}
    for i, k in enumerate(names):
        u = int(removed_units[i])
        if g.kind == "n:m":
            targets[k] = (g.m - g.n) / g.m if u else 0.0
            removed[k] = u * int(uw[i])
        else:
            targets[k] = u / units[k]
            removed[k] = u * int(uw[i])
    return Plan(
        requested=sparsity, granularity=g.name, targets=targets, n_params=dict(zip(names, n.tolist())), removed=removed,
        n_units=units, unit_weights=unit_w, excluded=excluded, importance=scores, allocation=alloc,
        seconds=time.perf_counter() - t0, notes=notes,
    )


def skipped_notes(inventory: Any) -> list[str]:
    """What a weight plan leaves out, said: Conv/Dense weights inside custom layers (also warned), other weighted layers it does not prune."""
    notes = []
    hidden = [s for s in inventory.skipped if s.kernels_inside]
    if hidden:
        n_hidden = sum(s.kernels_inside for s in hidden)
        total = inventory.n_params + n_hidden
        note = (f"not planned: {n_hidden} of {total} Conv/Dense weights ({n_hidden / total:.1%}) sit inside custom layers "
                f"({', '.join(s.path for s in hidden[:6])}); a total sparsity s of the planned weights is s * {inventory.n_params / total:.3f} "
                "of all of them. Fix: build those blocks from Keras layers, or put tfprune.PruneLayer around the layers inside them")
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    other = [s for s in inventory.skipped if not s.kernels_inside and s.n_params
             and ("not a prunable layer type" in s.reason or "not supported by tfprune" in s.reason)]
    if other:
        notes.append("not planned (layer types tfprune does not prune): " + ", ".join(f"{s.path} ({s.layer_type}, {s.n_params} weights)"
                                                                                     for s in other[:6]) + (" ..." if len(other) > 6 else ""))
    return notes


def alloc_cap(alloc: Allocation, name: str, caps: Mapping[str, float], excluded: Mapping[str, str], min_density: float, n: int) -> float:
    """Most weights layer ``name`` may lose under the plan's bounds."""
    if name in excluded:
        return 0.0
    cap = n - max(int(np.ceil(min_density * n - 1e-9)), 1)
    if name in caps:
        cap = min(cap, int(np.floor(caps[name] * n + 1e-9)))
    return float(cap)


def _nm_layers(names: list[str], alloc: Allocation, units: dict, unit_w: dict, excluded: dict, budget: int) -> np.ndarray:
    """N:M: whole layers are N:M or dense. Layers the allocator prunes most go first, while that brings the total closer."""
    order = sorted((k for k in names if k not in excluded), key=lambda k: -alloc.targets[k])
    chosen = np.zeros(len(names), dtype=np.int64)
    total = 0
    for k in order:
        w = units[k] * unit_w[k]
        if budget > 0 and (total == 0 or abs(budget - (total + w)) < abs(budget - total)):
            chosen[names.index(k)] = units[k]
            total += w
    return chosen
