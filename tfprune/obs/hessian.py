"""Per-layer Hessians H = (1/n) sum x x^T of the layer error, from the unpruned network.

Rows of H follow the layer's kernel reshaped to (fan_in, fan_out): Dense
inputs; Conv2D unfolded patches in ``tf.image.extract_patches`` order
(kh, kw, c_in) with the layer's own stride, padding and dilation, averaged
over batch and output positions; Conv1D as a Conv2D of height 1. With a
bias the last row/column is the constant 1. Accumulated in float64,
streamed over batches: per batch X^T X in float64 (BLAS ``syrk`` through
numpy: one triangle, half a matmul's work) on one worker thread per core,
plus the column sums for the bias row.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from tfprune import data as _data
from tfprune._keras import keras

__all__ = ["supported", "hessian_dim", "unfold", "unfold_rows", "layer_hessians", "estimate_bytes", "layer_matrix", "set_layer_matrix"]


def layer_matrix(layer: Any) -> tuple[np.ndarray, int]:
    """A Dense / Conv layer's weights as the matrix its Hessian's rows follow, and its fan-in.

    Returns ``(W, F)``: ``W`` float64, shape ``(F, fan_out)`` (the kernel
    reshaped, ``F`` = fan-in, e.g. kh * kw * c_in) or ``(F + 1, fan_out)``
    with the bias as the last row when the layer has one.
    """
    k = layer.kernel.numpy().astype(np.float64)
    W = k.reshape(-1, k.shape[-1])
    F = W.shape[0]
    if layer.use_bias:
        W = np.vstack([W, layer.bias.numpy().astype(np.float64)[None, :]])
    return W, F


def set_layer_matrix(layer: Any, W: np.ndarray, F: int) -> None:
    """Write a `layer_matrix`-shaped ``W`` (``(F[+1], fan_out)``, fan-in ``F``) back into the layer's kernel (and bias), in the variables' dtype."""
    layer.kernel.assign(W[:F].reshape(layer.kernel.shape).astype(layer.kernel.dtype.as_numpy_dtype))
    if layer.use_bias:
        layer.bias.assign(W[F].astype(layer.bias.dtype.as_numpy_dtype))


def supported(layer: Any) -> bool:
    return type(layer) in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D)


def hessian_dim(layer: Any) -> int:
    """Rows of the layer's Hessian: fan_in (+1 with a bias)."""
    k = layer.kernel.shape
    fan_in = int(np.prod(k[:-1]))
    return fan_in + (1 if layer.use_bias else 0)


def estimate_bytes(layer: Any, solver: str = "exact") -> int:
    """Bytes pruning the layer holds at once: H and its inverse (float64), the layer matrix (three
    copies: original, working, result) and the solver's buffers (`exact`: one column's Schur
    complement and factors at least, see `solvers.exact_workspace_bytes`; `lobs`: one (d, d)
    gather for the joint solve)."""
    from tfprune.obs.solvers import exact_workspace_bytes

    d = hessian_dim(layer)
    n_out = int(layer.kernel.shape[-1])
    base = 2 * 8 * d * d + 3 * 8 * d * n_out
    if solver == "exact":
        return base + exact_workspace_bytes(d, 1)
    if solver == "lobs":
        return base + 2 * 8 * d * d
    return base


def _geometry(layer: Any) -> tuple | None:
    """(kh, kw, sh, sw, dh, dw, padding, is_1d) of a convolution, None for Dense."""
    if isinstance(layer, keras.layers.Conv1D) and not isinstance(layer, keras.layers.Conv2D):
        g = (1, layer.kernel_size[0], 1, layer.strides[0], 1, layer.dilation_rate[0], layer.padding, True)
    elif isinstance(layer, keras.layers.Conv2D):
        g = (*layer.kernel_size, *layer.strides, *layer.dilation_rate, layer.padding, False)
    else:
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: only channels_last convolutions are supported")
    if g[6] == "causal":
        raise ValueError(f"layer {layer.name!r}: causal padding is not supported")
    return g


def unfold(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """The layer's inputs as rows (n_rows, fan_in) matching ``kernel.reshape(fan_in, fan_out)``."""
    g = _geometry(layer)
    if g is None:  # Dense
        x = tf.convert_to_tensor(x)
        return tf.reshape(x, (-1, x.shape[-1]))
    kh, kw, sh, sw, dh, dw, padding, is_1d = g
    if is_1d:
        x = tf.expand_dims(x, 1)  # (b, 1, length, c)
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, dh, dw, 1], padding=padding.upper())
    return tf.reshape(patches, (-1, patches.shape[-1]))


def unfold_rows(layer: Any, x: np.ndarray) -> np.ndarray:
    """`unfold` in numpy, as float64 rows (one strided copy; what `layer_hessians` multiplies)."""
    x = np.asarray(x)
    g = _geometry(layer)
    if g is None:
        return np.asarray(x.reshape(-1, x.shape[-1]), dtype=np.float64)
    kh, kw, sh, sw, dh, dw, padding, is_1d = g
    if is_1d:
        x = x[:, None]
    size = [x.shape[1], x.shape[2]]
    ext = [(kh - 1) * dh + 1, (kw - 1) * dw + 1]
    if padding == "same":  # TF's SAME: out = ceil(in / stride), the odd pixel of padding at the bottom / right
        out = [-(-size[0] // sh), -(-size[1] // sw)]
        pads = [max((o - 1) * s + e - n, 0) for o, s, e, n in zip(out, (sh, sw), ext, size)]
        x = np.pad(x, ((0, 0), (pads[0] // 2, pads[0] - pads[0] // 2), (pads[1] // 2, pads[1] - pads[1] // 2), (0, 0)))
    else:
        out = [(n - e) // s + 1 for n, e, s in zip(size, ext, (sh, sw))]
    win = np.lib.stride_tricks.sliding_window_view(x, ext, axis=(1, 2))  # (b, H', W', C, ext_h, ext_w)
    win = win[:, ::sh, ::sw][:, : out[0], : out[1], :, ::dh, ::dw]
    rows = np.empty((x.shape[0], out[0], out[1], kh, kw, x.shape[3]))
    rows[...] = win.transpose(0, 1, 2, 4, 5, 3)
    return rows.reshape(-1, kh * kw * x.shape[3])


def layer_hessians(
    model: Any,
    layer_names: list[str],
    data: Any,
    batch_size: int = 256,
    n_samples: int | None = None,
    max_bytes: int = 2 * 1024**3,
    progress: bool = True,
    solver: str = "exact",
) -> dict[str, np.ndarray]:
    """H for each named top-level layer of ``model`` (a plain, unwrapped model).

    ``data``: inputs in any form `tfprune.data` reads (``x``, ``(x, y)``, a
    dataset or generator); labels are not needed. At most ``n_samples`` are used.

    Refuses (ValueError) a layer that pruning with ``solver`` would need more
    than ``max_bytes`` for (`estimate_bytes`), before doing any work.
    """
    layers = []
    for name in layer_names:
        layer = model.get_layer(name)
        if not supported(layer):
            raise ValueError(f"layer {name!r} ({type(layer).__name__}) is not supported by OBS (Dense, Conv1D, Conv2D)")
        need = estimate_bytes(layer, solver)
        if need > max_bytes:
            raise ValueError(
                f"layer {name!r}: its Hessian is {hessian_dim(layer)}x{hessian_dim(layer)} and pruning it needs {need / 2**30:.2f} GiB "
                f"(H, its inverse and the solver's buffers in float64), over max_bytes={max_bytes / 2**30:.2f} GiB. Fix: exclude it from OBS "
                "(prune it by magnitude), or raise max_bytes if the memory is there."
            )
        try:
            _ = layer.input
        except (AttributeError, ValueError) as err:
            raise ValueError(f"layer {name!r} is shared or nested; OBS needs a single call site in a flat model") from err
        layers.append(layer)
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    workers = max(1, os.cpu_count() or 1)
    fan = {layer.name: int(np.prod(layer.kernel.shape[:-1])) for layer in layers}
    # sum x x^T per worker and sum x (the bias row)
    G = {name: [np.zeros((f, f)) for _ in range(workers)] for name, f in fan.items()}
    col = {name: np.zeros(f) for name, f in fan.items()}
    counts = {layer.name: 0 for layer in layers}
    it = _data.batches(data, batch_size, n_samples)
    if progress:
        from tqdm.auto import tqdm

        n_rows = _data.size(data)
        total = None if n_rows is None else int(np.ceil(min(n_rows, n_samples or 1 << 62) / batch_size))
        it = tqdm(it, total=total, desc="Hessians", leave=False)

    def syrk(name: str, w: int, rows: np.ndarray) -> None:
        G[name][w] += rows.T @ rows  # numpy calls BLAS syrk for a^T a and releases the GIL (scipy's wrappers hold it)

    # one worker per core, each on its share of a batch's rows with BLAS on one thread (threads that
    # spin while another process holds a core made multi-threaded BLAS several times slower here);
    # the next batch's forward pass and unfolding overlap the products of the last one
    pending: list = []
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for xb, _, _ in it:
            outs = probe(xb, training=False)
            if len(layers) == 1:
                outs = [outs]
            work = [(layer.name, unfold_rows(layer, a.numpy())) for layer, a in zip(layers, outs)]  # float64: float32 products are exact
            for f in pending:
                f.result()
            pending = []
            for name, rows in work:
                pending += [pool.submit(syrk, name, w, part) for w, part in enumerate(np.array_split(rows, workers)) if len(part)]
                col[name] += rows.sum(axis=0)
                counts[name] += int(rows.shape[0])
        for f in pending:
            f.result()
    H = {}
    for layer in layers:
        name, n = layer.name, counts[layer.name]
        if n == 0:
            raise ValueError("no calibration data was seen")
        g = sum(G.pop(name))
        if layer.use_bias:
            g = np.block([[g, col[name][:, None]], [col[name][None, :], np.full((1, 1), float(n))]])
        H[name] = np.ascontiguousarray(g / n)
    return H
