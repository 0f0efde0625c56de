"""Channel plans: how many channels each group loses, under one total MACs (or params) target.

The entry is ``tfprune.plan(model, macs=0.5, granularity="channel")``; this module
holds the search and the cost model it uses.

Flow. Every prunable group's channels are scored (`channel_importance`:
``"l2"``/``"l1"`` over all coupled weights, ``"bn_scale"``, or with ``data``
``"taylor"`` / ``"obs"``). An **allocation** (the channel-group form of a `tfprune.allocation`
allocator, `register_group_keys`) turns the
scores into one *removal key* per channel (lower = removed first), the same
scale in every group:

* ``"uniform"``: the same fraction of every group: the channel ranked ``i``
  (ascending score, from 0) in a group of ``n`` gets the key ``(i + 1) / n``;
* ``"global"``: one threshold on the raw channel scores;
* ``"global_ratio"``: one threshold on normalised scores: ``s / max(s_group)``
  (the channel ``"global"`` of earlier versions);
* ``"lamp"``: one threshold on LAMP scores of the channel scores;
* ``"importance"`` (How Compact?, Jung, Kim & Choe 2019, **our formula** at
  channel level): the uniform key times ``w_g = (I_g / max I) ** gamma``,
  ``I_g`` the group's importance: the mean layer importance (default
  ``"capacity"`` from `tfprune.importance`; ``"capacity_activation"`` reads
  the representation and needs ``data``) of the layers that produce the
  group's channels. One threshold ``t`` on these keys removes the fraction
  ``min(t / w_g, 1)`` of group ``g`` (its ``min_channels`` always stay): the
  sparsity of a group is inversely proportional to its importance, and the
  total is met by the choice of ``t``. With equal importances this is
  ``"uniform"``. (The first formula, max-normalised score times ``w_g``,
  let importances that differ by a few percent decide which groups lost
  nearly all their channels, since max-normalised L2 scores sit in a
  narrow band: 88.6% vs 96.8% for uniform on ResNet-20 at 70% of MACs.)

Each group's ``min_channels`` best channels never go. The other channels,
sorted by key, are removed as a prefix: the plan finds the shortest prefix
whose **estimated** MACs (or params) reach the target (bisection on the
prefix length), or that prefix less one channel when that lands closer to
the target (one channel of a wide residual group can be a few percent of
the MACs). The estimate is `tfprune.profile` of the dense model with every
layer's MACs and params scaled by the fractions of its input and output
channels kept (equal to the shrunk model's profile for the layers tfprune
knows; a test checks it). The model is then shrunk (`tfprune.structured.removal`) and the
achieved total is read from `tfprune.profile` of the **shrunk model**; when
it misses the target by more than ``tolerance`` the estimate's target is
corrected and the search runs again (at most ``max_iter`` times). The plan
reports requested vs achieved. The model is only read.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from tfprune._keras import keras
from tfprune.allocation import group_keys
from tfprune.inventory.profiling import profile
from tfprune.planning.plans import Plan
from tfprune.structured.graph import DEPTHWISE, DEPTHWISE_GROUPS, PRODUCER, VALUE, ChannelGraph, TensorKey, channel_graph
from tfprune.structured.importance import channel_importance
from tfprune.validation import UnreachableTarget, check_int, check_sparsity, fraction, number

__all__ = ["group_importance", "plan_and_shrink", "removal_order", "smallest_prefix", "CostModel"]

L = keras.layers


# ------------------------------------------------------------ numpy math
def removal_order(keys: list[np.ndarray], min_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(group, channel)`` arrays of every removable channel, lowest key first.

    Each group's ``min_channels`` highest-key channels (at least one) are left out:
    they are never removed. Ties go by (group, channel) order.
    """
    groups, chans, vals = [], [], []
    for g, k in enumerate(keys):
        k = np.asarray(k, dtype=np.float64)
        n_removable = max(k.size - max(int(min_channels), 1), 0)
        order = np.argsort(k, kind="stable")[:n_removable]
        groups.append(np.full(order.size, g, np.int64))
        chans.append(order.astype(np.int64))
        vals.append(k[order])
    if not vals:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    v, g, c = np.concatenate(vals), np.concatenate(groups), np.concatenate(chans)
    order = np.lexsort((c, g, v))
    return g[order], c[order]


def smallest_prefix(cost: Callable[[int], float], n: int, target: float) -> int:
    """The smallest ``k`` in ``0..n`` with ``cost(k) <= target`` (``cost`` non-increasing in ``k``); ``n`` when none reaches it."""
    lo, hi = 0, int(n)
    if cost(hi) > target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def group_importance(producers: list[list[str]], layer_scores: Mapping[str, float]) -> np.ndarray:
    """Per group, the mean score of its producing layers found in ``layer_scores`` (by name or last ``/`` part).

    A group none of whose producers is scored gets the mean of all the groups that are.
    """
    short = {k.rsplit("/", 1)[-1]: v for k, v in layer_scores.items()}
    out = []
    for names in producers:
        vals = [layer_scores.get(n, short.get(n.rsplit("/", 1)[-1])) for n in names]
        vals = [float(v) for v in vals if v is not None]
        out.append(float(np.mean(vals)) if vals else np.nan)
    a = np.asarray(out, dtype=np.float64)
    fill = float(np.nanmean(a)) if np.isfinite(a).any() else 1.0
    return np.where(np.isfinite(a), a, fill)


# ------------------------------------------------------------ cost model
@dataclass
class LayerCost:
    name: str
    kind: str  # "bilinear" (in x out), "separable", "out" (scales with the output channels), "in"
    macs: float
    params: float  # the part that scales as ``kind`` says
    params_out: float  # bias: scales with the output channels only
    params_fixed: float
    k: float = 0.0  # separable: kernel size (depthwise MACs per input channel and position, over the pointwise's)
    n_in: int = 1
    n_out: int = 1
    key_in: TensorKey | None = None
    key_out: TensorKey | None = None


class CostModel:
    """MACs and params of the shrunk model for any set of removed channels, without building it."""

    def __init__(self, cg: ChannelGraph) -> None:
        self.cg = cg
        prof = {r.name: r for r in profile(cg.flat).layers}
        all_labels = np.unique(np.concatenate([v for v in cg.labels.values()] or [np.zeros(0, np.int64)]))
        self.all_labels = all_labels
        self.index = {k: np.searchsorted(all_labels, v) for k, v in cg.labels.items()}
        self.layers: list[LayerCost] = []
        self.fixed_params = 0.0
        for name, node in cg.nodes.items():
            layer = cg.flat.get_layer(name)
            p = prof.get(name)
            n_params = float(p.params) if p is not None else 0.0
            macs = float(p.macs) if p is not None else 0.0
            kin = node.inputs[0] if node.inputs and node.inputs[0] in cg.labels else None
            kout = node.outputs[0] if node.outputs and node.outputs[0] in cg.labels else None
            n_in = cg.labels[kin].size if kin is not None else 1
            n_out = cg.labels[kout].size if kout is not None else 1
            if node.kind == PRODUCER and not isinstance(layer, L.Embedding):
                bias = float(np.prod(layer.bias.shape)) if getattr(layer, "bias", None) is not None else 0.0
                if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
                    dw = float(np.prod(layer.depthwise_kernel.shape))
                    pw = float(np.prod(layer.pointwise_kernel.shape))
                    self.layers.append(LayerCost(name, "separable", macs, pw, bias, 0.0, float(np.prod(layer.kernel_size)), n_in, n_out, kin, kout))
                    self.layers.append(LayerCost(name, "in", 0.0, dw, 0.0, 0.0, 0.0, n_in, n_out, kin, kout))
                else:  # a grouped convolution too: its a' = a*fi inputs and b' = b*fo outputs per group give macs*fi*fo
                    self.layers.append(LayerCost(name, "bilinear", macs, n_params - bias, bias, 0.0, 0.0, n_in, n_out, kin, kout))
            elif node.kind == PRODUCER:  # Embedding: rows are indices, columns the output channels
                self.layers.append(LayerCost(name, "out", macs, n_params, 0.0, 0.0, 0.0, n_in, n_out, kin, kout))
            elif node.kind in (DEPTHWISE, DEPTHWISE_GROUPS, VALUE) and kout is not None:
                # depthwise (either form): every weight and MAC belongs to one output channel
                per_channel = n_params if node.kind in (DEPTHWISE, DEPTHWISE_GROUPS) else sum(
                    float(np.prod(w.shape)) for w in layer.weights if w.shape.rank and int(w.shape[-1]) == n_out)
                self.layers.append(LayerCost(name, "out", macs, per_channel, 0.0, n_params - per_channel, 0.0, n_in, n_out, kin, kout))
            else:
                self.fixed_params += n_params
                if macs:
                    self.layers.append(LayerCost(name, "out", macs, 0.0, 0.0, 0.0, 0.0, n_in, n_out, None, None))
        self.dense = self.estimate(np.zeros(all_labels.size, bool))

    def removed_mask(self, labels: np.ndarray) -> np.ndarray:
        m = np.zeros(self.all_labels.size, bool)
        m[np.searchsorted(self.all_labels, np.asarray(labels, dtype=np.int64))] = True
        return m

    def estimate(self, removed: np.ndarray) -> tuple[float, float]:
        """(MACs, params) with the label classes ``removed`` (bool per label) gone."""
        kept_cache: dict[TensorKey, int] = {}

        def kept(key: TensorKey | None, n: int) -> float:
            if key is None:
                return 1.0
            if key not in kept_cache:
                kept_cache[key] = int(n - removed[self.index[key]].sum())
            return kept_cache[key] / n

        macs = params = 0.0
        for c in self.layers:
            fi, fo = kept(c.key_in, c.n_in), kept(c.key_out, c.n_out)
            if c.kind == "bilinear":
                macs += c.macs * fi * fo
                params += c.params * fi * fo + c.params_out * fo + c.params_fixed
            elif c.kind == "separable":
                macs += c.macs * fi * (c.k + fo * c.n_out) / (c.k + c.n_out)
                params += c.params * fi * fo + c.params_out * fo + c.params_fixed
            elif c.kind == "in":
                params += c.params * fi + c.params_fixed
            else:
                macs += c.macs * fo
                params += c.params * fo + c.params_fixed
        return macs, params + self.fixed_params


# ------------------------------------------------------------ planning
def _check_args(macs: float | None, params: float | None, allocation: str, min_channels: int,
                latency: float | None = None) -> tuple[str, float]:
    if sum(v is not None for v in (macs, params, latency)) != 1:
        raise ValueError("give exactly one target: macs=fraction of MACs removed (e.g. 0.5), params=fraction of parameters removed, "
                         "or latency=the latency wanted as a ratio of the dense model's (e.g. 0.5: half the time)")
    if latency is not None:
        ratio = fraction(latency, "latency", unit="ratio of the dense model's latency", low=0.0, high=1.0, include_low=False,
                         include_high=True, example="0.5 asks for half the dense model's milliseconds")
        target, frac = "latency", 1.0 - ratio
    else:
        target, frac = ("macs", macs) if macs is not None else ("params", params)
        frac = check_sparsity(frac, target)
    group_keys(allocation)  # validates the name: an allocator with a channel-group form
    check_int(min_channels, "min_channels (a layer needs a channel)", 1)
    return target, float(frac)


def plan_and_shrink(
    model: Any,
    macs: float | None = None,
    params: float | None = None,
    *,
    importance: str = "l2",
    allocation: str = "uniform",
    layer_importance: str = "capacity",
    gamma: float = 1.0,
    min_channels: int = 1,
    include_outputs: bool = False,
    tolerance: float = 0.01,
    max_iter: int = 4,
    x: Any = None,
    data: Any = None,
    importance_options: Mapping[str, Any] | None = None,
    latency: float | None = None,
    latency_cost: Callable[[ChannelGraph], Any] | None = None,
) -> tuple[Plan, Any, Any]:
    """Plan channel groups under one MACs, params or latency target; ``(plan, small_model, shrink_report)``.

    The public entry is ``tfprune.plan(model, macs=..., granularity="channel")``;
    see the module docstring for the algorithm and `tfprune.plan` for the arguments.
    The achieved MACs / params are measured on the shrunk model (returned with
    its `ShrinkReport`); a ``latency`` target (ratio of the dense model's) is
    met on the prediction of ``latency_cost(channel_graph)`` (an object whose
    ``estimate(removed)`` gives milliseconds, `tfprune.latency.LatencyCost`),
    and the plan's ``requested`` / ``achieved`` are then fractions of the
    latency removed.
    """
    from tfprune.structured.removal import shrink

    t0 = time.perf_counter()
    target, frac = _check_args(macs, params, allocation, min_channels, latency)
    min_channels = check_int(min_channels, "min_channels", 1)
    gamma = number(gamma, "gamma", minimum=0.0)
    tolerance = number(tolerance, "tolerance (the accepted miss, a fraction of MACs/params)", minimum=0.0)
    max_iter = check_int(max_iter, "max_iter", 1)
    cg = channel_graph(model, include_outputs)
    groups = cg.prunable
    if not groups:
        reasons = sorted({r for reason in cg.frozen.values() for r in reason.split("; ")})
        shown = "; ".join(reasons[:4]) + (f"; ... ({len(reasons) - 4} more)" if len(reasons) > 4 else "")
        raise ValueError(f"model {model.name!r} has no channel group tfprune can remove: all {len(cg.groups)} are frozen ({shown}). "
                         "See tfprune.channel_graph(model).table() for every group and its reason. Fix: build the frozen blocks "
                         "from Keras built-in layers in a functional model, or pass include_outputs=True if only the outputs "
                         "are left")
    scores = channel_importance(model, importance, graph=cg, data=data, **dict(importance_options or {}))
    per_group = [scores.scores[g.name] for g in groups]
    if allocation == "importance":
        from tfprune.importance import needs_data, score_layers

        if needs_data(layer_importance):
            if data is None:
                raise ValueError(f"layer_importance={layer_importance!r} reads activations: pass data (x or (x, y)), or choose a "
                                 "data-free layer_importance such as 'capacity'")
            layer_scores = score_layers(cg.flat, layer_importance, data=data).scores
        else:
            layer_scores = score_layers(model, layer_importance).scores
        imps = group_importance([g.producers for g in groups], layer_scores)
    else:
        imps = np.ones(len(groups))
    keys = group_keys(allocation)(per_group, imps, gamma)
    order_g, order_c = removal_order(keys, min_channels)
    labels = np.asarray([int(groups[g].labels[c]) for g, c in zip(order_g, order_c)], dtype=np.int64)
    cost = CostModel(cg)
    pos = cost.removed_mask(labels) if labels.size else np.zeros(cost.all_labels.size, bool)
    label_index = np.searchsorted(cost.all_labels, labels)
    which = 0 if target == "macs" else 1
    dense_total = cost.dense[which]
    notes: list[str] = []
    if target == "latency":
        if latency_cost is None:
            raise ValueError("a latency target needs latency_cost (tfprune.plan builds it from a tfprune.latency.LatencyTable)")
        timing = latency_cost(cg)
        dense_total = timing.estimate(np.zeros(cost.all_labels.size, bool))
        notes.append(f"latency predicted by {getattr(timing, 'description', type(timing).__name__)}: dense {dense_total:.4f} ms")

    def estimate(k: int) -> float:
        removed = np.zeros_like(pos)
        removed[label_index[:k]] = True
        return timing.estimate(removed) if target == "latency" else cost.estimate(removed)[which]

    goal = (1.0 - frac) * dense_total
    est_goal = goal
    best = None
    for it in range(1, max(int(max_iter), 1) + 1):
        k = smallest_prefix(estimate, labels.size, est_goal)
        if k > 0 and abs(estimate(k - 1) - est_goal) < abs(estimate(k) - est_goal):
            k -= 1  # one channel short of the goal is closer than one past it
        order: dict[str, list[int]] = {}
        for g, c in zip(order_g[:k], order_c[:k]):
            order.setdefault(groups[g].name, []).append(int(c))
        remove = {n: sorted(v) for n, v in order.items()}
        small, rep = shrink(model, remove, include_outputs=include_outputs, x=x) if remove else _unchanged(model, include_outputs, x)
        if target == "latency":  # the table's prediction is the measure: nothing to correct
            achieved = 1.0 - estimate(k) / dense_total if dense_total else 0.0
            best = (order, small, rep, achieved, it)
            break
        total_before = rep.macs_before if target == "macs" else rep.params_before
        total_after = rep.macs_after if target == "macs" else rep.params_after
        achieved = 1.0 - total_after / total_before if total_before else 0.0
        best = (order, small, rep, achieved, it)
        if abs(achieved - frac) <= tolerance or k >= labels.size or abs(estimate(k) - total_after) <= 0.5:
            break  # on target, nothing left to remove, or the estimate was exact (another search finds the same k)
        est_goal += goal - total_after  # correct the estimate's target by the measured miss
    order, small, rep, achieved, iters = best
    if achieved < frac - tolerance:
        done = sum(len(v) for v in order.values())
        if done >= labels.size:  # every channel the bounds allow is gone: no plan reaches the target
            what = {"macs": "MACs", "params": "parameters"}.get(target, "latency")
            ask = f">= {1 - achieved:.3f}" if target == "latency" else f"<= {achieved:.3f}"
            asked = (1 - frac) if target == "latency" else frac
            raise UnreachableTarget(
                f"{target}={asked:g}: removing every channel the bounds allow (min_channels={min_channels}, {len(cg.frozen)} frozen "
                f"group(s), include_outputs={include_outputs}) removes only {achieved:.4f} of the {what}. "
                f"Fix: ask for {target} {ask}, lower min_channels, or unfreeze groups (tfprune.channel_graph(model).table() lists why)")
    if abs(achieved - frac) > tolerance:
        warnings.warn(f"channel plan for {model.name!r}: {target} removed {achieved:.4f}, requested {frac:g} (tolerance {tolerance:g}): "
                      "one channel step is larger than the tolerance. Fix: pass a larger tolerance=, or a target nearer a reachable value",
                      stacklevel=3)
    names = [g.name for g in groups]
    plan = Plan(
        requested=frac, granularity="channel", targets={g.name: len(order.get(g.name, [])) / g.channels for g in groups},
        n_units={**{g.name: g.channels for g in groups}, **{g.name: g.channels for g in cg.groups if not g.prunable}},
        unit_weights={}, excluded=dict(cg.frozen), seconds=time.perf_counter() - t0, budget=target, allocator_name=allocation,
        channels={n: order.get(n, []) for n in names}, group_importance={n: float(i) for n, i in zip(names, imps)},
        measured=float(achieved), macs_before=rep.macs_before, macs_after=rep.macs_after, params_before=rep.params_before,
        params_after=rep.params_after, importance_name=importance, layer_importance=layer_importance if allocation == "importance" else "",
        tolerance=float(tolerance), iterations=iters, notes=list(scores.notes) + notes, model_name=model.name,
    )
    return plan, small, rep


def _unchanged(model: Any, include_outputs: bool, x: Any) -> tuple[Any, Any]:
    from tfprune.structured.removal import shrink

    return shrink(model, {}, include_outputs=include_outputs, x=x)
