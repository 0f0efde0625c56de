"""`LayerwiseSchedule`: a tfmot PruningSchedule whose target lives in tf.Variables.

Units: every sparsity here is the **fraction of weights removed** (0 = dense,
0.9 = nine in ten weights are zero). Steps are tfmot ``pruning_step`` values,
which count *training calls of the wrapper* (one per optimizer step for a
model that calls each layer once per step).

Because the target, the ramp and the frequency are variables read inside the
traced train function, a callback can retarget a layer during ``model.fit``
without recompiling (`set`).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfprune._keras import keras
from tfprune.compat import PruningSchedule
from tfprune.validation import schedule_values

__all__ = ["LayerwiseSchedule", "as_schedule", "polynomial_sparsity", "ramp_tf", "update_due_tf"]


def polynomial_sparsity(step: float, initial: float, target: float, begin: int, end: int, power: float) -> float:
    """Reference (numpy-free) value of the ramp at ``step``.

    sparsity(step) = target + (initial - target) * (1 - p) ** power,
    p = clip((step - begin) / (end - begin), 0, 1); for end == begin the ramp
    is a jump to ``target`` at ``begin``. Before ``begin`` the value is
    ``initial`` (but no pruning happens there).
    """
    if end <= begin:
        p = 1.0 if step >= begin else 0.0
    else:
        p = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return target + (initial - target) * (1.0 - p) ** power


def update_due_tf(step: Any, begin: Any, end: Any, frequency: Any) -> Any:
    """In-graph: True at steps ``begin, begin + frequency, ...`` up to ``end``, and at ``end`` itself (int64 scalars)."""
    step = tf.cast(step, tf.int64)
    in_range = tf.logical_and(step >= begin, step <= end)
    on_turn = tf.logical_or(tf.equal(tf.math.floormod(step - begin, frequency), 0), tf.equal(step, end))
    return tf.logical_and(in_range, on_turn)


def ramp_tf(step: Any, begin: Any, end: Any, power: Any) -> Any:
    """In-graph ramp value in [0, 1] (float64): ``1 - (1 - p) ** power``, ``p = (step - begin) / (end - begin)`` clipped; 1 from ``end`` on.

    The one ramp of tfprune: a layer's sparsity is ``initial + (target - initial) * ramp``
    (`LayerwiseSchedule`) and a channel group has ``round(planned * ramp)`` channels masked
    (`tfprune.masks.channel_mask.ChannelMask`); its numpy twin is
    ``polynomial_sparsity(step, 0.0, 1.0, begin, end, power)``.
    """
    step = tf.cast(step, tf.int64)
    span = tf.cast(tf.maximum(end - begin, 1), tf.float64)
    p = tf.clip_by_value(tf.cast(step - begin, tf.float64) / span, 0.0, 1.0)
    r = 1.0 - tf.pow(1.0 - p, tf.cast(power, tf.float64))
    return tf.where(step >= end, tf.constant(1.0, tf.float64), r)


def as_schedule(value: Any, owner: str) -> LayerwiseSchedule:
    """A wrapper's schedule argument as a `LayerwiseSchedule` (None: a default one; a dict: a saved config)."""
    if isinstance(value, dict):
        value = keras.utils.deserialize_keras_object(value, custom_objects={"LayerwiseSchedule": LayerwiseSchedule})
    schedule = value if value is not None else LayerwiseSchedule()
    if not isinstance(schedule, LayerwiseSchedule):
        raise TypeError(f"{owner} needs a tfprune.LayerwiseSchedule, got {type(schedule).__name__}")
    return schedule


class LayerwiseSchedule(PruningSchedule):
    """Polynomial ramp from ``initial_sparsity`` to ``target_sparsity``.

    Args:
      target_sparsity: fraction of the layer's weights removed at and after
        ``end_step``, in [0, 1).
      begin_step: first pruning step (tfmot ``pruning_step``, >= 0).
      end_step: step at which ``target_sparsity`` is reached (>= begin_step).
      frequency: masks are recomputed every ``frequency`` steps from
        ``begin_step`` **and always at ``end_step``**, so the exact target is
        reached even when ``end_step - begin_step`` is not a multiple of it.
      initial_sparsity: sparsity at ``begin_step``, in [0, 1).
      power: exponent of the polynomial ramp (3 = fast early, slow late, as
        in Zhu & Gupta 2017; 1 = linear). > 0.

    Every value is held in a ``tf.Variable``; `set` changes any of them and
    the change is seen by an already-compiled train function.
    """

    def __init__(
        self,
        target_sparsity: float = 0.0,
        begin_step: int = 0,
        end_step: int = 1000,
        frequency: int = 10,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
    ) -> None:
        values = self._validated(target_sparsity, begin_step, end_step, frequency, initial_sparsity, power)
        with tf.init_scope():
            self._target = tf.Variable(values["target_sparsity"], trainable=False, dtype=tf.float64, name="target_sparsity")
            self._initial = tf.Variable(values["initial_sparsity"], trainable=False, dtype=tf.float64, name="initial_sparsity")
            self._begin = tf.Variable(values["begin_step"], trainable=False, dtype=tf.int64, name="begin_step")
            self._end = tf.Variable(values["end_step"], trainable=False, dtype=tf.int64, name="end_step")
            self._frequency = tf.Variable(values["frequency"], trainable=False, dtype=tf.int64, name="frequency")
            self._power = tf.Variable(values["power"], trainable=False, dtype=tf.float32, name="power")

    _FIELDS = (
        ("_target", "target_sparsity", tf.float64),
        ("_initial", "initial_sparsity", tf.float64),
        ("_begin", "begin_step", tf.int64),
        ("_end", "end_step", tf.int64),
        ("_frequency", "frequency", tf.int64),
        ("_power", "power", tf.float32),
    )

    def bind(self, layer: Any) -> None:
        """Move every value into weights of ``layer`` (a pruning wrapper), keeping the current values.

        After this the values are saved and restored with the model's weights
        (``save``, ``save_weights``, checkpoints), under ``<layer>/schedule_<field>``.
        """
        for attr, field_name, dtype in self._FIELDS:
            old = getattr(self, attr)
            if any(old is w for w in layer.weights):
                continue
            new = layer.add_weight(f"schedule_{field_name}", shape=[], dtype=dtype, trainable=False,
                                   initializer=keras.initializers.Constant(old.numpy()))
            new.assign(old.numpy())
            setattr(self, attr, new)

    # ----------------------------------------------------------------- values
    @staticmethod
    def _validated(target_sparsity, begin_step, end_step, frequency, initial_sparsity, power) -> dict:
        return schedule_values(target_sparsity, begin_step, end_step, frequency, initial_sparsity, power)

    @property
    def target_sparsity(self) -> float:
        return float(self._target.numpy())

    @property
    def initial_sparsity(self) -> float:
        return float(self._initial.numpy())

    @property
    def begin_step(self) -> int:
        return int(self._begin.numpy())

    @property
    def end_step(self) -> int:
        return int(self._end.numpy())

    @property
    def frequency(self) -> int:
        return int(self._frequency.numpy())

    @property
    def power(self) -> float:
        return float(self._power.numpy())

    def set(self, **kwargs: Any) -> None:
        """Change any of the constructor's values (validated as a whole).

        Example: ``schedule.set(target_sparsity=0.8, end_step=500)``.
        """
        unknown = set(kwargs) - set(self.get_config()["config"])
        if unknown:
            raise TypeError(f"unknown schedule field(s) {sorted(unknown)}; valid: {sorted(self.get_config()['config'])}")
        merged = {**self.get_config()["config"], **kwargs}
        values = self._validated(**merged)
        self._target.assign(values["target_sparsity"])
        self._initial.assign(values["initial_sparsity"])
        self._begin.assign(values["begin_step"])
        self._end.assign(values["end_step"])
        self._frequency.assign(values["frequency"])
        self._power.assign(values["power"])

    # --------------------------------------------------------------- schedule
    def __call__(self, step):
        """Return ``(should_prune, sparsity)`` tensors for tfmot's wrapper."""
        step = tf.cast(step, tf.int64)
        begin, end = self._begin, self._end
        should_prune = update_due_tf(step, begin, end, self._frequency)
        span = tf.cast(tf.maximum(end - begin, 1), tf.float32)
        p = tf.clip_by_value(tf.cast(step - begin, tf.float32) / span, 0.0, 1.0)
        p = tf.where(step >= end, tf.constant(1.0), p)
        target = tf.cast(self._target, tf.float32)
        initial = tf.cast(self._initial, tf.float32)
        ramp = target + (initial - target) * tf.pow(1.0 - p, self._power)
        # At and after end_step return the target itself (no rounding drift).
        sparsity = tf.where(step >= end, target, ramp)
        return should_prune, sparsity

    def get_config(self) -> dict:
        return {
            "class_name": self.__class__.__name__,
            "config": {
                "target_sparsity": self.target_sparsity,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
                "initial_sparsity": self.initial_sparsity,
                "power": self.power,
            },
        }

    def __repr__(self) -> str:
        c = self.get_config()["config"]
        return "LayerwiseSchedule(" + ", ".join(f"{k}={v!r}" for k, v in c.items()) + ")"


keras.utils.get_custom_objects().setdefault("LayerwiseSchedule", LayerwiseSchedule)
