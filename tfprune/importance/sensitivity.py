"""``sensitivity``: data-driven importance = loss increase when that layer alone is pruned.

For each layer l: copy the model, zero the smallest-magnitude fraction
``sparsity`` (default 0.9) of layer l's weights only, and measure the mean
loss on calibration data (at most ``n_samples``, default 1000; labels needed).
The loss is the model's compiled loss, ``loss=`` (an option), or a
cross-entropy matched to the outputs (`tfprune.training.finetune.model_loss`). The score is
``max(loss_l - loss_dense, 0) + floor`` divided by the largest such value, so
in (0, 1]. The user's model is never touched (a stripped copy is used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune.data import take
from tfprune.importance.base import ImportanceContext, register_importance
from tfprune.training.finetune import check_labels, model_loss
from tfprune.validation import finite_data


def magnitude_prune(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * size)`` smallest |w| (ties by index); returns a new array."""
    flat = np.abs(kernel).ravel()
    r = int(round(sparsity * flat.size))
    out = kernel.copy().ravel()
    if r > 0:
        idx = np.argsort(flat, kind="stable")[:r]
        out[idx] = 0
    return out.reshape(kernel.shape)


def calibration_arrays(data: Any, n_samples: int) -> tuple[Any, Any]:
    """(x, y) numpy arrays: the first ``n_samples`` of ``data`` (any form `tfprune.data` reads; labels required).

    Kept for older callers; new code uses ``tfprune.data.take(data, n, need_labels=...)``.
    """
    s = take(data, n_samples, need_labels="calibration")
    return s.x, s.y


def accuracy(y: Any, out: Any) -> float:
    """Top-1 accuracy of the (first) output: class ids or one-hot rows; NaN for one-unit outputs."""
    if isinstance(out, dict):
        out = next(iter(out.values()))
        y = next(iter(y.values())) if isinstance(y, dict) else y
    elif isinstance(out, (list, tuple)):
        out, y = out[0], (y[0] if isinstance(y, (list, tuple)) else y)
    out, y = np.asarray(out), np.asarray(y)
    if out.shape[-1] < 2:
        return float("nan")
    labels = y.argmax(-1) if y.ndim == out.ndim and y.shape[-1] == out.shape[-1] else y.reshape(-1)
    return float(np.mean(out.argmax(-1).reshape(-1) == labels.reshape(-1)))


def layer_losses(
    model: Any,
    x: Any,
    y: Any,
    layer_names: list[str],
    sparsity: float,
    loss_fn: Any = None,
    progress: bool = True,
    batch_size: int = 500,
    sample_weight: Any = None,
) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Dense loss and, per layer, the loss with that layer alone magnitude-pruned to ``sparsity``.

    ``loss_fn``: a loss as ``compile`` takes it, or a `tfprune.training.finetune.LossSpec`;
    default: the model's compiled loss, else a cross-entropy matched to its
    outputs (`tfprune.training.finetune.model_loss`).
    Returns ``(dense_loss, losses (L,), dense_acc, accs (L,))``.
    """
    from tfprune.inventory.layers import prunable_layers
    from tfprune.masks.wrapping import clone, is_wrapped, strip
    from tfprune.training.finetune import LossSpec, model_loss

    spec = loss_fn if isinstance(loss_fn, LossSpec) else model_loss(model, loss_fn)
    work = strip(model) if is_wrapped(model) else clone(model)
    inv = prunable_layers(work)

    def evaluate() -> tuple[float, float]:
        out = work.predict(x, verbose=0, batch_size=batch_size)
        return float(spec(y, out, sample_weight).numpy()), accuracy(y, out)

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
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"importance 'sensitivity': importance_kwargs['sparsity'] is the fraction of each layer's weights removed "
                         f"to measure its loss; got {sparsity!r}. Fix: pass a value in (0, 1), e.g. 0.9 (the default)")
    n = int(ctx.options.get("n_samples", 1000))
    s = take(ctx.data, n, need_labels="importance 'sensitivity'")
    spec = model_loss(ctx.model, ctx.options.get("loss"))
    check_labels(ctx.model, s.y, spec, "importance 'sensitivity' labels (data y)")
    finite_data(s.x, "importance 'sensitivity' data (x)")
    dense, losses, _, _ = layer_losses(ctx.model, s.x, s.y, ctx.names, sparsity, spec, bool(ctx.options.get("progress", True)), sample_weight=s.w)
    inc = np.maximum(losses - dense, 0.0)
    inc = inc + 1e-3 * max(inc.max(), 1e-6)
    ctx.options["_details"] = {"dense_loss": dense, "pruned_loss": dict(zip(ctx.names, losses.tolist())), "sparsity": sparsity, "loss": spec.source}
    return inc / inc.max()
