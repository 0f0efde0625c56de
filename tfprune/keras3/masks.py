"""The mask rules in ``keras.ops``: run inside a Keras 3 train step on any backend.

Each function is the twin of a numpy reference in `tfprune.masks.granularity`
(same units, same result, ties broken by index) and of the TensorFlow version
the tf-keras wrapper runs: ``sparsity`` is the **fraction of units removed**.
Sorting is stable on every backend (`stable_argsort`), so equal scores (the
zeros of already pruned weights) are ranked by index as in numpy.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfprune.masks.granularity import Granularity, layer_units

__all__ = ["stable_argsort", "mask_ops", "update_due_ops", "ramp_sparsity_ops"]


def stable_argsort(x: Any, axis: int = -1) -> Any:
    """``argsort`` that keeps equal values in index order (``keras.ops.argsort`` is not stable on TensorFlow).

    TensorFlow: ``tf.argsort(stable=True)``; JAX and numpy sort stably. On
    PyTorch (untested here) ``keras.ops.argsort`` is used: equal scores may be
    ranked in another order there, which changes which of several equal
    weights (e.g. zeros) are masked, never how many.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.argsort(x, axis=axis, stable=True)
    return ops.argsort(x, axis=axis)


def _ranks(scores: Any, axis: int = -1) -> Any:
    """Rank of every entry along ``axis`` (0 = smallest; ties by index)."""
    return stable_argsort(stable_argsort(scores, axis), axis)


def _kept(n_units: int, sparsity: Any) -> Any:
    """``max(round(n * (1 - s)), 1)`` as int32 (`tfprune.masks.granularity.kept_count`)."""
    return ops.cast(ops.maximum(ops.round(float(n_units) * (1.0 - ops.cast(sparsity, "float32"))), 1.0), "int32")


def mask_ops(kernel: Any, sparsity: Any, g: Granularity, transpose: bool = False) -> Any:
    """The rule ``g`` on ``kernel`` (static shape) at ``sparsity``: a {0, 1} mask of its shape and dtype.

    ``unstructured``: keep the ``kept_count`` largest |w|; ``block``: 2-D
    kernels in ``g.block_size`` blocks scored by mean |w| (other shapes fall
    back to unstructured); ``n:m``: in every group of M consecutive input
    weights of one output zero the ``min(floor(s * M), M - N)`` smallest.
    """
    shape = tuple(int(d) for d in kernel.shape)
    dtype = kernel.dtype
    a = ops.abs(ops.cast(kernel, "float32"))
    kind = g.kind
    if kind == "block" and (len(shape) != 2 or shape[0] % g.block_size[0] or shape[1] % g.block_size[1]):
        kind = "unstructured"
    if kind == "n:m" and layer_units(shape, g, transpose)[2] is not None:
        kind = "unstructured"
    if kind == "unstructured":
        n = 1
        for d in shape:
            n *= d
        keep = _ranks(ops.reshape(a, (-1,)), 0) >= n - _kept(n, sparsity)
        return ops.cast(ops.reshape(keep, shape), dtype)
    if kind == "block":
        bh, bw = g.block_size
        h, w = shape
        pooled = ops.mean(ops.reshape(a, (h // bh, bh, w // bw, bw)), axis=(1, 3))
        n = (h // bh) * (w // bw)
        keep = ops.reshape(_ranks(ops.reshape(pooled, (-1,)), 0) >= n - _kept(n, sparsity), (h // bh, w // bw))
        keep = ops.repeat(ops.repeat(keep, bh, axis=0), bw, axis=1)
        return ops.cast(keep, dtype)
    if kind == "n:m":
        ax = len(shape) - 1 if transpose else len(shape) - 2
        moved = ops.moveaxis(a, ax, -1)
        mshape = tuple(int(d) for d in moved.shape)
        groups = ops.reshape(moved, (-1, g.m))
        zeros = ops.minimum(ops.cast(ops.floor(ops.cast(sparsity, "float32") * g.m + 1e-6), "int32"), g.m - g.n)
        keep = ops.cast(_ranks(groups, 1) >= zeros, dtype)
        return ops.moveaxis(ops.reshape(keep, mshape), -1, ax)
    raise ValueError(f"mask_ops: unsupported rule {g.kind!r} (frozen keeps the old mask; channels are coupled groups)")


def update_due_ops(step: Any, begin: Any, end: Any, frequency: Any) -> Any:
    """True at steps ``begin, begin + frequency, ...`` up to ``end``, and at ``end`` (`tfprune.masks.schedule.update_due_tf`)."""
    in_range = ops.logical_and(ops.greater_equal(step, begin), ops.less_equal(step, end))
    on_turn = ops.logical_or(ops.equal(ops.mod(step - begin, ops.maximum(frequency, 1)), 0), ops.equal(step, end))
    return ops.logical_and(in_range, on_turn)


def ramp_sparsity_ops(step: Any, initial: Any, target: Any, begin: Any, end: Any, power: Any) -> Any:
    """The polynomial ramp at ``step`` (`tfprune.masks.schedule.polynomial_sparsity`): ``target`` from ``end`` on."""
    span = ops.cast(ops.maximum(end - begin, 1), "float32")
    p = ops.clip(ops.cast(step - begin, "float32") / span, 0.0, 1.0)
    ramp = target + (initial - target) * ops.power(1.0 - p, power)
    return ops.where(ops.greater_equal(step, end), target, ramp)
