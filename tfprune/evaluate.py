"""`OneShotEvaluator`: loss and accuracy of a model with one layer magnitude-pruned, many times over, fast.

One working copy of the model (the user's model is never touched) and one
``tf.function`` forward pass, traced once for the fixed samples; each
evaluation assigns the pruned kernel in place (``var.assign``), runs the
traced pass batch by batch, and restores the kernel. Nothing is cloned or
re-traced per evaluation, and evaluations of the same (layer, number of
zeros) are cached (an identical kernel gives an identical result).

``ev = OneShotEvaluator(model, x, y)``; ``ev.dense`` -> `Evaluation`;
``ev.prune_one("fc1", 0.9)`` -> `Evaluation` of the model with only fc1's
kernel magnitude-pruned to 90 % zeros (the same zeros as
``tfprune.importance.sensitivity.magnitude_prune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tfprune._keras import check_model
from tfprune.validation import check_int, finite_data

__all__ = ["OneShotEvaluator", "Evaluation", "resolve_loss", "class_labels", "prune_count", "magnitude_order"]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and top-1 accuracy (NaN for single-output-unit models) on the evaluator's samples."""

    loss: float
    accuracy: float


def _loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return ", ".join(f"{k}: {_loss_name(v)}" for k, v in loss.items())
    if isinstance(loss, (list, tuple)):
        return ", ".join(_loss_name(v) for v in loss)
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__)


def resolve_loss(model: Any, loss: Any = None) -> tuple[Callable[[Any, Any], Any], str]:
    """The loss to report, as ``fn(y_true, y_pred)`` (mean over the samples), and its description.

    Chosen by `tfprune.training.finetune.model_loss`: ``loss`` if given, else the
    model's compiled loss, else a cross-entropy matched to the output's activation.
    """
    from tfprune.training.finetune import model_loss

    spec = model_loss(model, loss)
    return spec, f"{_loss_name(spec.loss)} ({spec.source})"


def class_labels(y: Any, n_outputs: int) -> np.ndarray:
    """Integer class labels from sparse labels ``(n,)``/``(n, 1)`` or one-hot ``(n, n_outputs)``."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] == n_outputs and n_outputs > 1:
        return y.reshape(-1, n_outputs).argmax(-1)
    return y.reshape(len(y), -1)[:, 0] if y.ndim >= 2 else y


def magnitude_order(kernel: np.ndarray) -> np.ndarray:
    """Flat indices of ``kernel`` from smallest to largest |w| (ties by index): the pruning order."""
    return np.argsort(np.abs(kernel).ravel(), kind="stable")


def prune_count(size: int, sparsity: float) -> int:
    """How many weights magnitude pruning to ``sparsity`` zeroes: ``round(sparsity * size)``."""
    return int(round(float(sparsity) * size))


def _pruned(kernel: np.ndarray, order: np.ndarray, r: int) -> np.ndarray:
    out = kernel.copy().ravel()
    out[order[:r]] = 0
    return out.reshape(kernel.shape)


class OneShotEvaluator:
    """Evaluate ``model`` on fixed samples with one prunable layer's kernel changed at a time.

    Args:
      model: a tf-keras model with one output (wrapped or not; a stripped or
        cloned copy is used, ``model`` is never modified).
      x, y: the samples (numpy; ``x`` may be a dict/list for several inputs)
        and their labels (sparse or one-hot).
      loss: a loss as ``compile`` takes it; default: the model's compiled
        loss, else a cross-entropy matched to the output (`resolve_loss`).
      batch_size: samples per forward pass.

    Attributes:
      evaluations: forward passes over all the samples run so far (cache hits excluded).
    """

    def __init__(self, model: Any, x: Any, y: Any, loss: Any = None, batch_size: int = 128) -> None:
        import tensorflow as tf

        from tfprune.inventory.layers import prunable_layers
        from tfprune.masks.wrapping import clone, is_wrapped, strip

        check_model(model)
        if len(model.outputs) != 1:
            raise ValueError(f"the one-shot evaluation supports models with one output, this one has {len(model.outputs)}")
        if y is None:
            raise ValueError("the one-shot evaluation needs labels: pass data=(x, y), not x alone")
        batch_size = check_int(batch_size, "batch_size", 1)
        self.loss_fn, self.loss_name = resolve_loss(model, loss)
        self.work = strip(model) if is_wrapped(model) else clone(model)
        self.inventory = prunable_layers(self.work)
        self.x = tf.nest.map_structure(np.asarray, x)
        self.n = int(len(tf.nest.flatten(self.x)[0]))
        self.y = np.asarray(y)
        if len(self.y) != self.n:
            raise ValueError(f"x has {self.n} samples but y has {len(self.y)}")
        from tfprune.training.finetune import check_labels, model_loss

        check_labels(model, self.y, model_loss(model, loss, warn=False), "labels (y)")
        finite_data(self.x, "inputs (x)")
        from tfprune.data import check_inputs

        check_inputs(model, self.x, "inputs (x)")
        self.batch_size = int(batch_size)
        spec = tf.nest.map_structure(lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), self.x)
        work = self.work
        self._forward = tf.function(lambda xb: work(xb, training=False), input_signature=[spec])
        self._kernels: dict[str, np.ndarray] = {}
        self._orders: dict[str, np.ndarray] = {}
        self._cache: dict[tuple[str, int], Evaluation] = {}
        self.evaluations = 0
        self.dense = self._run()

    @property
    def names(self) -> list[str]:
        """Names of the prunable layers (as in `tfprune.prunable_layers`)."""
        return self.inventory.names

    def _run(self) -> Evaluation:
        import tensorflow as tf

        outs = []
        for i in range(0, self.n, self.batch_size):
            xb = tf.nest.map_structure(lambda a, i=i: a[i : i + self.batch_size], self.x)
            outs.append(self._forward(xb).numpy())
        out = np.concatenate(outs)
        self.evaluations += 1
        loss = float(np.mean(np.asarray(self.loss_fn(self.y, out))))
        k = out.shape[-1] if out.ndim > 1 else 1
        acc = float(np.mean(out.reshape(self.n, -1).argmax(-1) == class_labels(self.y, k))) if k > 1 else float("nan")
        return Evaluation(loss, acc)

    def _variable(self, name: str) -> Any:
        p = self.inventory[name]
        return getattr(p.inner, p.weight)

    def kernel(self, name: str) -> np.ndarray:
        """The dense (unpruned) kernel of layer ``name`` in the working copy."""
        if name not in self._kernels:
            self._kernels[name] = self._variable(name).numpy()
        return self._kernels[name]

    def with_kernel(self, name: str, kernel: np.ndarray) -> Evaluation:
        """Evaluate with layer ``name``'s kernel replaced by ``kernel`` (restored afterwards)."""
        var = self._variable(name)
        dense = self.kernel(name)
        if tuple(np.shape(kernel)) != tuple(dense.shape):
            raise ValueError(f"kernel for {name!r} has shape {np.shape(kernel)}, the layer's is {dense.shape}")
        var.assign(np.asarray(kernel, dtype=dense.dtype))
        try:
            return self._run()
        finally:
            var.assign(dense)

    def prune_one(self, name: str, sparsity: float) -> Evaluation:
        """Evaluate with only layer ``name`` magnitude-pruned to ``sparsity`` (fraction of its kernel zeroed)."""
        if not 0.0 <= float(sparsity) <= 1.0:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
        dense = self.kernel(name)
        r = prune_count(dense.size, sparsity)
        key = (name, r)
        if key not in self._cache:
            if r == 0:
                self._cache[key] = self.dense
            else:
                if name not in self._orders:
                    self._orders[name] = magnitude_order(dense)
                self._cache[key] = self.with_kernel(name, _pruned(dense, self._orders[name], r))
        return self._cache[key]
