"""`PruneWrapper`: the Keras 3 twin of `tfprune.PruneLayer`, with masks computed in the train step by ``keras.ops``.

A wrapper holds, as variables of the layer (saved in ``.keras`` files, in
``save_weights`` and by ``BackupAndRestore``):

* ``mask``: {0, 1}, the shape of the pruned weight (1 = kept);
* ``pruning_step``: training calls of the wrapper (one per optimizer step);
* the schedule (`KerasSchedule`: target, initial sparsity, begin/end step,
  frequency, power), the mask ``rule`` and ``plan_sparsity`` (the total the
  plan was made for, -1 before any plan): what `tfprune.Pruning` writes.

In training, each call first counts the step; when the schedule says so (every
``frequency`` steps from ``begin_step``, and at ``end_step``) it recomputes the
mask by the rule (`tfprune.keras3.masks.mask_ops`) from ``|w * mask|`` at the
ramp's current sparsity. The wrapped layer then runs its own ``call`` on
``w * mask`` (its weight is swapped for the masked tensor during the call), so
removed weights contribute nothing and receive no gradient. Everything is
``keras.ops``: the same code runs on the TensorFlow, JAX and PyTorch
backends, under ``jit`` and with ``steps_per_execution > 1``.
`tfprune.strip` multiplies the weights by their masks and drops the wrappers.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import keras
from keras import ops

from tfprune.inventory.entries import WRAPPER_PREFIX, pruned_weight_table  # the same names as on the tf-keras path
from tfprune.keras3.masks import mask_ops, ramp_sparsity_ops, update_due_ops
from tfprune.masks.granularity import RULE_IDS, Granularity, parse_granularity
from tfprune.validation import schedule_values

__all__ = ["PruneWrapper", "ChannelMask", "ChannelSchedule", "KerasSchedule", "WRAPPER_PREFIX", "pruned_weight_name", "refuse_channel", "PRUNABLE_WEIGHTS"]

_RULES = {v: k for k, v in RULE_IDS.items()}
#: Keras 3 layer type -> attribute of the weight tfprune prunes (the one table of `tfprune.inventory.entries`).
PRUNABLE_WEIGHTS = pruned_weight_table(keras.layers)


def pruned_weight_name(layer: Any) -> str | None:
    """The attribute of the weight tfprune prunes in a Keras 3 layer (``kernel``, ...), or None (depthwise, other layers)."""
    for cls, attr in PRUNABLE_WEIGHTS:
        if isinstance(layer, cls):
            return attr
    return None


class KerasSchedule:
    """The schedule of one `PruneWrapper`, read from and written to its variables (the interface of `tfprune.LayerwiseSchedule`).

    Units: sparsities are fractions removed; steps are the wrapper's ``pruning_step``.
    """

    _FIELDS = ("target_sparsity", "begin_step", "end_step", "frequency", "initial_sparsity", "power")

    def __init__(self, wrapper: PruneWrapper) -> None:
        self._w = wrapper

    def _get(self, field: str) -> float:
        w = self._w
        if not w.built:
            return w._schedule_config[field]
        return ops.convert_to_numpy(getattr(w, f"schedule_{field}").value).item()

    @property
    def target_sparsity(self) -> float:
        return float(self._get("target_sparsity"))

    @property
    def initial_sparsity(self) -> float:
        return float(self._get("initial_sparsity"))

    @property
    def begin_step(self) -> int:
        return int(self._get("begin_step"))

    @property
    def end_step(self) -> int:
        return int(self._get("end_step"))

    @property
    def frequency(self) -> int:
        return int(self._get("frequency"))

    @property
    def power(self) -> float:
        return float(self._get("power"))

    def set(self, **kwargs: Any) -> None:
        """Change any of the values (validated as a whole), e.g. ``set(target_sparsity=0.8, end_step=500)``."""
        unknown = set(kwargs) - set(self._FIELDS)
        if unknown:
            raise TypeError(f"unknown schedule field(s) {sorted(unknown)}; valid: {sorted(self._FIELDS)}")
        values = schedule_values(**{**self.get_config()["config"], **kwargs})
        w = self._w
        if not w.built:
            w._schedule_config.update(values)
            return
        for field, v in values.items():
            getattr(w, f"schedule_{field}").assign(v)

    def get_config(self) -> dict:
        return {"class_name": "LayerwiseSchedule", "config": {f: self._get(f) for f in self._FIELDS}}

    def __repr__(self) -> str:
        return "KerasSchedule(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items()) + ")"


def refuse_channel(g: Granularity) -> None:
    if g.kind == "channel":
        raise ValueError("PruneWrapper masks the weights of one layer; channels are removed by coupled groups. Fix: "
                         "tfprune.wrap(model, granularity='channel') (ChannelMask wrappers) and tfprune.Pruning(macs=...)")


@keras.saving.register_keras_serializable(package="tfprune", name="PruneWrapper")
class PruneWrapper(keras.layers.Wrapper):
    """A Keras 3 layer that prunes one layer's weight during ``fit`` (see the module doc).

    Args:
      layer: a Keras 3 Dense, Conv (1-3D, transposed), SeparableConv
        (pointwise kernel) or Embedding layer.
      granularity: the starting rule: ``unstructured``, ``block``, ``N:M``
        (e.g. ``"2:4"``) or ``frozen`` (the mask never changes); callbacks may switch it.
      block_size: ``(bh, bw)`` blocks of the ``block`` rule (2-D kernels).
      n_m: ``(N, M)`` of the ``N:M`` rule.
      schedule: the initial schedule values (a dict, as `KerasSchedule.get_config`'s ``config``).
      plan_sparsity: the total of the plan that set this layer's target (-1: none).
    """

    def __init__(
        self,
        layer: Any,
        granularity: str = "unstructured",
        block_size: tuple[int, int] = (4, 1),
        n_m: tuple[int, int] = (2, 4),
        schedule: dict | None = None,
        plan_sparsity: float = -1.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"PruneWrapper wraps a Keras 3 layer, got {type(layer).__name__}. Fix: PruneWrapper(keras.layers.Dense(10))")
        attr = pruned_weight_name(layer)
        if attr is None:
            raise ValueError(f"PruneWrapper: {type(layer).__name__} {layer.name!r} has no weight tfprune prunes. Fix: wrap Dense, Conv, "
                             "SeparableConv (pointwise), ConvTranspose or Embedding layers")
        kwargs.setdefault("name", WRAPPER_PREFIX + layer.name)
        super().__init__(layer, **kwargs)
        if isinstance(granularity, int):
            granularity = _RULES[granularity]
        if granularity == "n:m":
            granularity = f"{int(n_m[0])}:{int(n_m[1])}"
        g = parse_granularity(granularity, tuple(block_size))
        refuse_channel(g)
        self.weight_attr = attr
        self.granularity_ = g.kind
        self.block_size_ = tuple(int(b) for b in block_size)
        self.n_m = (int(n_m[0]), int(n_m[1])) if g.kind != "n:m" else (g.n, g.m)
        self.transpose = "Transpose" in type(layer).__name__
        self._schedule_config = schedule_values(**{"target_sparsity": 0.0, "begin_step": 0, "end_step": 1000, "frequency": 10,
                                                   "initial_sparsity": 0.0, "power": 3.0, **dict(schedule or {})})
        self._initial_plan_sparsity = float(plan_sparsity)

    # ------------------------------------------------------------------ build
    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = getattr(self.layer, self.weight_attr)
        self.mask = self.add_weight(name="mask", shape=tuple(kernel.shape), dtype=kernel.dtype, initializer="ones", trainable=False)
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.rule = self.add_weight(name="rule", shape=(), dtype="int32", initializer=keras.initializers.Constant(RULE_IDS[self.granularity_]),
                                    trainable=False)
        self.plan_sparsity = self.add_weight(name="plan_sparsity", shape=(), dtype="float32",
                                             initializer=keras.initializers.Constant(self._initial_plan_sparsity), trainable=False)
        for field in KerasSchedule._FIELDS:
            dtype = "float32" if field in ("target_sparsity", "initial_sparsity", "power") else "int32"
            var = self.add_weight(name=f"schedule_{field}", shape=(), dtype=dtype,
                                  initializer=keras.initializers.Constant(self._schedule_config[field]), trainable=False)
            setattr(self, f"schedule_{field}", var)
        self.built = True

    # ---------------------------------------------------------- the interface
    @property
    def pruning_schedule(self) -> KerasSchedule:
        return KerasSchedule(self)

    @property
    def pruning_vars(self) -> list[tuple[Any, Any, None]]:
        """``[(weight, mask, None)]`` (the layout of tfmot's wrapper: kernel first)."""
        return [(getattr(self.layer, self.weight_attr), self.mask, None)] if self.built else []

    @property
    def granularity(self) -> str:
        """The rule in force now."""
        if not self.built:
            return self.granularity_
        return _RULES[int(ops.convert_to_numpy(self.rule.value))]

    def set_granularity(self, granularity: str | Granularity) -> None:
        """Switch the mask rule (read in the train step: no recompilation). ``N:M`` must match this wrapper's ``n_m``."""
        g = parse_granularity(granularity, self.block_size_)
        refuse_channel(g)
        if g.kind == "n:m" and (g.n, g.m) != self.n_m:
            raise ValueError(f"layer {self.layer.name!r} was wrapped for {self.n_m[0]}:{self.n_m[1]}, not {g.name}. "
                             f"Fix: wrap again with tfprune.wrap(model, granularity='{g.name}')")
        if g.kind == "block" and g.block_size != self.block_size_:
            raise ValueError(f"layer {self.layer.name!r} was wrapped with block_size={self.block_size_}, not {g.block_size}. "
                             f"Fix: wrap again with tfprune.wrap(model, block_size={g.block_size})")
        self.granularity_ = g.kind
        if self.built:
            self.rule.assign(g.rule_id)

    def masked_weight(self) -> Any:
        """``weight * mask`` (a tensor)."""
        weight = getattr(self.layer, self.weight_attr)
        return ops.multiply(weight.value, ops.cast(self.mask.value, weight.dtype))

    def apply_mask(self) -> None:
        """Multiply the stored weight by the mask now (in place): the zeros the forward pass already uses become the weight's."""
        var = getattr(self.layer, self.weight_attr)
        var.assign(self.masked_weight())

    # ------------------------------------------------------------------- call
    def _new_mask(self, step: Any) -> Any:
        v = lambda name: getattr(self, f"schedule_{name}").value  # noqa: E731  (tensors: JAX traces no variable objects)
        sparsity = ramp_sparsity_ops(step, v("initial_sparsity"), v("target_sparsity"), v("begin_step"), v("end_step"), v("power"))
        scores = self.masked_weight()

        def rule(kind: str):
            if kind == "frozen":
                return lambda w, s: self.mask.value
            g = Granularity(kind, self.block_size_, self.n_m[0], self.n_m[1])
            return lambda w, s: mask_ops(w, s, g, transpose=self.transpose)

        return ops.switch(self.rule.value, [rule(_RULES[i]) for i in range(len(_RULES))], scores, sparsity)

    @contextlib.contextmanager
    def _weight_as(self, value: Any) -> Iterator[None]:
        """Let the inner layer's ``call`` read ``value`` as its pruned weight (the variable is put back after)."""
        var = getattr(self.layer, self.weight_attr)
        slot = next((k for k, v in vars(self.layer).items() if v is var), None)
        if slot is None:
            raise RuntimeError(f"PruneWrapper: cannot find where {type(self.layer).__name__} keeps its {self.weight_attr!r}")
        object.__setattr__(self.layer, slot, value)
        try:
            yield
        finally:
            object.__setattr__(self.layer, slot, var)

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        if training:
            step = self.pruning_step.value + 1
            self.pruning_step.assign(step)
            due = update_due_ops(step, self.schedule_begin_step.value, self.schedule_end_step.value, self.schedule_frequency.value)
            self.mask.assign(ops.cond(due, lambda: self._new_mask(step), lambda: self.mask.value))
        if "training" in inspect.signature(self.layer.call).parameters:
            kwargs["training"] = training
        with self._weight_as(self.masked_weight()):
            return self.layer.call(inputs, **kwargs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------------------- saving
    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "granularity": self.granularity,
            "block_size": list(self.block_size_),
            "n_m": list(self.n_m),
            "schedule": self.pruning_schedule.get_config()["config"],
            "plan_sparsity": float(ops.convert_to_numpy(self.plan_sparsity.value)) if self.built else self._initial_plan_sparsity,
        })
        return config


class ChannelSchedule(KerasSchedule):
    """The ramp of one Keras 3 `ChannelMask` (begin, end, frequency, power; ``target_sparsity`` = share of its channels masked at the end)."""


@keras.saving.register_keras_serializable(package="tfprune", name="ChannelMask")
class ChannelMask(keras.layers.Wrapper):
    """The Keras 3 twin of `tfprune.masks.channel_mask.ChannelMask`: a layer's output channels times a keep-vector computed in the train step.

    Variables (saved with the model): ``keep`` (C,) 1 = kept; ``rank`` (C,) the
    channel's place in its group's removal order (`NEVER` when never removed);
    ``count`` (C,) the channels its group loses at the end of the ramp;
    ``pruning_step``; the ramp; ``plan_total``. At every update step ``t``
    channel ``c`` is masked when ``rank[c] < floor(count[c] * ramp(t) + 0.5)``
    (`tfprune.masks.channel_mask.keep_vector`), so all layers of a group mask
    the same channels at the same step. Ranks and counts are float32 (exact
    for channel counts below 2**24; `NEVER` = 2**40 is a power of two).
    """

    masks_output_channels = True

    def __init__(self, layer: Any, schedule: dict | None = None, plan_total: float = -1.0, budget: str = "macs", **kwargs: Any) -> None:
        from tfprune.masks.channel_mask import CHANNEL_MASK_PREFIX

        kwargs.setdefault("name", CHANNEL_MASK_PREFIX + layer.name)
        super().__init__(layer, **kwargs)
        self._schedule_config = schedule_values(**{"target_sparsity": 0.0, "begin_step": 0, "end_step": 1000, "frequency": 10,
                                                   "initial_sparsity": 0.0, "power": 3.0, **dict(schedule or {})})
        self._initial_plan_total = float(plan_total)
        self.budget = str(budget)

    def build(self, input_shape: Any = None) -> None:
        from tfprune.masks.channel_mask import NEVER

        if not self.layer.built:
            self.layer.build(input_shape)
        channels = int(self.layer.compute_output_shape(input_shape)[-1])
        self.channels = channels
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.keep = self.add_weight(name="keep", shape=(channels,), dtype="float32", initializer="ones", trainable=False)
        self.rank = self.add_weight(name="rank", shape=(channels,), dtype="float32", initializer=keras.initializers.Constant(float(NEVER)),
                                    trainable=False)
        self.count = self.add_weight(name="count", shape=(channels,), dtype="float32", initializer="zeros", trainable=False)
        self.plan_total = self.add_weight(name="plan_total", shape=(), dtype="float32",
                                          initializer=keras.initializers.Constant(self._initial_plan_total), trainable=False)
        for field in KerasSchedule._FIELDS:
            dtype = "float32" if field in ("target_sparsity", "initial_sparsity", "power") else "int32"
            setattr(self, f"schedule_{field}", self.add_weight(name=f"schedule_{field}", shape=(), dtype=dtype, trainable=False,
                                                               initializer=keras.initializers.Constant(self._schedule_config[field])))
        self.built = True

    @property
    def pruning_schedule(self) -> ChannelSchedule:
        return ChannelSchedule(self)

    def keep_at(self, step: Any) -> Any:
        """The keep-vector (C,) at ``step``: 0 where ``rank < floor(count * ramp(step) + 0.5)``."""
        v = lambda name: getattr(self, f"schedule_{name}").value  # noqa: E731
        ramp = ramp_sparsity_ops(step, 0.0, 1.0, v("begin_step"), v("end_step"), v("power"))
        n = ops.floor(self.count.value * ramp + 0.5)
        return ops.cast(ops.greater_equal(self.rank.value, n), "float32")

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        if training:
            step = self.pruning_step.value + 1
            self.pruning_step.assign(step)
            due = update_due_ops(step, self.schedule_begin_step.value, self.schedule_end_step.value, self.schedule_frequency.value)
            self.keep.assign(ops.where(due, self.keep_at(step), self.keep.value))
        if "training" in inspect.signature(self.layer.call).parameters:
            kwargs["training"] = training
        out = self.layer.call(inputs, **kwargs)
        return out * ops.cast(self.keep.value, out.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def masked(self) -> Any:
        """Indices of the output channels masked now (sorted)."""
        import numpy as np

        return np.flatnonzero(ops.convert_to_numpy(self.keep.value) == 0)

    def folded_weights(self) -> list:
        """The inner layer's weights with the masked channels zeroed (`tfprune.masks.channel_mask.fold_keep`)."""
        from tfprune.masks.channel_mask import fold_keep

        return fold_keep(self.layer, ops.convert_to_numpy(self.keep.value))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"schedule": self.pruning_schedule.get_config()["config"], "budget": self.budget,
                       "plan_total": float(ops.convert_to_numpy(self.plan_total.value)) if self.built else self._initial_plan_total})
        return config
