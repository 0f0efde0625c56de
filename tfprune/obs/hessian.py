"""Per-layer Hessians H = (1/n) sum x x^T of the layer error, from the unpruned network.

Rows of H follow the layer's kernel reshaped to (fan_in, fan_out): Dense
inputs; Conv2D unfolded patches in ``tf.image.extract_patches`` order
(kh, kw, c_in) with the layer's own stride, padding and dilation, averaged
over batch and output positions; Conv1D as a Conv2D of height 1. With a
bias the last row/column is the constant 1. Accumulated in float64,
streamed over batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfprune import data as _data
from tfprune._keras import keras

__all__ = ["supported", "hessian_dim", "unfold", "layer_hessians", "estimate_bytes"]


def supported(layer: Any) -> bool:
    return type(layer) in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D)


def hessian_dim(layer: Any) -> int:
    """Rows of the layer's Hessian: fan_in (+1 with a bias)."""
    k = layer.kernel.shape
    fan_in = int(np.prod(k[:-1]))
    return fan_in + (1 if layer.use_bias else 0)


def estimate_bytes(layer: Any) -> int:
    """float64 bytes of H plus its inverse (what pruning holds at once)."""
    d = hessian_dim(layer)
    return 2 * 8 * d * d


def unfold(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """The layer's inputs as rows (n_rows, fan_in) matching ``kernel.reshape(fan_in, fan_out)``."""
    if isinstance(layer, keras.layers.Conv1D) and not isinstance(layer, keras.layers.Conv2D):
        x = tf.expand_dims(x, 1)  # (b, 1, length, c)
        kh, kw = 1, layer.kernel_size[0]
        sh, sw = 1, layer.strides[0]
        dh, dw = 1, layer.dilation_rate[0]
        padding = layer.padding
    elif isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        dh, dw = layer.dilation_rate
        padding = layer.padding
    else:  # Dense
        x = tf.convert_to_tensor(x)
        return tf.reshape(x, (-1, x.shape[-1]))
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: only channels_last convolutions are supported")
    if padding == "causal":
        raise ValueError(f"layer {layer.name!r}: causal padding is not supported")
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, dh, dw, 1], padding=padding.upper())
    return tf.reshape(patches, (-1, patches.shape[-1]))


def layer_hessians(
    model: Any,
    layer_names: list[str],
    data: Any,
    batch_size: int = 256,
    n_samples: int | None = None,
    max_bytes: int = 2 * 1024**3,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """H for each named top-level layer of ``model`` (a plain, unwrapped model).

    ``data``: inputs in any form `tfprune.data` reads (``x``, ``(x, y)``, a
    dataset or generator); labels are not needed. At most ``n_samples`` are used.

    Refuses (ValueError) a layer whose H and inverse would need more than
    ``max_bytes``, before doing any work.
    """
    layers = []
    for name in layer_names:
        layer = model.get_layer(name)
        if not supported(layer):
            raise ValueError(f"layer {name!r} ({type(layer).__name__}) is not supported by OBS (Dense, Conv1D, Conv2D)")
        need = estimate_bytes(layer)
        if need > max_bytes:
            raise ValueError(
                f"layer {name!r}: its Hessian is {hessian_dim(layer)}x{hessian_dim(layer)} and needs {need / 2**30:.2f} GiB "
                f"(H and its inverse in float64), over max_bytes={max_bytes / 2**30:.2f} GiB. Fix: exclude it from OBS "
                "(prune it by magnitude), or raise max_bytes if the memory is there."
            )
        try:
            _ = layer.input
        except (AttributeError, ValueError) as err:
            raise ValueError(f"layer {name!r} is shared or nested; OBS needs a single call site in a flat model") from err
        layers.append(layer)
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    H = {layer.name: np.zeros((hessian_dim(layer),) * 2) for layer in layers}
    counts = {layer.name: 0 for layer in layers}
    it = _data.batches(data, batch_size, n_samples)
    if progress:
        from tqdm.auto import tqdm

        n_rows = _data.size(data)
        total = None if n_rows is None else int(np.ceil(min(n_rows, n_samples or 1 << 62) / batch_size))
        it = tqdm(it, total=total, desc="Hessians", leave=False)
    for xb, _, _ in it:
        outs = probe(xb, training=False)
        if len(layers) == 1:
            outs = [outs]
        for layer, a in zip(layers, outs):
            rows = tf.cast(unfold(layer, a), tf.float64)
            if layer.use_bias:
                rows = tf.concat([rows, tf.ones((tf.shape(rows)[0], 1), tf.float64)], axis=1)
            H[layer.name] += tf.matmul(rows, rows, transpose_a=True).numpy()
            counts[layer.name] += int(rows.shape[0])
    for name in H:
        if counts[name] == 0:
            raise ValueError("no calibration data was seen")
        H[name] /= counts[name]
    return H
