"""`PruneLayer`: tfmot's pruning wrapper with tfprune's mask rules and a saved schedule.

What it adds to ``tfmot.sparsity.keras.PruneLowMagnitude``:

* **Mask rules in the graph.** The mask is recomputed inside the traced
  train step by the rule in `tfprune.masks.granularity` (unstructured, block,
  N:M, frozen), chosen by an integer ``rule`` variable, so a
  callback can switch rules without recompiling, ``steps_per_execution > 1``
  works, and nothing is set from Python between batches.
* **The schedule is saved with the model.** The `LayerwiseSchedule`'s values
  (target, ramp, frequency) and the plan's bookkeeping (``plan_sparsity``:
  the total the plan was made for, -1 before any plan) are weights of the
  wrapper, so full saves, ``save_weights``, ``ModelCheckpoint(save_weights_only=True)``
  and ``BackupAndRestore`` restore them along with the masks and the step.

The layer keeps tfmot's name prefix (``prune_low_magnitude_<name>``), its
step counting (``pruning_step`` counts training calls of the wrapper) and its
``pruning_vars`` list (kernel first).
"""

from __future__ import annotations

import inspect
from typing import Any

import tensorflow as tf

from tfprune._keras import keras
from tfprune.compat import PruneLowMagnitude, TfmotPruning
from tfprune.masks.granularity import RULE_IDS, Granularity, mask_tf, parse_granularity
from tfprune.masks.schedule import LayerwiseSchedule, as_schedule

WRAPPER_PREFIX = "prune_low_magnitude_"

__all__ = ["PruneLayer", "RulePruning"]

_RULES = {v: k for k, v in RULE_IDS.items()}


class RulePruning(TfmotPruning):
    """tfmot's `Pruning` whose mask update follows the wrapper's rule variable."""

    def __init__(self, wrapper: PruneLayer, **kwargs: Any) -> None:
        super().__init__(block_size=(1, 1), block_pooling_type="AVG", **kwargs)
        self._wrapper = wrapper

    def _kernel_mask(self, weights: Any, sparsity: Any) -> Any:
        w = self._wrapper
        rule = tf.cast(w.rule, tf.int32)

        def branch(kind: str) -> Any:
            if kind == "frozen":
                return lambda: tf.identity(w.pruning_vars[0][1])
            g = Granularity(kind, tuple(w.block_size_), w.n_m[0], w.n_m[1])
            return lambda: mask_tf(weights, sparsity, g, transpose=w.transpose)

        return tf.switch_case(rule, [branch(_RULES[i]) for i in range(len(_RULES))])

    def _maybe_update_block_mask(self, weights: Any) -> tuple[Any, Any]:
        """(threshold, mask) for the kernel, by the wrapper's rule (tfmot's hook; the threshold is unused)."""
        sparsity = self._pruning_schedule(self._step_fn())[1]
        return tf.zeros([], weights.dtype), self._kernel_mask(weights, sparsity)


def _refuse_channel(g: Granularity) -> None:
    if g.kind == "channel":
        raise ValueError("PruneLayer masks weights of one layer; channels are removed by coupled groups. Fix: "
                         "tfprune.wrap(model, granularity='channel') (ChannelMask wrappers) and tfprune.Pruning(macs=...)")


class PruneLayer(PruneLowMagnitude):
    """A tfmot pruning wrapper driven by a `LayerwiseSchedule` and a tfprune mask rule.

    Args:
      layer: the Keras layer to prune (any layer tfmot can prune).
      pruning_schedule: a `LayerwiseSchedule` (its values become weights of
        this wrapper when it is built).
      granularity: the starting rule (``unstructured``, ``block``,
        ``channel``, ``N:M`` or ``frozen``); callbacks may switch it.
      block_size: blocks of the ``block`` rule (Dense kernels).
      n_m: ``(N, M)`` of the ``N:M`` rule.
      plan_sparsity: the total sparsity of the plan that set this layer's
        target (-1: none yet). Bookkeeping for resume.
    """

    def __init__(
        self,
        layer: Any,
        pruning_schedule: LayerwiseSchedule | None = None,
        granularity: str = "unstructured",
        block_size: tuple[int, int] = (4, 1),
        n_m: tuple[int, int] = (2, 4),
        plan_sparsity: float = -1.0,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("block_pooling_type", None)
        kwargs.pop("sparsity_m_by_n", None)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"PruneLayer wraps a Keras layer, got {layer!r} ({type(layer).__name__}). "
                            "Fix: tfprune.PruneLayer(keras.layers.Dense(10))")
        from tfprune.inventory.layers import weight_kind

        if weight_kind(layer) is None and not callable(getattr(layer, "get_prunable_weights", None)):
            raise ValueError(f"PruneLayer: {type(layer).__name__} {layer.name!r} has no weight tfprune prunes. Fix: wrap Dense, Conv, "
                             "SeparableConv (pointwise), ConvTranspose or Embedding layers (or a layer with tfmot's get_prunable_weights)")
        schedule = as_schedule(pruning_schedule, "PruneLayer")
        name = kwargs.pop("name", None)
        super().__init__(layer, pruning_schedule=schedule, block_size=(1, 1), **kwargs)
        self._name = name if name is not None else WRAPPER_PREFIX + layer.name
        if isinstance(granularity, int):
            granularity = _RULES[granularity]
        if granularity == "n:m":  # as written by get_config
            granularity = f"{int(n_m[0])}:{int(n_m[1])}"
        g = parse_granularity(granularity, tuple(block_size))
        _refuse_channel(g)
        self.granularity_ = g.kind
        self.block_size_ = tuple(int(b) for b in block_size)
        self.n_m = (int(n_m[0]), int(n_m[1])) if g.kind != "n:m" else (g.n, g.m)
        self.transpose = "Transpose" in type(layer).__name__
        self._initial_plan_sparsity = float(plan_sparsity)
        self.as_layer = False  # True: compute as the inner layer alone (`tfprune.masks.wrapping.masked_inference`)

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        """tfmot's call (mask update in training, masks applied), or with ``as_layer`` the inner layer's call alone.

        ``as_layer`` is read when the call is traced: set it only around a
        fresh trace (an export) on masked weights, as `masked_inference` does.
        """
        if not self.as_layer:
            return super().call(inputs, training=training, **kwargs)
        if "training" in inspect.getfullargspec(self.layer.call).args:
            return self.layer.call(inputs, training=training, **kwargs)
        return self.layer.call(inputs, **kwargs)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.pruning_step.assign(0)  # tfmot starts at -1 to demand its callback; tfprune's wrapper trains without one
        self.rule = self.add_weight("rule", shape=[], dtype=tf.int64, trainable=False,
                                    initializer=keras.initializers.Constant(RULE_IDS[self.granularity_]))
        self.plan_sparsity = self.add_weight("plan_sparsity", shape=[], dtype=tf.float64, trainable=False,
                                             initializer=keras.initializers.Constant(self._initial_plan_sparsity))
        self.pruning_schedule.bind(self)
        def training_step_fn() -> Any:
            return self.pruning_step

        self.pruning_obj = RulePruning(
            self,
            training_step_fn=training_step_fn,
            pruning_vars=self.pruning_vars,
            pruning_schedule=self.pruning_schedule,
        )

    # ------------------------------------------------------------ rule access
    @property
    def granularity(self) -> str:
        """The rule in force now (reads the variable once built)."""
        if not self.built:
            return self.granularity_
        return _RULES[int(self.rule.numpy())]

    def set_granularity(self, granularity: str | Granularity) -> None:
        """Switch the mask rule (no recompilation needed). ``N:M`` must match this wrapper's ``n_m``."""
        g = parse_granularity(granularity, self.block_size_)
        _refuse_channel(g)
        if g.kind == "n:m" and (g.n, g.m) != self.n_m:
            raise ValueError(
                f"layer {self.layer.name!r} was wrapped for {self.n_m[0]}:{self.n_m[1]}, not {g.name}. "
                f"Fix: wrap again with tfprune.wrap(model, granularity='{g.name}')."
            )
        if g.kind == "block" and g.block_size != self.block_size_:
            raise ValueError(
                f"layer {self.layer.name!r} was wrapped with block_size={self.block_size_}, not {g.block_size}. "
                f"Fix: wrap again with tfprune.wrap(model, block_size={g.block_size})."
            )
        self.granularity_ = g.kind
        if self.built:
            self.rule.assign(g.rule_id)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("block_pooling_type", None)
        config.update({
            "granularity": self.granularity,
            "block_size": list(self.block_size_),
            "n_m": list(self.n_m),
            "plan_sparsity": float(self.plan_sparsity.numpy()) if self.built else self._initial_plan_sparsity,
            "name": self.name,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> PruneLayer:
        config = dict(config)
        schedule = config.pop("pruning_schedule")
        if isinstance(schedule, dict):
            schedule = keras.utils.deserialize_keras_object(schedule, custom_objects={"LayerwiseSchedule": LayerwiseSchedule})
        layer = keras.layers.deserialize(config.pop("layer"))
        return cls(layer, pruning_schedule=schedule, **config)


keras.utils.get_custom_objects().setdefault("PruneLayer", PruneLayer)
