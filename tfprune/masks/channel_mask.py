"""`ChannelMask`: the wrapper that masks a layer's output channels for coupled channel-group pruning.

Under ``granularity="channel"`` `tfprune.wrap` puts a `ChannelMask` on every
layer with weights whose output carries channels of a prunable dependency
group (`tfprune.channel_graph`): the producers (Conv, Dense, ConvTranspose,
SeparableConv, Embedding), depthwise convolutions and BatchNormalization
(whose shift ``beta`` would otherwise turn a zero channel into a constant).
The wrapper multiplies the layer's output by a keep-vector (1 = keep, 0 =
masked), which equals zeroing the channel's filter and bias (or ``gamma``,
``beta`` and moving mean) and is how `strip` folds it back into the weights.

The keep-vector is computed **inside the train step**, like tfmot's weight
masks, from values saved as weights of the wrapper, so a resumed run
(``.keras``, ``.h5``, ``save_weights``, ``ModelCheckpoint``, ``BackupAndRestore``)
continues exactly, ``steps_per_execution > 1`` gives the masks of 1, and
every replica of a ``MirroredStrategy`` computes the same masks:

* ``rank`` (C,): the channel's place in its group's removal order (0 is
  removed first; a channel never removed holds a large number);
* ``count`` (C,): how many channels its group loses at the end of the ramp;
* the ramp (``begin_step``, ``end_step``, ``frequency``, ``power``) in a
  bound `LayerwiseSchedule`, and ``pruning_step`` (training calls, as in
  tfmot's wrapper).

At every update step ``t`` (``begin_step + k * frequency`` and ``end_step``),
channel ``c`` is masked when ``rank[c] < floor(count[c] * ramp(t) + 0.5)``
(`tfprune.masks.schedule.ramp_tf`). Every layer of a group holds the same ranks and
counts for the group's channels (the callback writes them), so the whole
group masks the same channels at the same step, with no communication
between layers; a tensor that carries several groups (after a Concatenate)
simply holds each channel's own group's values. Ranks are fixed for the ramp,
so a masked channel stays masked.

Units: ``count`` in channels; ``rank`` in channels (0-based);
``schedule.target_sparsity`` is reported as the fraction of this layer's
output channels masked at the end of the ramp.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune._keras import keras
from tfprune.masks.schedule import LayerwiseSchedule, as_schedule, ramp_tf, update_due_tf

__all__ = ["ChannelMask", "CHANNEL_MASK_PREFIX", "NEVER", "fold_keep", "foldable", "keep_vector"]

CHANNEL_MASK_PREFIX = "channel_mask_"
#: ``rank`` of a channel that is never removed.
NEVER = 2**40

L = keras.layers


_FOLDABLE = {"Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D", "Embedding", "Conv1DTranspose",
             "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D"}


def foldable(layer: Any) -> bool:
    """True when `fold_keep` knows which weights of ``layer`` carry its output channels (channels-last layers; tf-keras or Keras 3)."""
    kinds = {cls.__name__ for cls in type(layer).__mro__ if cls.__module__.startswith(("tf_keras", "keras"))}
    if "BatchNormalization" in kinds:
        return True  # channel_graph only lets a BatchNormalization over the channel axis into a group
    if kinds & _FOLDABLE:
        return getattr(layer, "data_format", "channels_last") in (None, "channels_last")
    return False


def _scale(values: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = keep.size
    return values * keep.reshape(shape).astype(values.dtype)


def fold_keep(layer: Any, keep: np.ndarray) -> list[np.ndarray]:
    """The weights of ``layer`` with its masked output channels zeroed (what the keep-vector does to the output).

    Args:
      layer: a built layer that `foldable` accepts.
      keep: (C_out,) 0/1 per output channel.

    Returns ``layer.get_weights()`` with, per type: the kernel's output axis and
    the bias (Conv, Dense, SeparableConv's pointwise kernel, Embedding's
    columns), axis -2 of a transposed convolution's kernel, a depthwise
    kernel's (channel, multiplier) output and bias, BatchNormalization's
    ``gamma``, ``beta`` and moving mean (the variance is left as it is).
    """
    keep = np.asarray(keep, dtype=np.float64).reshape(-1)
    kinds = {cls.__name__ for cls in type(layer).__mro__}  # by class name: tf-keras and Keras 3 layers alike
    out = []
    for w in layer.weights:
        name = w.name.split("/")[-1].split(":")[0]
        v = np.asarray(w.numpy())
        if "BatchNormalization" in kinds:
            v = _scale(v, keep, 0) if name in ("gamma", "beta", "moving_mean") else v
        elif name == "bias":
            v = _scale(v, keep, 0)
        elif kinds & {"DepthwiseConv1D", "DepthwiseConv2D"} and name == "depthwise_kernel":
            v = (v.reshape(v.shape[:-2] + (-1,)) * keep.astype(v.dtype)).reshape(v.shape)
        elif kinds & {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"} and name == "kernel":
            v = _scale(v, keep, v.ndim - 2)
        elif name in ("kernel", "pointwise_kernel", "embeddings"):
            v = _scale(v, keep, v.ndim - 1)
        out.append(v)
    return out


def keep_vector(rank: np.ndarray, count: np.ndarray, ramp: float) -> np.ndarray:
    """Numpy twin of `ChannelMask.keep_at`: 1 where ``rank >= floor(count * ramp + 0.5)``, else 0 (float32, shape of ``rank``).

    Args:
      rank: (C,) place of each channel in its group's removal order (0 first; `NEVER` for kept channels).
      count: (C,) channels its group loses at the end of the ramp.
      ramp: the ramp value in [0, 1] (`tfprune.masks.schedule.polynomial_sparsity(step, 0, 1, begin, end, power)`).
    """
    n = np.floor(np.asarray(count, dtype=np.float64) * float(ramp) + 0.5)
    return (np.asarray(rank, dtype=np.float64) >= n).astype(np.float32)


class ChannelMask(L.Wrapper):
    """Multiply a layer's output channels by a keep-vector computed in the train step (see the module docstring).

    Args:
      layer: the layer whose output channels are masked (channels last).
      pruning_schedule: the ramp (`LayerwiseSchedule`); its values become
        weights of this wrapper when built.
      plan_total: the plan's requested total (fraction of MACs or params
        removed; -1: no plan yet). Bookkeeping for resume.
      budget: what ``plan_total`` is a fraction of (``"macs"`` or ``"params"``).
    """

    masks_output_channels = True  # read by tfprune.inventory (which does not import this module): the inner layer is listed as itself

    def __init__(self, layer: Any, pruning_schedule: LayerwiseSchedule | dict | None = None, plan_total: float = -1.0,
                 budget: str = "macs", **kwargs: Any) -> None:
        schedule = as_schedule(pruning_schedule, "ChannelMask")
        name = kwargs.pop("name", None)
        super().__init__(layer, name=name if name is not None else CHANNEL_MASK_PREFIX + layer.name, **kwargs)
        self.pruning_schedule = schedule
        self._initial_plan_total = float(plan_total)
        self.budget = str(budget)

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        out_shape = self.layer.compute_output_shape(input_shape)
        channels = int(tf.TensorShape(out_shape)[-1])
        self.channels = channels
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.pruning_step = self.add_weight("pruning_step", shape=[], dtype=tf.int64, trainable=False,
                                            initializer=keras.initializers.Constant(0), aggregation=first)
        self.keep = self.add_weight("keep", shape=[channels], dtype=self.layer.dtype or tf.float32, trainable=False,
                                    initializer=keras.initializers.get("ones"), aggregation=first)
        self.rank = self.add_weight("rank", shape=[channels], dtype=tf.int64, trainable=False,
                                    initializer=keras.initializers.Constant(NEVER), aggregation=first)
        self.count = self.add_weight("count", shape=[channels], dtype=tf.int64, trainable=False,
                                     initializer=keras.initializers.Constant(0), aggregation=first)
        self.plan_total = self.add_weight("plan_total", shape=[], dtype=tf.float64, trainable=False,
                                          initializer=keras.initializers.Constant(self._initial_plan_total), aggregation=first)
        self.pruning_schedule.bind(self)
        super().build(input_shape)

    # ------------------------------------------------------------ the graph
    def keep_at(self, step: Any) -> Any:
        """In-graph keep-vector (C,) at ``step``: 0 where ``rank < floor(count * ramp(step) + 0.5)``."""
        s = self.pruning_schedule
        r = ramp_tf(step, s._begin, s._end, s._power)
        n = tf.floor(tf.cast(self.count, tf.float64) * r + 0.5)
        return tf.cast(tf.cast(self.rank, tf.float64) >= n, self.keep.dtype)

    def update_op(self, training: Any = True) -> Any:
        """Add ``training`` (1 or 0) to the step; at an update step recompute ``keep`` (in the graph).

        No assignment sits inside control flow: under a distribution strategy an
        assignment to these variables synchronises the replicas (``merge_call``),
        which TensorFlow does not allow inside ``tf.cond``.
        """
        s = self.pruning_schedule
        on = tf.cast(training, tf.bool)
        step = self.pruning_step.assign_add(tf.cast(on, tf.int64))
        due = tf.logical_and(on, update_due_tf(step, s._begin, s._end, s._frequency))
        return self.keep.assign(tf.where(due, self.keep_at(step), self.keep))

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)):
            keep = self.update_op() if training else self.keep
        else:
            keep = self.update_op(training)
        if "training" in inspect.getfullargspec(self.layer.call).args:
            out = self.layer.call(inputs, training=training, **kwargs)
        else:
            out = self.layer.call(inputs, **kwargs)
        return out * tf.cast(keep, out.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------------ python side
    def masked(self) -> np.ndarray:
        """Indices of the output channels masked now (sorted)."""
        return np.flatnonzero(self.keep.numpy() == 0)

    def folded_weights(self) -> list[np.ndarray]:
        """The inner layer's weights with the masked channels zeroed (`fold_keep`)."""
        return fold_keep(self.layer, self.keep.numpy())

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "pruning_schedule": self.pruning_schedule.get_config(),
            "plan_total": float(self.plan_total.numpy()) if self.built else self._initial_plan_total,
            "budget": self.budget,
        })
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> ChannelMask:
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


keras.utils.get_custom_objects().setdefault("ChannelMask", ChannelMask)
