"""``sensitivity``: data-driven importance = loss increase when that layer alone is pruned.

For each layer l: copy the model, zero the smallest-magnitude fraction
``sparsity`` (default 0.9) of layer l's weights only, and measure the mean
loss on calibration data (at most ``n_samples``, default 1000). The score is
``max(loss_l - loss_dense, 0) + floor`` divided by the largest such value, so
in (0, 1]. The user's model is never touched (a stripped copy is used).
"""

from __future__ import annotations

import numpy as np

from tfprune.importance.base import ImportanceContext, register_importance


def magnitude_prune(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * size)`` smallest |w| (ties by index); returns a new array."""
    flat = np.abs(kernel).ravel()
    r = int(round(sparsity * flat.size))
    out = kernel.copy().ravel()
    if r > 0:
        idx = np.argsort(flat, kind="stable")[:r]
        out[idx] = 0
    return out.reshape(kernel.shape)


def calibration_arrays(data, n_samples: int):
    """(x, y) numpy arrays from ``(x, y)`` or a tf.data dataset of batches."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        xs, ys, n = [], [], 0
        for x, y in data:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            n += len(xs[-1])
            if n >= n_samples:
                break
        return np.concatenate(xs)[:n_samples], np.concatenate(ys)[:n_samples]
    x, y = data
    return np.asarray(x)[:n_samples], np.asarray(y)[:n_samples]


def layer_losses(model, x, y, layer_names, sparsity: float, loss_fn=None, progress: bool = True, batch_size: int = 500):
    """Dense loss and, per layer, the loss with that layer alone magnitude-pruned to ``sparsity``.

    Returns ``(dense_loss, losses (L,), dense_acc, accs (L,))``.
    """
    from tfprune._keras import keras
    from tfprune.layers import prunable_layers
    from tfprune.wrap import clone, is_wrapped, strip

    work = strip(model) if is_wrapped(model) else clone(model)
    inv = prunable_layers(work)
    loss_fn = loss_fn or keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def evaluate():
        out = work.predict(x, verbose=0, batch_size=batch_size)
        loss = float(loss_fn(y, out).numpy())
        acc = float(np.mean(np.argmax(out, -1) == np.asarray(y).reshape(-1))) if out.shape[-1] > 1 else float("nan")
        return loss, acc

    dense_loss, dense_acc = evaluate()
    losses, accs = [], []
    it = layer_names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layer_names, desc=f"sensitivity @ {sparsity:.3f}", leave=False)
    for name in it:
        p = inv[name]
        var = getattr(p.inner, p.weight)
        orig = var.numpy()
        var.assign(magnitude_prune(orig, sparsity))
        loss, acc = evaluate()
        var.assign(orig)
        losses.append(loss)
        accs.append(acc)
    return dense_loss, np.array(losses), dense_acc, np.array(accs)


@register_importance("sensitivity", needs_data=True)
def sensitivity(ctx: ImportanceContext) -> np.ndarray:
    """Loss increase on calibration data when the layer alone is magnitude-pruned (normalised)."""
    sparsity = float(ctx.options.get("sparsity", 0.9))
    n = int(ctx.options.get("n_samples", 1000))
    x, y = calibration_arrays(ctx.data, n)
    dense, losses, _, _ = layer_losses(ctx.model, x, y, ctx.names, sparsity, progress=bool(ctx.options.get("progress", True)))
    inc = np.maximum(losses - dense, 0.0)
    inc = inc + 1e-3 * max(inc.max(), 1e-6)
    ctx.options["_details"] = {"dense_loss": dense, "pruned_loss": dict(zip(ctx.names, losses.tolist())), "sparsity": sparsity}
    return inc / inc.max()
