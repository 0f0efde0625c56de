"""`ChannelPruning`: mask coupled channel groups gradually during ``model.fit``, then remove them with `shrink`.

``callbacks=[tfprune.ChannelPruning(macs=0.5)]`` plans at the first pruning
step (`plan_channels`: how many channels each dependency group of
`channel_graph` loses under one MACs/params target) and then masks whole
**groups** along a polynomial ramp, like the weight schedule
(`tfprune.schedule.polynomial_sparsity`, power 3: fast early, slow late). At
step ``t`` group ``g`` has ``round(N_g * r(t))`` channels masked, ``N_g`` its
planned count and ``r`` the ramp from 0 at ``begin_step`` to 1 at
``end_step``. Which channels: the lowest-scoring ones by group-level channel
importance (`channel_importance`, ``"l2"`` over every coupled weight),
measured again on the current weights at every pruning step.

What a masked channel is. One keep-vector per group, shared by all the
group's layers, zeroes in the user's model:

* every producer's output filter and bias (Conv, Dense, ConvTranspose,
  SeparableConv's pointwise filter);
* every depthwise filter and bias of the channel;
* every BatchNormalization's ``gamma``, ``beta`` **and moving mean**: with
  ``gamma = beta = 0`` the BN outputs exactly 0 for the channel in training
  and inference (the BN shift ``beta - gamma * mean / sqrt(var + eps)`` is 0),
  and the zero moving mean makes a BN without ``gamma`` (``scale=False``)
  output 0 too. A producer whose activation maps 0 to 0 (linear, ReLU,
  swish, tanh...) then carries an exact 0 to the layers that read the
  channel.

The consumers' input rows (the next conv's kernel rows) are **not** zeroed:
they multiply an exact 0. A channel that would still reach a consumer as a
value `shrink` cannot remove exactly (say ``sigmoid(0) = 0.5`` into a 3x3
``"same"`` convolution) is never masked (listed in ``unremovable_``). This is
the masking ``shrink(model, remove=...)`` applies, so at the end
``callback.shrink()`` (or `tfprune.shrink(model)` reading the zeros) removes
**every** masked channel of every group and checks the smaller model
computes what the masked model computes.

In place. Like ``fit`` itself, the callback changes the model it trains: it
writes zeros into the model's own variables (a plain Keras model, no
wrappers). Masks are applied at the start of training, after every
optimizer step (``on_train_batch_end``: an optimizer with momentum cannot
revive a masked weight) and at the end. Nothing else of the model changes;
`callback.shrink` returns a new model and leaves the trained one as it is.

Steps. The step is ``model.optimizer.iterations`` (optimizer steps done), so
a model saved with its optimizer resumes its ramp. The masks live in the
weights: at the start of ``fit`` a channel whose filters are zero in every
producer of its group counts as masked and stays masked (a model without
such zeros starts from no mask). To resume with the same per-group counts,
pass ``plan=previous_callback.counts_`` (or the `ChannelPlan`); otherwise the
plan is made again on the partly masked model at the first pruning step (the
same target; the masked channels, scoring lowest, are planned first; a group
never unmasks, so it keeps ``max(planned, masked)`` channels masked).
With ``steps_per_execution > 1`` masks are re-applied only between
executions (a warning says so).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from tfprune._keras import keras
from tfprune.report import Report, Table
from tfprune.schedule import _check_int, polynomial_sparsity
from tfprune.structured.graph import DEPTHWISE, PRODUCER, VALUE, ChannelGraph, channel_graph
from tfprune.structured.importance import channel_importance, channel_importance_needs_data, list_channel_importance
from tfprune.structured.plan import ALLOCATIONS, ChannelPlan, plan_channels

__all__ = ["ChannelPruning", "GradualStatus", "channels_at", "choose_channels", "prune_channels_gradually"]

L = keras.layers


# ------------------------------------------------------------ numpy rules
def channels_at(final: np.ndarray, fraction: float) -> np.ndarray:
    """Channels masked per group at ramp value ``fraction`` (0..1): ``round(final * fraction)``, half up, at most ``final``."""
    n = np.asarray(final, dtype=np.int64)
    f = min(max(float(fraction), 0.0), 1.0)
    return np.minimum(np.floor(n * f + 0.5).astype(np.int64), n)


def choose_channels(scores: np.ndarray, n: int, masked: np.ndarray, allowed: np.ndarray, revive: bool = False) -> np.ndarray:
    """Sorted channel indices to mask in one group: ``n`` of them (more when ``masked`` holds more and ``revive`` is off).

    Args:
      scores: one importance per channel (higher = keep), shape (C,).
      n: how many channels the group should have masked now.
      masked: bool (C,), the channels masked so far.
      allowed: bool (C,), the channels that may be masked at all.
      revive: False (default): masked channels stay masked and the lowest
        scoring unmasked allowed channels are added until ``n``; True: the
        ``n`` lowest scoring allowed channels, whatever was masked before
        (a channel may come back, from zero weights).
    """
    s = np.asarray(scores, dtype=np.float64)
    masked = np.asarray(masked, dtype=bool) & np.asarray(allowed, dtype=bool)
    allowed = np.asarray(allowed, dtype=bool)
    n = int(n)
    if n > int(allowed.sum()):
        raise ValueError(f"cannot mask {n} channels: only {int(allowed.sum())} of {s.size} may be masked")
    if revive:
        pool = np.flatnonzero(allowed)
        return np.sort(pool[np.argsort(s[pool], kind="stable")[:n]])
    have = np.flatnonzero(masked)
    if have.size >= n:
        return have
    pool = np.flatnonzero(allowed & ~masked)
    add = pool[np.argsort(s[pool], kind="stable")[: n - have.size]]
    return np.sort(np.concatenate([have, add]))


# ------------------------------------------------------------ the report
@dataclass
class GradualStatus(Report):
    """Where a `ChannelPruning` run stands: per group planned and masked channels, the ramp, the estimated MACs removed.

    Attributes:
      step: the optimizer step of the last mask update (-1: none yet).
      begin_step, end_step, frequency: the ramp (optimizer steps).
      fraction: ramp value at ``step`` (0..1 of the planned channels).
      groups: rows ``(group, channels, planned, masked)``.
      macs_masked, params_masked: fraction of the model's MACs / params the
        masked channels account for (estimate of what `shrink` removes; the
        plan's achieved value once the ramp is done).
      plan: the `ChannelPlan` when the callback made one.
      unremovable: ``"group[channel]"`` -> why it is never masked.
    """

    model_name: str
    step: int
    begin_step: int
    end_step: int
    frequency: int
    fraction: float
    groups: list[tuple[str, int, int, int]] = field(default_factory=list)
    macs_masked: float = 0.0
    params_masked: float = 0.0
    plan: ChannelPlan | None = None
    unremovable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return all(m >= p for _, _, p, m in self.groups)

    def _blocks(self) -> list[str | Table]:
        planned = sum(p for _, _, p, _ in self.groups)
        masked = sum(m for _, _, _, m in self.groups)
        out: list[str | Table] = [
            f"gradual channel pruning of {self.model_name!r}: step {self.step}, ramp {self.begin_step} -> {self.end_step} every "
            f"{self.frequency} steps at {self.fraction:.3f}; {masked} of {planned} planned channels masked "
            f"(~{self.macs_masked:.1%} of MACs, {self.params_masked:.1%} of params)" + ("" if self.done else "; ramp not finished"),
            Table(["group", "channels", "planned", "masked"], [list(r) for r in self.groups if r[2] or r[3]], "lrrr"),
        ]
        if self.unremovable:
            out.append(f"{len(self.unremovable)} channels never masked (shrink could not remove them exactly): "
                       + "; ".join(f"{k}: {v}" for k, v in list(self.unremovable.items())[:5]))
        return out


# ------------------------------------------------------------ the masks
@dataclass
class _Target:
    """One variable of the user's model, with the channel id class of each entry along its masked axis (shaped to broadcast)."""

    var: Any
    labels: np.ndarray
    axis: int  # the channel axis of ``var``
    producer: bool  # a producer's kernel: its zeros tell which channels are masked
    mask: Any = None  # tf.Variable of labels' shape, 1 = keep


def _targets(cg: ChannelGraph, prunable_labels: np.ndarray) -> list[_Target]:
    """The variables of the user's model that masking a channel zeroes (see the module docstring)."""
    from tfprune.structured.shrink import _consumer_kind, _kernel_attr

    out: list[_Target] = []
    for name, node in cg.nodes.items():
        if not node.outputs or node.kind not in (PRODUCER, DEPTHWISE, VALUE):
            continue
        lab = cg.labels[node.outputs[0]]
        if not np.isin(lab, prunable_labels).any():
            continue
        src = cg.graph.sources.get(name)
        if src is None:
            continue

        def add(var: Any, axis: int, labels: np.ndarray, producer: bool = False) -> None:
            shape = [1] * var.shape.rank
            shape[axis] = labels.size
            out.append(_Target(var, labels.reshape(shape), axis, producer))

        if node.kind == PRODUCER:
            ck = _consumer_kind(src)
            var = getattr(src, _kernel_attr(ck))
            axis = {"transpose": var.shape.rank - 2, "embedding": 1}.get(ck, var.shape.rank - 1)
            add(var, axis, lab, producer=True)
            if getattr(src, "bias", None) is not None:
                add(src.bias, 0, lab)
        elif node.kind == DEPTHWISE:
            var = src.depthwise_kernel
            shape = [1] * (var.shape.rank - 2) + [int(var.shape[-2]), int(var.shape[-1])]
            out.append(_Target(var, lab.reshape(shape), var.shape.rank - 2, False))
            if getattr(src, "bias", None) is not None:
                add(src.bias, 0, lab)
        elif isinstance(src, L.BatchNormalization):
            for attr in ("gamma", "beta", "moving_mean"):
                var = getattr(src, attr, None)
                if var is not None:
                    add(var, 0, lab)
    return out


def _refresh(cg: ChannelGraph) -> None:
    """Copy the user's current weights into the graph's flat copy (which the scorers and checks read)."""
    for name, src in cg.graph.sources.items():
        if src.weights:
            cg.flat.get_layer(name).set_weights(src.get_weights())


def _unremovable(cg: ChannelGraph, groups: list[Any]) -> dict[int, str]:
    """label -> why `shrink` could not remove it even when masked in its whole group (uses and restores ``cg.flat``).

    Each channel's value is followed on its own label, so all channels are
    tested at once, except that a group must keep one channel (masking all of
    a consumer's filters would zero its input rows and hide the problem):
    one pass keeps every group's last channel, a second its first.
    """
    from tfprune.structured.shrink import _check_consumers, _propagate, _zero_labels

    bad: dict[int, str] = {}
    for keep in (-1, 0):
        labels = [int(lb) for g in groups for lb in np.delete(g.labels, keep)]
        _zero_labels(cg, labels)
        try:
            found, _ = _check_consumers(cg, _propagate(cg), set(labels))
        finally:
            _refresh(cg)
        for lb, why in found.items():
            bad.setdefault(int(lb), why)
    return bad


def _slices_zero(values: np.ndarray, axis: int) -> np.ndarray:
    """Per index of ``axis`` of ``values``: True when that slice is all zero."""
    moved = np.moveaxis(np.asarray(values), axis, 0)
    return ~np.any(moved.reshape(moved.shape[0], -1) != 0, axis=1)


# ------------------------------------------------------------ the callback
class ChannelPruning(keras.callbacks.Callback):
    """Mask coupled channel groups gradually during ``fit``; `shrink` removes them afterwards.

    Args:
      macs: fraction of the model's MACs to remove at the end of the ramp
        (e.g. ``0.5``); or
      params: fraction of its parameters to remove; or
      plan: the per-group counts: a `ChannelPlan` (from `plan_channels`) or
        ``{group name: channels removed}`` (e.g. an earlier run's ``counts_``);
        only the counts are used (which channels is decided during training).
        Give exactly one of ``macs``, ``params``, ``plan``.
      importance: channel scorer within a group (`list_channel_importance`),
        used by the plan and at every pruning step.
      data: calibration data for a data scorer (``"taylor"``: ``(x, y)``;
        ``"obs"``: ``x``), read again at every mask update.
      allocation, layer_importance, gamma, min_channels, include_outputs,
      tolerance: the plan's (see `plan_channels`); ``min_channels``: channels
        every group keeps at least.
      begin_step: optimizer step at which the ramp starts (and the plan is made,
        on the weights trained so far).
      end_step: optimizer step at which every group reaches its planned count.
        None: after ``ramp_fraction`` of this ``fit``'s steps from
        ``max(begin_step, current step)`` (needs a known number of steps per epoch).
      frequency: optimizer steps between mask updates; None: ramp length / 20 (>= 1).
        Masks are also updated at ``end_step`` exactly.
      power: exponent of the polynomial ramp.
      ramp_fraction: share of this fit's steps for the ramp when ``end_step`` is None, in (0, 1].
      revive: False (default): a masked channel stays masked; True: each
        update masks the lowest-scoring channels afresh (a channel may come
        back, from zero weights).
      importance_kwargs: options of the channel scorer (`channel_importance`'s ``**options``; the plan's ``importance_options``).
      verbose: 1 prints the plan and each mask update.

    Attributes (after the first pruning step):
      plan_: the `ChannelPlan` (None when ``plan`` was a dict).
      counts_: ``{group: channels removed at the end of the ramp}``.
      masked_: ``{group: sorted masked channel indices}``.
      remove: the same, for ``shrink(model, remove=...)``.
      unremovable_: ``"group[channel]"`` -> why that channel is never masked.
      begin_step_, end_step_, frequency_: the ramp in use.
      history_: one dict per mask update (step, fraction, channels masked, MACs masked).
    """

    def __init__(
        self,
        macs: float | None = None,
        params: float | None = None,
        *,
        plan: ChannelPlan | Mapping[str, int] | None = None,
        importance: str = "l2",
        data: Any = None,
        allocation: str = "uniform",
        layer_importance: str = "capacity",
        gamma: float = 1.0,
        min_channels: int = 1,
        include_outputs: bool = False,
        tolerance: float = 0.01,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int | None = None,
        power: float = 3.0,
        ramp_fraction: float = 0.7,
        revive: bool = False,
        importance_kwargs: Mapping[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        given = [k for k, v in (("macs", macs), ("params", params), ("plan", plan)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of macs= (fraction of MACs removed, e.g. 0.5), params= or plan=; got {given or 'none'}")
        for name, v in (("macs", macs), ("params", params)):
            if v is not None and not (isinstance(v, (int, float, np.floating, np.integer)) and 0.0 <= float(v) < 1.0):
                raise ValueError(f"{name}= is the fraction removed, in [0, 1); got {v!r}")
        if plan is not None and not isinstance(plan, (ChannelPlan, Mapping)):
            raise TypeError(f"plan must be a ChannelPlan (tfprune.plan_channels) or {{group: channels removed}}, got {type(plan).__name__}")
        if importance not in list_channel_importance():
            raise ValueError(f"unknown channel importance {importance!r}; available: {list_channel_importance()}")
        if data is None and channel_importance_needs_data(importance):
            raise ValueError(f"importance={importance!r} needs calibration data. Fix: pass data=(x, y) (a few hundred examples)")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {allocation!r}; choose one of {ALLOCATIONS}")
        self.macs = None if macs is None else float(macs)
        self.params_target = None if params is None else float(params)
        self.plan = plan
        self.importance = importance
        self.data = data
        self.allocation = allocation
        self.layer_importance = layer_importance
        self.gamma = float(gamma)
        self.min_channels = _check_int(min_channels, "min_channels", 1)
        self.include_outputs = bool(include_outputs)
        self.tolerance = float(tolerance)
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        self.end_step = None if end_step is None else _check_int(end_step, "end_step", 0)
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")
        self.frequency = None if frequency is None else _check_int(frequency, "frequency", 1)
        if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
            raise ValueError(f"power must be a positive number (3 = fast early, slow late), got {power!r}")
        self.power = float(power)
        if not 0.0 < float(ramp_fraction) <= 1.0:
            raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction!r}")
        self.ramp_fraction = float(ramp_fraction)
        self.revive = bool(revive)
        self.importance_kwargs = dict(importance_kwargs or {})
        self.verbose = int(verbose)
        self._model_id: int | None = None
        self.plan_: ChannelPlan | None = None
        self.counts_: dict[str, int] = {}
        self.masked_: dict[str, list[int]] = {}
        self.unremovable_: dict[str, str] = {}
        self.history_: list[dict[str, Any]] = []
        self.begin_step_ = self.end_step_ = self.frequency_ = None
        self._last_update: int | None = None
        self._fraction = 0.0

    # -------------------------------------------------------- setup
    def _setup(self, model: Any) -> None:
        from tfprune.structured.plan import _CostModel
        from tfprune.wrap import is_wrapped

        if is_wrapped(model):
            raise ValueError("ChannelPruning masks a plain Keras model's own variables; this model has pruning wrappers. "
                             "Fix: train the unwrapped model (tfprune.strip(model)) with ChannelPruning")
        t0 = time.perf_counter()
        cg = channel_graph(model, self.include_outputs)
        self._cg = cg
        self._groups = cg.prunable
        self._where = {int(lb): (gi, j) for gi, g in enumerate(self._groups) for j, lb in enumerate(g.labels)}
        labels = np.asarray(sorted(self._where), dtype=np.int64)
        self._all_labels = labels
        self._targets = _targets(cg, labels)
        for t in self._targets:
            t.mask = tf.Variable(np.ones(t.labels.shape, t.var.dtype.as_numpy_dtype), trainable=False, name="channel_mask")
        pairs = [(t.var, t.mask) for t in self._targets]

        @tf.function(autograph=False)
        def apply() -> None:
            for var, mask in pairs:
                var.assign(tf.where(mask > 0, var, tf.zeros_like(var)))

        self._apply_fn = apply
        bad = _unremovable(cg, self._groups) if labels.size else {}
        self._allowed = [np.ones(g.channels, bool) for g in self._groups]
        self.unremovable_ = {}
        for lb, why in bad.items():
            if int(lb) in self._where:
                gi, j = self._where[int(lb)]
                self._allowed[gi][j] = False
                self.unremovable_[f"{self._groups[gi].name}[{j}]"] = why
        self._cost = _CostModel(cg)
        self.plan_, self.counts_, self.history_ = None, {}, []
        self.begin_step_ = self.end_step_ = self.frequency_ = None
        self._last_update, self._fraction = None, 0.0
        if hasattr(self, "_final"):
            del self._final
        self._masked = self._read_masks()
        self._write_masks()
        self._model_id = id(model)
        self._setup_seconds = time.perf_counter() - t0

    def _read_masks(self) -> list[np.ndarray]:
        """Per group, bool per channel: masked when its filter is zero in every producer of the group (the state kept in the weights)."""
        n_prod = np.zeros(self._all_labels.size, np.int64)
        n_zero = np.zeros(self._all_labels.size, np.int64)
        for t in self._targets:
            if not t.producer:
                continue
            lab = t.labels.reshape(-1)
            inside = np.isin(lab, self._all_labels)
            idx = np.searchsorted(self._all_labels, lab[inside])
            np.add.at(n_prod, idx, 1)
            np.add.at(n_zero, idx, _slices_zero(t.var.numpy(), t.axis)[inside].astype(np.int64))
        masked = (n_prod > 0) & (n_zero == n_prod)
        out = [np.zeros(g.channels, bool) for g in self._groups]
        for lb in self._all_labels[masked]:
            gi, j = self._where[int(lb)]
            out[gi][j] = self._allowed[gi][j]
        for m in out:  # a group keeps at least one channel
            if m.size and m.all():
                m[-1] = False
        return out

    def _masked_labels(self) -> np.ndarray:
        labs = [g.labels[m] for g, m in zip(self._groups, self._masked)]
        return np.concatenate(labs) if labs else np.zeros(0, np.int64)

    def _write_masks(self) -> None:
        masked = self._masked_labels()
        for t in self._targets:
            t.mask.assign((~np.isin(t.labels, masked)).astype(t.mask.dtype.as_numpy_dtype))
        self.masked_ = {g.name: np.flatnonzero(m).tolist() for g, m in zip(self._groups, self._masked) if m.any()}

    def apply_masks(self) -> None:
        """Zero the masked channels' weights in the model (done after every optimizer step during ``fit``)."""
        if self._model_id is not None:
            self._apply_fn()

    # -------------------------------------------------------- the plan
    def _resolve_counts(self) -> None:
        plan = self.plan
        if plan is None:
            plan = plan_channels(self.model, self.macs, self.params_target, importance=self.importance, allocation=self.allocation,
                                 layer_importance=self.layer_importance, gamma=self.gamma, min_channels=self.min_channels,
                                 include_outputs=self.include_outputs, tolerance=self.tolerance, data=self.data,
                                 importance_options=self.importance_kwargs)
        if isinstance(plan, ChannelPlan):
            self.plan_ = plan
            counts = {g.group: int(g.removed) for g in plan.groups}
        else:
            counts = {}
            for key, n in plan.items():
                g = self._cg.group(key)
                if not g.prunable:
                    raise ValueError(f"plan names group {g.name!r}, which cannot be pruned: {self._cg.frozen[g.name]}")
                counts[g.name] = _check_int(n, f"plan[{key!r}]", 0)
        names = {g.name: i for i, g in enumerate(self._groups)}
        final = np.zeros(len(self._groups), np.int64)
        for name, n in counts.items():
            if name not in names:
                raise ValueError(f"plan names group {name!r}, which is not a prunable group of {self.model.name!r}: the plan was made for "
                                 f"another model. Groups: {list(names)[:20]}")
            gi = names[name]
            g = self._groups[gi]
            limit = min(g.channels - self.min_channels, int(self._allowed[gi].sum()))
            if n > max(limit, 0):
                raise ValueError(f"plan removes {n} of the {g.channels} channels of group {name!r}, but at most {max(limit, 0)} can go "
                                 f"(min_channels={self.min_channels}; {int((~self._allowed[gi]).sum())} cannot be removed exactly)")
            final[gi] = n
        self._final = final
        self.counts_ = {g.name: int(n) for g, n in zip(self._groups, final) if n}
        if self.verbose and self.plan_ is not None:
            print(self.plan_.table())

    def _ramp(self, step: int) -> None:
        begin = max(self.begin_step, step) if self.end_step is None else self.begin_step
        if self.end_step is not None:
            end = self.end_step
        else:
            params = self.params or {}
            steps, epochs = params.get("steps"), params.get("epochs")
            if not steps or not epochs:
                raise ValueError("ChannelPruning(end_step=None) needs the number of steps per epoch, which this dataset does not tell. "
                                 "Fix: pass end_step=..., or steps_per_epoch=... to fit.")
            remaining = int(steps) * max(int(epochs) - int(getattr(self, "_initial_epoch", 0)), 1) - max(begin - step, 0)
            end = begin + max(1, int(round(self.ramp_fraction * max(remaining, 1))))
        self.begin_step_, self.end_step_ = begin, end
        self.frequency_ = self.frequency or max(1, (end - begin) // 20)

    # -------------------------------------------------------- updates
    def _step(self) -> int:
        opt = getattr(self.model, "optimizer", None)
        if opt is None or not hasattr(opt, "iterations"):
            raise ValueError("ChannelPruning counts optimizer steps: compile the model with an optimizer before fit")
        return int(opt.iterations.numpy())

    def _update(self, step: int, fraction: float) -> None:
        target = channels_at(self._final, fraction)
        need = [gi for gi, (m, n) in enumerate(zip(self._masked, target)) if (self.revive and n) or int(m.sum()) < n]
        if need:
            _refresh(self._cg)
            scores = channel_importance(self._cg.flat, self.importance, graph=self._cg, data=self.data, **self.importance_kwargs).scores
            for gi in need:
                g = self._groups[gi]
                chosen = choose_channels(scores[g.name], int(target[gi]), self._masked[gi], self._allowed[gi], self.revive)
                m = np.zeros(g.channels, bool)
                m[chosen] = True
                self._masked[gi] = m
            self._write_masks()
        self.apply_masks()
        self._fraction = float(fraction)
        self._last_update = step
        macs, params = self._estimate()
        self.history_.append({"step": step, "fraction": float(fraction), "channels_masked": int(sum(m.sum() for m in self._masked)),
                              "macs_masked": macs, "params_masked": params})
        if self.verbose:
            print(f"ChannelPruning step {step}: ramp {fraction:.3f}, {self.history_[-1]['channels_masked']} channels masked "
                  f"(~{macs:.1%} of MACs)")

    def _estimate(self) -> tuple[float, float]:
        labels = self._masked_labels()
        removed = self._cost.removed_mask(labels) if labels.size else np.zeros(self._cost.all_labels.size, bool)
        macs, params = self._cost.estimate(removed)
        dm, dp = self._cost.dense
        return (1.0 - macs / dm if dm else 0.0), (1.0 - params / dp if dp else 0.0)

    def _maybe_update(self) -> None:
        step = self._step()
        if self.begin_step_ is None:
            self._ramp(step)
        begin, end, freq = self.begin_step_, self.end_step_, self.frequency_
        if step < begin:
            return
        if not hasattr(self, "_final"):
            self._resolve_counts()
        final_done = self._last_update is not None and self._last_update >= end
        due = self._last_update is None or (step - begin) % freq == 0 or (step >= end and not final_done)
        if due and not (final_done and step > end):
            self._update(step, polynomial_sparsity(step, 0.0, 1.0, begin, end, self.power))

    def finish(self) -> None:
        """Mask every group to its planned count now (the end of the ramp, in one step); needs the plan made."""
        if not hasattr(self, "_final"):
            if self.model is None:
                raise ValueError("finish() needs the model: call it after fit (or set_model(model) first)")
            if self._model_id != id(self.model):
                self._setup(self.model)
            self._resolve_counts()
        step = self._step() if getattr(self.model, "optimizer", None) is not None else -1
        self._update(step, 1.0)

    # -------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._model_id != id(self.model):
            self._setup(self.model)
        spe = getattr(self.model, "_steps_per_execution", None)
        if spe is not None and int(spe.numpy()) > 1:
            warnings.warn(f"steps_per_execution={int(spe.numpy())}: ChannelPruning re-applies its masks between executions only, so "
                          "masked weights move inside one. Fix: compile with steps_per_execution=1", stacklevel=2)
        self.apply_masks()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not hasattr(self, "_initial_epoch"):
            self._initial_epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._maybe_update()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.apply_masks()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self._model_id is not None:
            total = sum(g.channels for g in self._groups)
            logs["channels_masked"] = float(sum(m.sum() for m in self._masked)) / max(total, 1)
            logs["macs_masked"] = self._estimate()[0]

    def on_train_end(self, logs: dict | None = None) -> None:
        self.apply_masks()
        if hasattr(self, "_initial_epoch"):
            del self._initial_epoch
        if hasattr(self, "_final") and any(int(m.sum()) < n for m, n in zip(self._masked, self._final)):
            warnings.warn(f"ChannelPruning: the ramp ends at step {self.end_step_}, training stopped at step {self._step()}: "
                          f"{sum(int(m.sum()) for m in self._masked)} of {int(self._final.sum())} planned channels are masked. "
                          "Fix: fit longer, or call callback.finish() to mask the rest now", stacklevel=2)

    # -------------------------------------------------------- results
    @property
    def remove(self) -> dict[str, list[int]]:
        """``{group name: masked channel indices}``: what ``shrink(model, remove=...)`` removes."""
        return {k: list(v) for k, v in self.masked_.items()}

    def status(self) -> GradualStatus:
        """A `GradualStatus` (``print`` it): per group planned and masked channels, the ramp, MACs masked."""
        if self._model_id is None:
            raise ValueError("ChannelPruning has not seen a model yet: pass it to model.fit(callbacks=[...]) first")
        macs, params = self._estimate()
        final = getattr(self, "_final", np.zeros(len(self._groups), np.int64))
        rows = [(g.name, g.channels, int(n), int(m.sum())) for g, n, m in zip(self._groups, final, self._masked)]
        return GradualStatus(self.model.name, -1 if self._last_update is None else int(self._last_update), int(self.begin_step_ or 0),
                             int(self.end_step_ or 0), int(self.frequency_ or 0), self._fraction, rows, macs, params, self.plan_,
                             dict(self.unremovable_), float(getattr(self, "_setup_seconds", 0.0)))

    def shrink(self, model: Any = None, *, x: Any = None, atol: float = 1e-4) -> tuple[Any, Any]:
        """``shrink(model, remove=self.remove)``: a new, physically smaller model without the masked channels (checked exact).

        ``model``: default the model trained with this callback (not modified).
        Returns ``(small_model, ShrinkReport)``.
        """
        from tfprune.structured.shrink import shrink

        model = self.model if model is None else model
        if model is None:
            raise ValueError("no model: pass the trained model, or call this after fit")
        return shrink(model, remove=self.remove, include_outputs=self.include_outputs, x=x, atol=atol)


# ------------------------------------------------------------ the gradual path
def prune_channels_gradually(
    model: Any,
    macs: float | None = 0.5,
    params: float | None = None,
    *,
    data: Any,
    epochs: int,
    eval_data: Any = None,
    finetune_epochs: int = 0,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    loss: Any = None,
    importance: str = "l2",
    allocation: str = "uniform",
    layer_importance: str = "capacity",
    min_channels: int = 1,
    include_outputs: bool = False,
    tolerance: float = 0.01,
    ramp_fraction: float = 0.7,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[Any, Any]:
    """The gradual structured path: train a copy of ``model`` with `ChannelPruning`, shrink it, optionally fine-tune the small model.

    Args:
      model: a trained tf-keras model (not modified: a copy is trained).
      macs, params: the target, fraction of MACs (default 0.5) or of
        parameters removed (pass ``macs=None, params=f``).
      data: labelled training data (anything `tfprune.data` reads).
      epochs: epochs of ``fit`` with the callback; the ramp takes
        ``ramp_fraction`` of them, the rest trains with the final masks.
      eval_data: labelled data for the accuracies (default ``data``).
      finetune_epochs: further epochs on the shrunk model (0: none).
      batch_size, learning_rate: both trainings (Adam, cosine decay to 0).
      loss: default: the model's compiled loss, else `tfprune.finetune.model_loss`'s.
      importance, allocation, layer_importance, min_channels, include_outputs,
      tolerance: see `plan_channels`.

    Returns ``(small_model, PruneChannelsReport)``: ``acc_shrunk`` is the
    accuracy after the gradual training (the shrunk model computes what the
    masked model computes), ``acc_after`` after fine-tuning.
    """
    from tfprune import data as _data
    from tfprune._keras import check_model
    from tfprune.finetune import model_loss
    from tfprune.models import adam
    from tfprune.structured.prune import PruneChannelsReport, top1_accuracy
    from tfprune.wrap import clone

    t0 = time.perf_counter()
    check_model(model)
    if macs is not None and params is not None:
        raise ValueError("give one target: macs= or params= (pass macs=None with params=)")
    epochs = _check_int(epochs, "epochs", 1)
    train = _data.take(data, None, need_labels="gradual channel pruning")
    evals = eval_data if eval_data is not None else data
    ev = _data.take(evals, None, need_labels=False)
    source = ("eval_data" if eval_data is not None else "data") if ev.y is not None else ""
    spec = model_loss(model, loss)

    def acc(m: Any) -> float | None:
        return top1_accuracy(ev.y, np.asarray(m.predict(ev.x, batch_size=batch_size, verbose=0))) if source else None

    acc_before = acc(model)
    tf.keras.utils.set_random_seed(int(seed))
    work = clone(model)
    per_epoch = -(-train.n // int(batch_size))
    work.compile(optimizer=adam(learning_rate, decay_steps=epochs * per_epoch), loss=spec.loss, loss_weights=spec.loss_weights)
    calib = None
    if channel_importance_needs_data(importance):
        n = min(train.n, 512)
        calib = (train.x[:n], train.y[:n]) if not isinstance(train.x, (dict, list, tuple)) else (tf.nest.map_structure(lambda a: a[:n], train.x),
                                                                                                 train.y[:n])
    cb = ChannelPruning(macs, params, importance=importance, data=calib, allocation=allocation, layer_importance=layer_importance,
                        min_channels=min_channels, include_outputs=include_outputs, tolerance=tolerance, ramp_fraction=ramp_fraction)
    work.fit(train.x, train.y, epochs=epochs, batch_size=int(batch_size), shuffle=True, verbose=verbose, callbacks=[cb])
    x_check = None if isinstance(train.x, (dict, list, tuple)) else np.asarray(train.x[:8])
    small, rep = cb.shrink(work, x=x_check)
    acc_shrunk = acc(small)
    small.compile(optimizer=adam(learning_rate, decay_steps=max(1, finetune_epochs * per_epoch)), loss=spec.loss,
                  loss_weights=spec.loss_weights)
    ft_seconds, acc_after = 0.0, None
    if finetune_epochs:
        t1 = time.perf_counter()
        small.fit(train.x, train.y, epochs=int(finetune_epochs), batch_size=int(batch_size), shuffle=True, verbose=verbose)
        ft_seconds = time.perf_counter() - t1
        acc_after = acc(small)
    notes = [f"gradual: {epochs} epochs with ChannelPruning (ramp over optimizer steps {cb.begin_step_} -> {cb.end_step_}, "
             f"masks updated every {cb.frequency_}), then shrink"]
    if (rep.macs_after, rep.params_after) != (cb.plan_.macs_after, cb.plan_.params_after):
        notes.append(f"the shrunk model has {rep.macs_after} MACs / {rep.params_after} params, the plan {cb.plan_.macs_after} / "
                     f"{cb.plan_.params_after} (channels already zero in the input model stayed masked)")
    report = PruneChannelsReport(cb.plan_, rep.max_abs_diff, int(finetune_epochs), ft_seconds, acc_before, acc_shrunk, acc_after,
                                 source, spec.source, time.perf_counter() - t0, notes)
    return small, report
