"""`recalibrate_batchnorm`: re-estimate BatchNorm moving statistics after channels are removed.

Removing channels changes what every later layer sees, so the moving mean and
variance a BatchNormalization layer learnt on the dense model no longer match
its inputs: a shrunk ResNet can drop to chance accuracy in inference mode
although its weights are fine ("adaptive BN", Li et al., EagleEye, ECCV 2020).
Fine-tuning fixes them only slowly (momentum 0.99 keeps ``0.99**k`` of the
stale value after ``k`` steps). Here the statistics are recomputed from a few
batches of training inputs: forward passes in training mode, with each BN
layer's momentum set so its moving statistics become the **plain average**
of the batch statistics (`cumulative_momentum`). Weights are not touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune._keras import keras

__all__ = ["batchnorm_layers", "cumulative_momentum", "recalibrate_batchnorm"]


def cumulative_momentum(k: int) -> float:
    """Momentum for batch ``k`` (from 0) that makes ``m <- m * mom + b_k * (1 - mom)`` the mean of ``b_0..b_k``: ``k / (k + 1)``."""
    if k < 0:
        raise ValueError(f"batch index must be >= 0, got {k}")
    return k / (k + 1.0)


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model`` (nested models included) that runs in training mode when trained
    (``trainable=True``; a frozen BN layer always normalises with its moving statistics in tf-keras)."""
    bn_cls = keras.layers.BatchNormalization
    seen: set[int] = set()
    out = []
    for layer in [model, *model.submodules]:
        if isinstance(layer, bn_cls) and id(layer) not in seen and layer.trainable:
            seen.add(id(layer))
            out.append(layer)
    return out


def recalibrate_batchnorm(model: Any, x: Any, batch_size: int = 128, max_samples: int = 2048) -> int:
    """Recompute the moving mean/variance of ``model``'s BatchNormalization layers from inputs ``x``, **in place**.

    Args:
      model: a tf-keras model; only the BN layers' ``moving_mean`` and
        ``moving_variance`` change (weights, trainable state, momentum are
        left as they were).
      x: input array (or list/dict of arrays for several inputs) with the
        batch on axis 0; no labels needed.
      batch_size: samples per forward pass (training-mode batch statistics).
      max_samples: use at most this many samples (from the start of ``x``).

    Returns the number of BN layers recalibrated (0: none, nothing changed).
    Dropout layers are active during these passes (training mode), as when
    the statistics were first learnt.
    """
    import tensorflow as tf

    if batch_size < 1 or max_samples < 1:
        raise ValueError(f"batch_size and max_samples must be >= 1, got {batch_size}, {max_samples}")
    bns = batchnorm_layers(model)
    if not bns:
        return 0
    flat = tf.nest.flatten(x)
    n = min(int(np.shape(flat[0])[0]), int(max_samples))
    if n == 0:
        raise ValueError("recalibrate_batchnorm needs at least one input sample")
    momenta = [layer.momentum for layer in bns]
    try:
        for layer in bns:
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        for k, start in enumerate(range(0, n, batch_size)):
            for layer in bns:
                layer.momentum = cumulative_momentum(k)
            rows = slice(start, min(start + batch_size, n))
            batch = tf.nest.map_structure(lambda a, rows=rows: tf.convert_to_tensor(np.asarray(a[rows])), x)
            model(batch, training=True)
    finally:
        for layer, m in zip(bns, momenta):
            layer.momentum = m
    return len(bns)
