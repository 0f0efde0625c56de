"""`Pruning`: the one callback that prunes a wrapped model during ``fit``, for every granularity.

Flow: ``tfprune.wrap(model)`` -> compile -> ``fit(..., callbacks=[cb := tfprune.Pruning(0.9)])``
-> ``cb.finalize()`` -> ``tfprune.export_tflite``. Channels:
``tfprune.wrap(model, granularity="channel")`` and ``tfprune.Pruning(macs=0.5)``;
``finalize()`` then returns the physically smaller model.

At the first training batch the callback makes a `tfprune.plan` (importance
-> allocation -> per-layer targets in whole units of the granularity) and
writes it into every wrapper: the target, the ramp and the mask rule. From
then on the masks are computed **inside the train step** by the wrappers
(`tfprune.masks.wrapper.PruneLayer`), so ``steps_per_execution > 1`` works and the
callback does nothing per batch. It replaces tfmot's ``UpdatePruningStep``
(step initialisation, masks applied at epoch end).

Resume is exact: the targets, the ramp, the rule and the plan's total are
weights of the wrappers, so ``model.save``, ``save_weights``,
``ModelCheckpoint(save_weights_only=True)`` and ``BackupAndRestore`` restore
them. A model that is mid-ramp is never planned again (its pruned weights are
never re-scored): the callback continues the saved ramp. A ``fit`` after the
ramp has ended either keeps the masks (same request) or re-plans to the new
request with a new ramp that starts from the current sparsity.

Channel groups follow the same path: the plan (`tfprune.plan` with
``granularity="channel"``) gives each coupled group its channels in removal
order; the callback writes each channel's rank and its group's count, with
the ramp, into the `tfprune.masks.channel_mask.ChannelMask` wrappers, which mask
the channels inside the train step (same step counter, same ramp). Resume,
``steps_per_execution`` and distribution behave as for weights.

Logs (History, CSVLogger, TensorBoard): ``sparsity`` (total over the wrapped
kernels) and ``sparsity/<layer>`` at every epoch end (channels:
``channels_masked`` and ``macs_masked``, fractions of the prunable channels
and of the model's MACs). Put this callback
**before** CSVLogger and TensorBoard in the list (Keras calls them in order).

"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from tfprune._keras import is_keras3_object, keras
from tfprune.allocation import Allocation, allocator_needs_scores, get_allocator
from tfprune.importance import ImportanceScores, get_importance, needs_data
from tfprune.inventory.layers import WRAPPER_PREFIX, PrunableLayer, prunable_layers
from tfprune.masks.granularity import Granularity, parse_granularity
from tfprune.masks.schedule import LayerwiseSchedule
from tfprune.masks.wrapper import PruneLayer
from tfprune.masks.wrapping import channel_masks, wrappers
from tfprune.planning import Plan, default_methods, plan
from tfprune.report import format_table
from tfprune.validation import check_int, check_sparsity, fraction, number

__all__ = ["Pruning", "apply_masks"]

#: Two sparsities closer than this are the same request (the Keras 3 wrapper stores them as float32).
SAME_TOL = 1e-6

Request = float | Mapping[str, float] | Plan | Allocation | Callable[[list[PrunableLayer]], Any]


def apply_masks(model: Any) -> None:
    """Multiply every wrapped weight (kernels, and biases under the channel rule) by its mask now (in place)."""
    for w in wrappers(model):
        if is_keras3_object(w):  # tfprune.keras3.wrapper.PruneWrapper
            w.apply_mask()
        elif w.pruning_obj is not None:
            w.pruning_obj.weight_mask_op()


def _strip_prefix(name: str) -> str:
    return name[len(WRAPPER_PREFIX):] if name.startswith(WRAPPER_PREFIX) else name


class Pruning(keras.callbacks.Callback):
    """Prune a wrapped model during ``model.fit``: weights per layer, or whole coupled channel groups.

    Give exactly one target, as **fraction removed**:

    Args:
      sparsity: weights: a float (the total over all prunable weights, split
        by `tfprune.plan` with ``importance`` and ``allocation``), a dict
        ``{layer_name: sparsity}`` (per-layer targets; layers not named keep
        their current target), a `Plan` (a channel plan too) or `Allocation`,
        or a callable ``fn(layers) -> dict | Plan | Allocation`` called when
        planning.
      macs: fraction of the model's MACs removed by channel groups (the model
        wrapped with ``tfprune.wrap(model, granularity="channel")``).
      params: fraction of the model's parameters removed (channel groups, or
        weights: the same count of weights), by whichever wrappers the model holds.
      importance: scorer name (``tfprune.importance.list_importance(kind)``)
        or an `ImportanceScores`; None: ``capacity`` for weights, the channel
        scorer ``l2`` for channel groups (`tfprune.planning.default_methods`).
      allocation: allocator name (``tfprune.allocation.list_allocators()``);
        None: ``importance`` for weights (How Compact?: LAMP scores weighted by
        layer importance), ``uniform`` for channel groups.
      granularity: mask rule: ``unstructured``, ``block``, ``channel`` or
        ``"N:M"`` (e.g. ``"2:4"``). None: the rule the model was wrapped with.
      min_channels, layer_importance, gamma, tolerance: channel plans (see
        `tfprune.plan`): channels every group keeps, the layer scorer behind
        group importance, its exponent, the accepted miss of the MACs/params target.
      data: calibration data for data-driven scorers (x, (x, y), tf.data...).
      begin_step: pruning step (tfmot ``pruning_step``: training calls of the
        wrapper, one per optimizer step) at which the ramp starts.
      end_step: step at which every layer reaches its target. None: after
        ``ramp_fraction`` of this ``fit``'s steps (needs a known number of
        steps per epoch); a resumed model keeps its saved ramp.
      frequency: steps between mask updates; None: ramp length / 20 (>= 1).
        Masks are also updated at ``end_step`` exactly.
      initial_sparsity: sparsity at ``begin_step`` (fraction removed).
      power: exponent of the polynomial ramp (3 = fast early, slow late).
      ramp_fraction: share of this fit's steps used for the ramp when
        ``end_step`` is None, in (0, 1].
      min_density, max_sparsity, exclude, include_outputs: bounds of the
        plan (see `tfprune.plan`). Under ``channel`` the layers producing the
        model's outputs are left dense unless ``include_outputs=True``.
      importance_kwargs, allocation_kwargs: passed to the scorer / allocator.
      replan_every: re-allocate every this many epochs while the ramp runs
        (None: plan once). Data-free importance is kept from the plan made on
        the dense weights (scoring pruned weights would feed back: a pruned
        layer looks less important and gets pruned more); data-driven
        importance is measured again on the current model.
      replan: re-plan even when the model is mid-ramp with another target
        (otherwise that is an error).
      log_layers: also write ``sparsity/<layer>`` to logs.
      verbose: 1 prints the plan when it is made, and what a resumed run does.
      on_non_finite: what to do when a pruned layer's weights hold NaN or inf
        at a mask update (checked every ``frequency`` steps and at the end of
        each epoch): ``"raise"`` (default: stop training with a
        ``FloatingPointError`` naming the layer and step) or ``"warn"``.

    What it does not do is said, not hidden: a warning (and ``notes_``, shown
    by `summary`) when Conv/Dense weights sit inside layers it cannot wrap
    (custom layers), with the total over *all* of them; when training ends
    before ``end_step`` (EarlyStopping, ``stop_training``, too few epochs);
    and when logged sparsity counts NaN weights (as not pruned).

    Attributes (after the first batch of ``fit``):
      plan_: the `Plan` in force (None when resumed without planning).
      shrink_report_: after ``finalize()`` of a channel run, the `ShrinkReport`.
      targets_: dict layer -> target (fraction of units removed).
      allocation_, scores_: the plan's `Allocation` and `ImportanceScores`.
      action_: ``planned``, ``resumed``, ``unchanged`` or ``replanned``.
      begin_step_, end_step_, frequency_: the ramp in use.
      importance_seconds_: time spent scoring and allocating.
      notes_: what was skipped or left unfinished in this fit (also warned).
    """

    def __init__(
        self,
        sparsity: Request | None = None,
        *,
        macs: float | None = None,
        params: float | None = None,
        importance: str | ImportanceScores | None = None,
        allocation: str | None = None,
        granularity: str | Granularity | None = None,
        data: Any = None,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int | None = None,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
        ramp_fraction: float = 0.7,
        min_density: float = 0.0,
        max_sparsity: float | Mapping[str, float] | None = None,
        exclude: Any = None,
        include_outputs: bool = False,
        importance_kwargs: Mapping[str, Any] | None = None,
        allocation_kwargs: Mapping[str, Any] | None = None,
        replan_every: int | None = None,
        replan: bool = False,
        log_layers: bool = True,
        verbose: int = 0,
        min_channels: int = 1,
        layer_importance: str = "capacity",
        gamma: float = 1.0,
        tolerance: float = 0.01,
        on_non_finite: str = "raise",
    ) -> None:
        super().__init__()
        if on_non_finite not in ("raise", "warn"):
            raise ValueError(f"on_non_finite must be 'raise' (stop training) or 'warn', got {on_non_finite!r}. Fix: pass one of those")
        self.on_non_finite = on_non_finite
        given = [k for k, v in (("sparsity", sparsity), ("macs", macs), ("params", params)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one target: sparsity= (fraction of prunable weights removed), macs= or params= (fractions of "
                             f"the model's MACs / parameters removed, channel removal); got {given or 'none'}")
        channel_plan = isinstance(sparsity, Plan) and sparsity.is_channel
        kind = None if granularity is None else parse_granularity(granularity).kind
        if kind == "channel" or macs is not None or channel_plan:
            if kind not in (None, "channel"):
                raise ValueError(f"macs= budgets remove channels: use granularity='channel' (got {granularity!r}), or sparsity= for weights")
            if sparsity is not None and not channel_plan:
                raise ValueError("granularity='channel' removes whole channels: give macs= or params= (fractions removed), or a channel "
                                 "Plan from tfprune.plan(model, macs=..., granularity='channel')")
            channel: bool | None = True
        elif sparsity is not None or kind is not None:
            channel = False
        else:
            channel = None  # params= alone: the model's wrappers decide (channel masks or weight wrappers)
        for name, v in (("macs", macs), ("params", params)):
            if v is not None:
                check_sparsity(v, name)
        if sparsity is not None:
            self._validate_request(sparsity)
        self.sparsity = sparsity
        self.macs, self.params_target = macs, params
        self.channel_kwargs = dict(min_channels=check_int(min_channels, "min_channels", 1), layer_importance=layer_importance,
                                   gamma=number(gamma, "gamma", minimum=0.0), tolerance=number(tolerance, "tolerance", minimum=0.0))
        self._given = (importance, allocation)
        self.data = data
        self.replan_every = None if replan_every is None else check_int(replan_every, "replan_every", 1)
        self.channel = None
        if channel is not None:
            self._init_mode(channel)
        self.granularity = None if granularity is None else parse_granularity(granularity)
        if self.granularity is not None and self.granularity.kind == "frozen":
            raise ValueError("granularity='frozen' keeps masks as they are; it needs no callback. Use 'unstructured', 'block', 'channel' or 'N:M'.")
        self.begin_step = check_int(begin_step, "begin_step", 0)
        self.end_step = None if end_step is None else check_int(end_step, "end_step", 0)
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step}). Fix: pass an end_step after begin_step, or end_step=None")
        self.frequency = None if frequency is None else check_int(frequency, "frequency", 1)
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) and self.initial_sparsity > float(sparsity):
            raise ValueError(f"initial_sparsity={initial_sparsity!r} is above the target sparsity={sparsity!r}: the ramp would un-prune. "
                             "Fix: pass an initial_sparsity <= the target (0.0, the default, starts dense)")
        LayerwiseSchedule(power=power)  # validates power
        self.power = float(power)
        try:
            self.ramp_fraction = fraction(ramp_fraction, "ramp_fraction", unit="share of this fit's steps used for the ramp", include_low=False,
                                          include_high=True, example="ramp_fraction=0.7")
        except TypeError as err:
            raise ValueError(str(err)) from None
        self.plan_kwargs = dict(min_density=min_density, max_sparsity=max_sparsity, exclude=exclude, include_outputs=include_outputs,
                                importance_kwargs=dict(importance_kwargs or {}), allocation_kwargs=dict(allocation_kwargs or {}))
        self.replan = bool(replan)
        self.log_layers = log_layers
        self.verbose = verbose
        self._reset_state()

    def _init_mode(self, channel: bool) -> None:
        """Defaults and checks of the weight or channel path (the arguments' meaning depends on it)."""
        importance, allocation = self._given
        if channel:
            from tfprune.allocation import group_keys

            if self.replan_every is not None:
                raise ValueError("replan_every re-allocates weight sparsity; a channel plan is fixed for its ramp. Fix: drop replan_every")
            importance = default_methods("channel")[0] if importance is None else importance
            allocation = default_methods("channel")[1] if allocation is None else allocation
            group_keys(allocation)
            if not isinstance(importance, str):
                raise TypeError(f"under granularity='channel' importance is a channel scorer name, got {type(importance).__name__}")
            if needs_data(importance, "channel") and self.data is None:
                raise ValueError(f"channel importance {importance!r} needs calibration data. Fix: pass data=(x_calib, y_calib).")
        else:
            importance = default_methods("unstructured")[0] if importance is None else importance
            allocation = default_methods("unstructured")[1] if allocation is None else allocation
            if isinstance(importance, str):
                _, wants_data = get_importance(importance)
                if wants_data and self.data is None and allocator_needs_scores(allocation):
                    raise ValueError(f"importance={importance!r} needs calibration data. Fix: pass data=(x_calib, y_calib).")
            elif not isinstance(importance, (ImportanceScores, Mapping)):
                raise TypeError(f"importance must be a scorer name or an ImportanceScores, got {type(importance).__name__}")
            get_allocator(allocation)
        self.channel, self.importance, self.allocation = channel, importance, allocation

    def _reset_state(self) -> None:
        self.plan_: Plan | None = None
        self.targets_: dict[str, float] = {}
        self.allocation_: Allocation | None = None
        self.scores_: ImportanceScores | None = None
        self.action_: str | None = None
        self.begin_step_ = self.end_step_ = self.frequency_ = None
        self.importance_seconds_ = 0.0
        self.notes_: list[str] = []
        self._next_check = 0
        self._batches_done = self._epoch_batches = 0
        self._step_at_start = None
        self._ready = False

    @staticmethod
    def _validate_request(request: Any) -> None:
        if isinstance(request, (Allocation, Plan)) or callable(request):
            return
        if isinstance(request, Mapping):
            if not request:
                raise ValueError("sparsity is an empty dict: name at least one layer, e.g. {'fc1': 0.9}")
            for k, v in request.items():
                check_sparsity(v, f"sparsity[{k!r}]")
            return
        if isinstance(request, bool) or not isinstance(request, (int, float, np.floating, np.integer)):
            raise ValueError(f"sparsity must be a float, a dict {{layer: sparsity}}, a Plan, an Allocation or a callable; got {request!r}. "
                             "Fix: e.g. tfprune.Pruning(0.8) (80% of the prunable weights removed)")
        check_sparsity(request, "sparsity")

    # ------------------------------------------------------------- helpers
    def _sync(self) -> None:
        """Keras 3 on JAX keeps the training state outside the variables mid-epoch: put it back before reading or writing them."""
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    def _layers(self) -> list[PrunableLayer]:
        self._sync()
        layers = [p for p in prunable_layers(self.model) if p.wrapped]
        if not layers:
            raise ValueError(
                f"{type(self).__name__}: model {self.model.name!r} has no pruning wrappers. "
                "Fix: wrap it first, `model = tfprune.wrap(model)`, then compile and fit."
            )
        if is_keras3_object(self.model):
            return layers  # the Keras 3 inventory lists only tfprune's PruneWrapper as wrapped
        for p in layers:
            if not isinstance(p.layer, PruneLayer) or not isinstance(p.schedule, LayerwiseSchedule):
                from tfprune.masks.wrapping import rewrap_fix  # the fix: strip and wrap again; in a subclass, PruneLayer in its place

                raise TypeError(
                    f"layer {p.name!r} is wrapped by {type(p.layer).__name__} with a {type(p.schedule).__name__} schedule; "
                    f"{type(self).__name__} needs tfprune's wrapper, tfprune.PruneLayer. Fix: {rewrap_fix(self.model)}."
                )
        return layers

    @staticmethod
    def _current_step(layers: list[PrunableLayer]) -> int:
        steps = [int(p.layer.pruning_step.numpy()) for p in layers]
        top = max(max(steps), 0)
        for p in layers:  # -1 before the first fit; layers added later follow the others
            if int(p.layer.pruning_step.numpy()) < top or int(p.layer.pruning_step.numpy()) < 0:
                p.layer.pruning_step.assign(top)
        return top

    def _fit_steps(self) -> int | None:
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        if not steps or not epochs:
            return None
        return int(steps) * max(int(epochs) - int(getattr(self, "_initial_epoch", 0)), 1)

    def _granularity(self, layers: list[PrunableLayer]) -> Granularity:
        if self.granularity is not None:
            return self.granularity
        first = layers[0].layer
        kind = first.granularity
        if kind == "frozen":
            raise ValueError("the model was wrapped with granularity='frozen' (masks never change). Fix: pass granularity='unstructured' (or another rule).")
        return parse_granularity(f"{first.n_m[0]}:{first.n_m[1]}" if kind == "n:m" else kind, first.block_size_)

    def _resolve(self, layers: list[PrunableLayer], g: Granularity, keep_scores: bool = False) -> dict[str, float]:
        """The request as per-layer unit targets (makes a plan for a float)."""
        request = self.sparsity
        if callable(request) and not isinstance(request, (Allocation, Mapping, Plan)):
            request = request(layers)
        names = {p.name for p in layers}
        if isinstance(request, Plan):
            self.plan_ = request
            self.allocation_, self.scores_ = request.allocation, request.importance
            request = request.targets
        elif isinstance(request, Allocation):
            self.allocation_ = request
            request = request.targets
        if isinstance(request, Mapping):
            out = {}
            for k, v in request.items():
                name = _strip_prefix(k)
                if name not in names:
                    raise ValueError(f"unknown layer name {k!r} in sparsity; wrapped layers: {sorted(names)}. Fix: use those names (or wrap that layer)")
                out[name] = check_sparsity(v, f"sparsity[{k!r}]")
            return out
        importance = self.importance
        if keep_scores and self.scores_ is not None and isinstance(importance, str) and not get_importance(importance)[1]:
            importance = self.scores_  # data-free scores stay those of the dense weights (no feedback)
        with warnings.catch_warnings():  # the callback says it itself, with the wrapped total (_note_skipped)
            warnings.filterwarnings("ignore", message="not planned: ")
            p = plan(self.model, float(request), importance=importance, allocation=self.allocation, granularity=g, data=self.data,
                     layers=layers, **self.plan_kwargs)
        self.plan_, self.allocation_, self.scores_ = p, p.allocation, p.importance
        self.importance_seconds_ += p.seconds
        return dict(p.targets)

    def _stored_total(self, layers: list[PrunableLayer]) -> float:
        return max(float(p.layer.plan_sparsity.numpy()) for p in layers)

    def _request_total(self) -> float | None:
        return float(self.sparsity) if isinstance(self.sparsity, (int, float, np.floating, np.integer)) else None

    def _same_request(self, layers: list[PrunableLayer], g: Granularity) -> bool:
        stored = self._stored_total(layers)
        if layers[0].layer.granularity != g.kind:
            return False
        total = self._request_total()
        if total is not None:
            return math.isclose(total, stored, abs_tol=SAME_TOL)
        if isinstance(self.sparsity, Mapping):
            current = {p.name: p.schedule.target_sparsity for p in layers}
            return all(math.isclose(current.get(_strip_prefix(k), -1.0), float(v), abs_tol=SAME_TOL) for k, v in self.sparsity.items())
        return False  # a Plan / Allocation / callable: compare after resolving

    def _ramp(self, step: int, fresh: bool) -> tuple[int, int, int]:
        fit_steps = self._fit_steps()
        begin = self.begin_step if fresh else max(step, self.begin_step)
        if self.end_step is not None:
            if not fresh and self.end_step <= step:
                raise ValueError(
                    f"end_step={self.end_step} is not after this model's pruning step {step} (it was pruned in an earlier fit), so the new "
                    f"target would never be applied. Fix: end_step=None (ramp over this fit), or an end_step after {step}, e.g. "
                    f"{step} + the steps of this fit")
            end = max(self.end_step, begin)
        else:
            if fit_steps is None:
                raise ValueError(
                    f"{type(self).__name__}(end_step=None) needs the number of steps per epoch, which this dataset does not tell. "
                    "Fix: pass end_step=..., or steps_per_epoch=... to fit."
                )
            remaining = max(step + fit_steps - begin, 1)
            end = begin + max(1, int(round(self.ramp_fraction * remaining)))
        freq = self.frequency or max(1, (end - begin) // 20)
        return begin, end, freq

    def _write(self, layers: list[PrunableLayer], g: Granularity, targets: dict[str, float], ramp: tuple[int, int, int],
               initial: Mapping[str, float] | None, total: float) -> None:
        begin, end, freq = ramp
        for p in layers:
            p.layer.set_granularity(g)
            p.layer.plan_sparsity.assign(total)
            if p.name in targets:
                start = self.initial_sparsity if initial is None else initial.get(p.name, 0.0)
                p.schedule.set(target_sparsity=targets[p.name], begin_step=begin, end_step=end, frequency=freq,
                               initial_sparsity=min(start, targets[p.name]), power=self.power)
            else:
                p.schedule.set(begin_step=begin, end_step=end, frequency=freq, initial_sparsity=min(self.initial_sparsity, p.schedule.target_sparsity))
        self.begin_step_, self.end_step_, self.frequency_ = begin, end, freq
        self.targets_ = {p.name: p.schedule.target_sparsity for p in layers}

    def _unit_sparsity(self, layers: list[PrunableLayer]) -> dict[str, float]:
        """Current sparsity of each layer in units of its rule (weights, or zero channels under channel)."""
        out = {}
        for p in layers:
            k = p.kernel()
            out[p.name] = float(np.count_nonzero(k == 0)) / k.size
        return out

    # ------------------------------------------------------------ the setup
    def _setup(self) -> None:
        layers = self._layers()
        if self.sparsity is None:  # params=: the same count of weights, as a fraction of the prunable ones
            from tfprune.planning import params_to_sparsity

            self.sparsity = params_to_sparsity(self.model, self.params_target)
        step = self._current_step(layers)
        g = self._granularity(layers)
        stored = self._stored_total(layers)
        first = layers[0].schedule
        planned = stored >= 0
        if not planned:
            targets = self._resolve(layers, g)
            ramp = self._ramp(step, fresh=True)
            total = self._request_total() if self._request_total() is not None else self._weight_total(layers, targets, g)
            self._write(layers, g, targets, ramp, None, total)
            self.action_ = "planned"
        elif step < first.end_step and not self.replan:
            if not self._same_request(layers, g) and not callable(self.sparsity) and not isinstance(self.sparsity, (Plan, Allocation)):
                raise ValueError(
                    f"this model is mid-ramp (pruning step {step} of {first.end_step}) towards total sparsity {stored:.4f} "
                    f"({layers[0].layer.granularity}), but the callback asks for {self._describe_request()} ({g.name}). "
                    "Fix: resume with the same sparsity and granularity, or pass replan=True to plan again from the current weights."
                )
            if self.end_step is not None:
                self._write(layers, g, {p.name: p.schedule.target_sparsity for p in layers},
                            self._ramp(step, fresh=True), {p.name: p.schedule.initial_sparsity for p in layers}, stored)
            self.begin_step_, self.end_step_, self.frequency_ = first.begin_step, first.end_step, first.frequency
            self.targets_ = {p.name: p.schedule.target_sparsity for p in layers}
            self.action_ = "resumed"
        elif self._same_request(layers, g) and not self.replan:
            self.begin_step_, self.end_step_, self.frequency_ = first.begin_step, first.end_step, first.frequency
            self.targets_ = {p.name: p.schedule.target_sparsity for p in layers}
            self.action_ = "unchanged"
        else:
            targets = self._resolve(layers, g)
            current = {p.name: p.schedule.target_sparsity for p in layers}
            if all(math.isclose(current[k], v, abs_tol=SAME_TOL) for k, v in targets.items()) and layers[0].layer.granularity == g.kind:
                self.begin_step_, self.end_step_, self.frequency_ = first.begin_step, first.end_step, first.frequency
                self.targets_ = current
                self.action_ = "unchanged"
            else:
                total = self._request_total() if self._request_total() is not None else self._weight_total(layers, targets, g)
                self._write(layers, g, targets, self._ramp(step, fresh=False), self._unit_sparsity(layers), total)
                self.action_ = "replanned"
        fit_steps = self._fit_steps()
        if fit_steps is not None and step + fit_steps < self.end_step_:
            warnings.warn(
                f"this fit() ends at pruning step {step + fit_steps}, before end_step={self.end_step_}: layers will not reach "
                "their targets in this run (pruning goes on if you fit again).",
                stacklevel=3,
            )
        self._note_skipped()
        if self.verbose:
            print(self.summary(layers, step))

    def _note_skipped(self) -> None:
        """Warn (and note) when Conv/Dense weights sit in layers the wrappers do not reach, with the total over all of them."""
        inv = prunable_layers(self.model)
        hidden = inv.n_skipped_kernels
        wrapped = inv.n_params if self.channel else sum(p.n_params for p in inv if p.wrapped)
        if not hidden:
            return
        owners = [f"{s.path} ({s.layer_type}, {s.kernels_inside})" for s in inv.skipped if s.kernels_inside]
        total = self._request_total()
        if self.channel or total is None:
            over_all = ""
        else:
            over_all = f"; the requested sparsity {total:.4f} of the wrapped weights is {total * wrapped / (wrapped + hidden):.4f} of all of them"
        layer_wrapper = "tfprune.keras3.wrapper.PruneWrapper" if is_keras3_object(self.model) else "tfprune.PruneLayer"
        note = (f"{hidden} of {wrapped + hidden} Conv/Dense weights ({hidden / (wrapped + hidden):.1%}) sit inside layers tfprune cannot "
                f"wrap and are not pruned: {', '.join(owners[:6])}{' ...' if len(owners) > 6 else ''}{over_all}. Fix: build those blocks "
                f"from Keras layers in the functional model, or put {layer_wrapper} around the layers inside the custom layer")
        self.notes_.append(note)
        warnings.warn(note, stacklevel=4)

    def _weight_total(self, layers: list[PrunableLayer], targets: Mapping[str, float], g: Granularity) -> float:
        n = sum(p.n_params for p in layers)
        return sum(targets.get(p.name, p.schedule.target_sparsity) * p.n_params for p in layers) / max(n, 1)

    def _describe_request(self) -> str:
        total = self._request_total()
        return f"total sparsity {total:.4f}" if total is not None else f"per-layer targets {dict(self.sparsity)}"

    def summary(self, layers: list[PrunableLayer] | None = None, step: int | None = None) -> str:
        """The targets and ramp in force, as a table (channels: per group, its channels, planned and masked now)."""
        if self.channel:
            return self._channel_summary()
        layers = layers if layers is not None else self._layers()
        head = (f"{type(self).__name__}: {self.action_ or 'not set up'}; granularity {layers[0].layer.granularity}; "
                f"steps {self.begin_step_}->{self.end_step_} every {self.frequency_}" + (f" (now at step {step})" if step is not None else ""))
        rows = [[p.name, p.n_params, p.schedule.target_sparsity, p.sparsity()] for p in layers]
        text = head + "\n" + format_table(["layer", "weights", "target", "sparsity now"], rows)
        if self.plan_ is not None and self.action_ in ("planned", "replanned"):
            text = self.plan_.table() + "\n" + text
        return "\n".join([text, *(f"note: {n}" for n in self.notes_)])

    def _channel_summary(self) -> str:
        if getattr(self, "_cg", None) is None:
            return f"{type(self).__name__}: not set up (it plans at the first batch of fit)"
        masked = self.channels_masked()
        planned = self.plan_.channels if self.plan_ is not None else {}
        step = int(channel_masks(self.model)[0].pruning_step.numpy())
        head = (f"{type(self).__name__}: {self.action_}; granularity channel; steps {self.begin_step_}->{self.end_step_} every "
                f"{self.frequency_} (now at step {step})")
        rows = [[g.name, g.channels, len(planned.get(g.name, [])) if planned else "-", len(masked.get(g.name, []))] for g in self._cg.prunable]
        text = head + "\n" + format_table(["group", "channels", "planned", "masked now"], rows)
        if self.plan_ is not None and self.action_ in ("planned", "replanned"):
            text = self.plan_.table() + "\n" + text
        return "\n".join([text, *(f"note: {n}" for n in self.notes_)])

    def _log_sparsity(self, logs: dict | None) -> dict[str, float]:
        self._sync()
        layers = [p for p in prunable_layers(self.model) if p.wrapped]
        per_layer, zeros, total, nan = {}, 0, 0, {}
        for p in layers:
            w = p.kernel()
            z = int(np.count_nonzero(w == 0))  # NaN != 0: a NaN weight counts as not pruned
            bad = int(w.size - np.count_nonzero(np.isfinite(w)))
            if bad:
                nan[p.name] = bad
            per_layer[p.name] = z / w.size
            zeros += z
            total += w.size
        if nan:
            warnings.warn(f"logged sparsity counts non-finite weights as not pruned: {nan} (layer: NaN/inf weights)", stacklevel=2)
        result = {"sparsity": zeros / max(total, 1)}
        if self.log_layers:
            result.update({f"sparsity/{k}": v for k, v in per_layer.items()})
        if logs is not None:
            logs.update(result)
        return result

    # ----------------------------------------------------------- callbacks
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._ready = False
        if self.channel is None:
            self._init_mode(bool(channel_masks(self.model)))
        if self.channel:
            self._channel_masks()
        else:
            self._layers()  # fail early on an unwrapped model
        self._initial_epoch = 0
        self._next_check = 0
        self._batches_done = 0  # batches of this fit before the current epoch (for the step estimate between checks)
        self._epoch_batches = 0
        self._step_at_start = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not self._ready:
            self._initial_epoch = epoch
        self._batches_done += self._epoch_batches
        self._epoch_batches = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Set up at the first batch, after every callback's on_train_begin (BackupAndRestore restores there).
        if not self._ready:
            if self.channel:
                self._setup_channels()
            else:
                self._setup()
            self._ready = True

    def _pruned_weights(self) -> list[tuple[str, Any]]:
        """``(layer name, weight variable)`` of every wrapped layer's prunable weights (raw, before the mask)."""
        self._sync()
        if self.channel:
            return [(m.layer.name, w) for m in channel_masks(self.model) for w in m.layer.trainable_weights]
        return [(p.name, getattr(p.inner, p.weight)) for p in prunable_layers(self.model) if p.wrapped]

    def _step_now(self) -> int:
        self._sync()
        holders = channel_masks(self.model) if self.channel else [p.layer for p in prunable_layers(self.model) if p.wrapped]
        return int(holders[0].pruning_step.numpy()) if holders else 0

    def check_finite(self, step: int | None = None) -> dict[str, int]:
        """``{layer: non-finite weight count}`` of the pruned layers (empty when all are finite); raises or warns per ``on_non_finite``."""
        bad = {}
        for name, var in self._pruned_weights():
            w = var.numpy()
            n = int(w.size - np.count_nonzero(np.isfinite(w)))
            if n:
                bad[name] = bad.get(name, 0) + n
        if bad:
            step = self._step_now() if step is None else step
            msg = (f"non-finite weights (NaN/inf) at pruning step {step}: {bad} (layer: count). Their masks are meaningless now. Fix: find the "
                   "batch that diverged (tf.debugging.enable_check_numerics(), a lower learning rate, clipnorm=1.0 on the optimizer, "
                   "finite inputs), then resume from a checkpoint taken before it")
            if self.on_non_finite == "raise":
                if self.model is not None:
                    self.model.stop_training = True
                raise FloatingPointError(msg)
            self.notes_.append(msg)
            warnings.warn(msg, stacklevel=2)
        return bad

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._ready or self.end_step_ is None:
            return
        self._epoch_batches = batch + 1
        if self._step_at_start is not None:
            # Reading the step variable every batch would sync the device (and, on JAX, the whole state) each step: estimate it
            # from the batches seen (one wrapper call per optimizer step) and read it only when a check may be due.
            estimate = self._step_at_start + self._batches_done + self._epoch_batches
            if estimate < self._next_check or estimate < (self.begin_step_ or 0):
                return
        step = self._step_now()
        if self._step_at_start is None:
            self._step_at_start = step - self._batches_done - self._epoch_batches
        if step >= self._next_check and step >= (self.begin_step_ or 0):  # at mask-update steps (every frequency, and end_step)
            freq = max(int(self.frequency_ or 1), 1)
            self._next_check = step + freq if step < self.end_step_ else (1 << 62)
            self.check_finite(step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._ready:
            self.check_finite()
        if self.channel:
            if self._ready:
                self._log_channels(logs)
            return
        if self.replan_every and self._ready and (epoch + 1 - self._initial_epoch) % self.replan_every == 0:
            layers = self._layers()
            step = int(layers[0].layer.pruning_step.numpy())
            data_free = isinstance(self.importance, str) and not get_importance(self.importance)[1]
            if step < (self.end_step_ or 0) and self._request_total() is not None and not (data_free and self.scores_ is None):
                g = self._granularity(layers)
                targets = self._resolve(layers, g, keep_scores=True)
                for p in layers:
                    if p.name in targets:
                        p.schedule.set(target_sparsity=targets[p.name])
                self.targets_ = {p.name: p.schedule.target_sparsity for p in layers}
        apply_masks(self.model)
        self._log_sparsity(logs)
        if logs is not None:
            logs["importance_seconds"] = float(self.importance_seconds_)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.channel:
            apply_masks(self.model)
        if self._ready and self.end_step_ is not None:
            step = self._step_now()
            if step < self.end_step_:
                planned = self._request_total()
                if planned is None and not self.channel:
                    planned = self._weight_total(self._layers(), self.targets_, self._granularity(self._layers()))
                what = (f"channel groups hold {self._masked_labels().size} of {sum(len(v) for v in (self.plan_.channels if self.plan_ else {}).values())} "
                        "planned channels" if self.channel else f"total sparsity is {prunable_layers(self.model).total_sparsity():.4f} of the "
                        f"{planned:.4f} planned")
                note = (f"training ended at pruning step {step}, before the ramp's end_step={self.end_step_} (EarlyStopping, stop_training, "
                        f"or too few epochs): {what}. Fix: fit again with the same callback (pruning resumes where it stopped); give "
                        "EarlyStopping start_from_epoch= past the ramp; with ModelCheckpoint(save_best_only=True) the kept file may be mid-ramp too")
                self.notes_.append(note)
                warnings.warn(note, stacklevel=2)

    # ------------------------------------------------------------ channels
    def _channel_masks(self) -> list[Any]:
        masks = channel_masks(self.model)
        if not masks:
            hint = " It holds weight-pruning wrappers: pass sparsity= for those, or wrap the plain model again with " \
                   "tfprune.wrap(tfprune.strip(model), granularity='channel')." if wrappers(self.model) else ""
            raise ValueError(f"{type(self).__name__}(macs/params, granularity='channel'): model {self.model.name!r} has no channel "
                             f"wrappers.{hint} Fix: model = tfprune.wrap(model, granularity='channel'), then compile and fit.")
        return masks

    def _channel_request(self) -> float:
        if isinstance(self.sparsity, Plan):
            return float(self.sparsity.requested)
        return float(self.macs if self.macs is not None else self.params_target)

    def _setup_channels(self) -> None:
        from tfprune.masks.wrapping import strip
        from tfprune.structured.graph import channel_graph

        masks = self._channel_masks()
        steps = [int(m.pruning_step.numpy()) for m in masks]
        step = max(max(steps), 0)
        for m in masks:
            m.pruning_step.assign(step)
        stored = max(float(m.plan_total.numpy()) for m in masks)
        first = masks[0].pruning_schedule
        plain = strip(self.model)
        self._cg = channel_graph(plain, self.plan_kwargs["include_outputs"])
        if stored < 0 or self.replan and step >= first.end_step:
            if isinstance(self.sparsity, Plan):
                p = self.sparsity
            else:
                p = plan(plain, macs=self.macs, params=self.params_target, granularity="channel", importance=self.importance,
                         allocation=self.allocation, data=self.data, include_outputs=self.plan_kwargs["include_outputs"],
                         importance_kwargs=self.plan_kwargs["importance_kwargs"], **self.channel_kwargs)
            self.plan_ = p
            self.importance_seconds_ += p.seconds
            begin, end, freq = self._ramp(step, fresh=stored < 0)
            self._write_channels(masks, p, (begin, end, freq))
            self.action_ = "planned" if stored < 0 else "replanned"
        else:
            request = self._channel_request()
            if not math.isclose(request, stored, abs_tol=1e-9) and not self.replan:
                raise ValueError(f"this model was planned for {masks[0].budget} removed {stored:.4f}, but the callback asks for "
                                 f"{request:.4f}. Fix: resume with the same target; to prune further, call finalize() and wrap the "
                                 "smaller model again")
            self.action_ = "resumed" if step < first.end_step else "unchanged"
            self.begin_step_, self.end_step_, self.frequency_ = first.begin_step, first.end_step, first.frequency
        self.targets_ = {m.layer.name: m.pruning_schedule.target_sparsity for m in masks}
        fit_steps = self._fit_steps()
        if fit_steps is not None and step + fit_steps < self.end_step_:
            warnings.warn(f"this fit() ends at pruning step {step + fit_steps}, before end_step={self.end_step_}: groups will not reach "
                          "their planned channels in this run (pruning goes on if you fit again).", stacklevel=3)
        self._note_skipped()
        if self.verbose:
            print(self.summary())

    def _write_channels(self, masks: list[Any], p: Plan, ramp: tuple[int, int, int]) -> None:
        """Each wrapper's ranks and counts (per output channel, from its group's removal order), the ramp and the plan's total."""
        from tfprune.masks.channel_mask import NEVER

        cg = self._cg
        where: dict[int, tuple[int, str]] = {}
        for g in cg.prunable:
            order = {c: r for r, c in enumerate(p.channels.get(g.name, []))}
            for j, lab in enumerate(g.labels):
                where[int(lab)] = (order.get(j, NEVER), g.name)
        begin, end, freq = ramp
        for m in masks:
            node = cg.nodes.get(m.layer.name)
            labels = cg.labels.get(node.outputs[0]) if node is not None and node.outputs else None
            if labels is None or labels.size != m.channels:
                raise ValueError(f"layer {m.layer.name!r} is wrapped for channel pruning but is not in the channel graph of "
                                 f"{self.model.name!r}. Fix: wrap the plain model again, tfprune.wrap(model, granularity='channel')")
            rank = np.array([where.get(int(lab), (NEVER, ""))[0] for lab in labels], dtype=np.int64)
            count = np.array([len(p.channels.get(where.get(int(lab), (0, ""))[1], [])) for lab in labels], dtype=np.int64)
            m.rank.assign(rank)
            m.count.assign(count)
            m.plan_total.assign(float(p.requested))
            m.budget = p.budget
            m.pruning_schedule.set(target_sparsity=min(float((rank < NEVER).sum()) / m.channels, 0.999999), begin_step=begin,
                                   end_step=end, frequency=freq, initial_sparsity=0.0, power=self.power)
        self.begin_step_, self.end_step_, self.frequency_ = begin, end, freq

    def _masked_labels(self, model: Any = None) -> np.ndarray:
        out = []
        for m in channel_masks(self.model if model is None else model):
            node = self._cg.nodes.get(m.layer.name)
            out.append(self._cg.labels[node.outputs[0]][m.keep.numpy() == 0])
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def channels_masked(self, model: Any = None) -> dict[str, list[int]]:
        """``{group: masked channel indices}`` now (what ``finalize()`` removes); default the trained model."""
        masked = set(self._masked_labels(model).tolist())
        out = {}
        for g in self._cg.prunable:
            idx = [j for j, lab in enumerate(g.labels) if int(lab) in masked]
            if idx:
                out[g.name] = idx
        return out

    def _log_channels(self, logs: dict | None) -> None:
        from tfprune.structured.plan import CostModel

        if not hasattr(self, "_cost"):
            self._cost = CostModel(self._cg)
        labels = self._masked_labels()
        removed = self._cost.removed_mask(labels) if labels.size else np.zeros(self._cost.all_labels.size, bool)
        macs, _ = self._cost.estimate(removed)
        total = sum(g.channels for g in self._cg.prunable)
        result = {"channels_masked": float(labels.size) / max(total, 1), "macs_masked": 1.0 - macs / self._cost.dense[0] if self._cost.dense[0] else 0.0}
        if logs is not None:
            logs.update(result)

    # ------------------------------------------------------------ results
    def finalize(self, model: Any = None, *, x: Any = None, atol: float = 1e-4) -> Any:
        """The pruned model without wrappers: stripped (weight granularities) or physically smaller (channels).

        Args:
          model: default the model trained with this callback (never modified).
          x: inputs for the exactness check of the shrunk model (channels; default random).
          atol: tolerance of that check, relative to the output scale.

        Channels: the masked channels of every group are removed by
        `tfprune.shrink`, which checks that the smaller model computes what the
        masked one computes; its `ShrinkReport` is kept in ``shrink_report_``.
        """
        from tfprune.masks.wrapping import strip

        model = self.model if model is None else model
        if model is None:
            raise ValueError("finalize() needs the trained model: call it after fit, or pass model=")
        plain = strip(model)
        if not self.channel:
            return plain
        from tfprune.structured.graph import channel_graph
        from tfprune.structured.removal import shrink

        if getattr(self, "_cg", None) is None or model is not self.model:
            self._cg = channel_graph(plain, self.plan_kwargs["include_outputs"])
        remove = self.channels_masked(model)
        small, self.shrink_report_ = shrink(plain, remove=remove, include_outputs=self.plan_kwargs["include_outputs"], x=x, atol=atol)
        return small
