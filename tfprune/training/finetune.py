"""Fine-tuning a pruned model: the user's loss, frozen-mask retraining, BatchNorm re-estimation.

* `model_loss`: the loss tfprune trains or scores with. Yours when you give
  it (``loss=``) or compiled the model; otherwise a cross-entropy chosen by
  the model's output (softmax: on probabilities, sigmoid: binary, no
  activation: from logits) and the label format (class ids or one-hot rows),
  see `CrossEntropy`.
* `freeze_zeros` / `retrain`: training that keeps every zero weight exactly zero.
* `reestimate_batchnorm`: every BatchNorm's moving statistics recomputed in
  one forward pass (per batch) after layers were removed or pruned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune import data as _data
from tfprune._keras import check_model, is_keras3_object, keras
from tfprune.validation import check_int, finite_data, number

__all__ = [
    "CrossEntropy",
    "LossSpec",
    "model_loss",
    "output_activations",
    "freeze_zeros",
    "retrain",
    "reestimate_batchnorm",
    "combine_moments",
    "adam_cosine",
    "lists_as_tuples",
]



# ------------------------------------------------------------------ optimizer
def adam_cosine(learning_rate: float = 1e-3, decay_steps: int | None = None) -> keras.optimizers.Optimizer:
    """Adam at ``learning_rate``; with ``decay_steps`` the rate follows a cosine decay to 0 over that many optimizer steps.

    ``decay_steps``: optimizer steps (e.g. epochs * batches per epoch), >= 1;
    None: a constant rate. tfprune's fine-tuning default.
    """
    if decay_steps is not None:
        if decay_steps < 1:
            raise ValueError(
                f"decay_steps must be >= 1 optimizer step (epochs * batches per epoch), got {decay_steps}. "
                "Fix: pass a positive count, or None for a constant rate"
            )
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, int(decay_steps))
    return keras.optimizers.Adam(learning_rate)


# ------------------------------------------------------------------ losses
@keras.utils.register_keras_serializable(package="tfprune")
class CrossEntropy(keras.losses.Loss):
    """Cross-entropy that reads the label format from the shapes.

    One output unit, or ``binary=True`` (sigmoid multi-label): binary
    cross-entropy. Otherwise labels with the prediction's shape (one-hot or
    soft rows): categorical; anything else (class ids, shape (N,) or (N, 1)):
    sparse categorical. ``from_logits`` says whether predictions are logits.
    """

    def __init__(self, from_logits: bool = True, binary: bool = False, name: str = "cross_entropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)
        self.binary = bool(binary)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        n_cls = y_pred.shape[-1]
        if self.binary or n_cls == 1:
            y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
            return keras.losses.binary_crossentropy(y_true, y_pred, from_logits=self.from_logits)
        if y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == n_cls:
            return keras.losses.categorical_crossentropy(tf.cast(y_true, y_pred.dtype), y_pred, from_logits=self.from_logits)
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "binary": self.binary}


def _activation_name(layer: Any) -> str:
    """The activation that produces ``layer``'s output: softmax, sigmoid, linear, relu, ... or unknown."""
    inner = getattr(layer, "layer", None)
    if inner is not None and not isinstance(layer, keras.Model):  # a pruning wrapper
        layer = inner
    if isinstance(layer, keras.Model):
        acts = output_activations(layer)
        return acts[0] if len(acts) == 1 else "unknown"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    symbol = str(getattr(layer, "symbol", "") or "")  # TFOpLambda, e.g. tf.nn.softmax in a functional model
    for kind in ("softmax", "sigmoid"):
        if symbol.endswith(kind):
            return kind
    act = getattr(layer, "activation", None)
    if act is None:
        return type(layer).__name__.lower() if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)) else "unknown"
    name = keras.activations.serialize(act) if callable(act) else act
    if isinstance(name, dict):
        name = name.get("config", {}).get("name") or name.get("class_name", "unknown")
    return str(name)


def output_activations(model: Any) -> list[str]:
    """Per output of ``model``, the activation of the layer that produces it (``unknown`` when unreadable)."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return ["unknown"]
    names = []
    for t in outputs:
        hist = getattr(t, "_keras_history", None)
        names.append(_activation_name(hist[0]) if hist is not None else "unknown")  # (layer, node, tensor): tf-keras and Keras 3 alike
    return names


def default_output_loss(activation: str) -> tuple[CrossEntropy, str]:
    """The default loss for an output ending in ``activation``, and what was assumed."""
    if activation == "softmax":
        return CrossEntropy(from_logits=False), "cross-entropy on probabilities (softmax output)"
    if activation == "sigmoid":
        return CrossEntropy(from_logits=False, binary=True), "binary cross-entropy on probabilities (sigmoid output)"
    if activation == "linear":
        return CrossEntropy(from_logits=True), "cross-entropy from logits"
    return CrossEntropy(from_logits=True), f"cross-entropy from logits ASSUMED (the output ends in {activation!r})"


@dataclass
class LossSpec:
    """A loss as ``Model.compile`` takes it (``loss``, ``loss_weights``), where it came from, and callable.

    ``spec(y_true, y_pred, sample_weight=None)`` is the compiled-loss value
    (per-output losses, weighted and summed, mean over the batch), without
    regularisation losses.
    """

    loss: Any
    loss_weights: Any = None
    source: str = ""
    output_names: list = field(default_factory=list)
    _container: Any = field(default=None, repr=False, compare=False)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        from tfprune.compat import losses_container

        if self._container is None:
            self._container = losses_container(self.loss, self.loss_weights, self.output_names or None)
        as_t = lambda s: None if s is None else tf.nest.map_structure(tf.convert_to_tensor, s)  # noqa: E731
        return self._container(as_t(y_true), as_t(y_pred), as_t(sample_weight))


def model_loss(model: Any, loss: Any = None, loss_weights: Any = None, warn: bool = True) -> LossSpec:
    """The loss to train or score ``model`` with.

    Order: ``loss`` (anything ``Model.compile`` takes), else the model's
    compiled loss (and loss weights), else per output a `CrossEntropy`
    chosen by the output's activation (`default_output_loss`); with an
    output that is neither softmax, sigmoid nor linear, a warning says the
    logits assumption was made and how to avoid it.
    """
    names = list(getattr(model, "output_names", None) or [])
    if loss is not None:
        return LossSpec(loss, loss_weights, "loss= argument", names)
    compiled = getattr(model, "compiled_loss", None)
    user = getattr(compiled, "_user_losses", None) if compiled is not None else None
    if user is None and is_keras3_object(model) and getattr(model, "compiled", False):
        user = getattr(model, "loss", None)  # Keras 3 keeps the loss given to compile()
    if user is not None and not (isinstance(user, (dict, list, tuple)) and not user):
        return LossSpec(user, getattr(compiled, "_user_loss_weights", None) if loss_weights is None else loss_weights, "the model's compiled loss", names)
    acts = output_activations(model)
    chosen = [default_output_loss(a) for a in acts]
    notes = sorted({note for _, note in chosen})
    if warn and any("ASSUMED" in n for n in notes):
        warnings.warn(
            f"model {getattr(model, 'name', '?')!r} is not compiled and no loss= was given; its output activations are {acts}, "
            "so tfprune assumes logits and uses cross-entropy from logits. Fix: compile the model with its loss, or pass loss=.",
            stacklevel=3,
        )
    losses = [c for c, _ in chosen]
    return LossSpec(losses[0] if len(losses) == 1 else losses, loss_weights, "default: " + "; ".join(notes), names)


def _label_form(loss: Any) -> str | None:
    """``"sparse"``, ``"one_hot"``, ``"binary"``, ``"any"`` (reads the shapes) or None (not a classification loss) for one output's loss."""
    if isinstance(loss, CrossEntropy):
        return "binary" if loss.binary else "any"
    name = loss if isinstance(loss, str) else type(loss).__name__ if not callable(loss) or hasattr(loss, "get_config") else getattr(loss, "__name__", "")
    name = str(name).lower().replace("_", "")
    if "binarycrossentropy" in name or "binaryfocalcrossentropy" in name:
        return "binary"
    if "sparsecategorical" in name:
        return "sparse"
    if "categoricalcrossentropy" in name or name in ("categoricalcrossentropy", "categoricalfocalcrossentropy"):
        return "one_hot"
    return None


def check_labels(model: Any, y: Any, spec: LossSpec | None = None, name: str = "labels") -> None:
    """Refuse labels that would train or score ``model`` wrongly, with the fix (`tfprune.validation.class_labels`).

    Checked for a single-output classifier whose loss reads classes (sparse or
    categorical cross-entropy, or tfprune's `CrossEntropy`): strings, NaN,
    fractional or out-of-range class ids, one-hot rows for a sparse loss and
    class ids for a one-hot loss. Other models and losses pass unchecked.
    """
    from tfprune.validation import class_labels

    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or y is None or isinstance(y, (dict, list, tuple)):
        return
    spec = spec if spec is not None else model_loss(model, warn=False)
    loss = spec.loss[0] if isinstance(spec.loss, (list, tuple)) and len(spec.loss) == 1 else spec.loss
    if isinstance(loss, dict):
        loss = next(iter(loss.values())) if len(loss) == 1 else None
    form = _label_form(loss) if loss is not None else None
    n_classes = outputs[0].shape[-1]
    if form is None or n_classes is None or len(outputs[0].shape) != 2:
        return
    if form == "binary" or int(n_classes) == 1:  # probabilities per unit: values in [0, 1]
        class_labels(y, name, 1, None)
        return
    class_labels(y, name, int(n_classes), None if form == "any" else form)


# ------------------------------------------------------------------ frozen masks
def freeze_zeros(model: Any) -> Any:
    """A wrapped copy of ``model`` whose masks are ``kernel != 0`` and never change (the ``frozen`` mask rule).

    Train it with plain ``fit`` (no callback needed; `retrain` does); every
    zero stays exactly zero, also after save/load. ``model`` is not changed.
    Equivalent to ``tfprune.wrap(model, granularity="frozen")``.
    """
    from tfprune.masks.wrapping import wrap

    return wrap(model, granularity="frozen")


def retrain(
    model: Any,
    data: Any,
    y: Any = None,
    steps: int = 100,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    loss: Any = None,
    optimizer: Any = None,
    seed: int = 0,
) -> Any:
    """Train ``model`` for ``steps`` optimizer steps keeping its zeros exactly zero; returns a new plain model.

    Args:
      model: a tf-keras model (not modified).
      data: ``(x, y[, w])``, a dataset or generator of such batches (any form
        `tfprune.data` reads), or ``x`` with the labels in ``y``.
      steps: optimizer steps (0: an unchanged copy).
      loss: default `model_loss` (the model's compiled loss, or a cross-entropy
        matched to its outputs).
      optimizer: default ``Adam(learning_rate)``.
      seed: shuffling seed.
    Arrays (and datasets of known size) are used whole, shuffled; from other
    streams the first ``steps * batch_size`` samples are read.
    """
    from tfprune.masks.wrapping import clone, strip

    if is_keras3_object(model):  # trained as its tf-keras twin (same layers and weights), returned as Keras 3
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(retrain, model, data, y, steps=steps, batch_size=batch_size, learning_rate=learning_rate, loss=loss,
                                optimizer=optimizer, seed=seed)
    check_model(model)
    spec = model_loss(model, loss)
    steps = check_int(steps, "steps", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    number(learning_rate, "learning_rate", minimum=0.0, strict=True)
    if steps == 0:
        return clone(model)
    src = data if y is None else (data, y)
    n = None if _data.size(src) is not None else int(steps) * int(batch_size)
    s = _data.take(src, n, need_labels="retrain")
    check_labels(model, s.y, spec, "retrain labels")
    finite_data(s.x, "retrain inputs (x)")
    w = freeze_zeros(model)
    w.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), loss=spec.loss, loss_weights=spec.loss_weights)
    parts = tuple(lists_as_tuples(v) for v in ((s.x, s.y) if s.w is None else (s.x, s.y, s.w)))
    ds = tf.data.Dataset.from_tensor_slices(parts).shuffle(s.n, seed=seed).repeat().batch(int(batch_size))
    w.fit(ds, epochs=1, steps_per_epoch=int(steps), verbose=0)
    return strip(w)


def lists_as_tuples(s: Any) -> Any:
    """tf.data stacks a list into one tensor; several inputs/outputs must be a tuple (or dict)."""
    if isinstance(s, dict):
        return {k: lists_as_tuples(v) for k, v in s.items()}
    if isinstance(s, (list, tuple)):
        return tuple(lists_as_tuples(v) for v in s)
    return s


# ------------------------------------------------------------------ BatchNorm
def combine_moments(counts: np.ndarray, means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance of the union of groups given each group's count, mean and variance.

    ``counts`` (G,), ``means`` and ``variances`` (G, ...); exact, no sum-of-squares cancellation.
    """
    c = np.asarray(counts, np.float64).reshape((-1,) + (1,) * (np.ndim(means) - 1))
    m = np.asarray(means, np.float64)
    v = np.asarray(variances, np.float64)
    total = c.sum()
    mean = (c * m).sum(0) / total
    var = (c * (v + (m - mean) ** 2)).sum(0) / total
    return mean, np.maximum(var, 0.0)


class _BatchStatsNorm(keras.layers.Layer):
    """Stands in for a BatchNormalization: normalises with the batch's own statistics and records them."""

    def __init__(self, bn: Any, **kwargs: Any) -> None:
        super().__init__(name=bn.name + "_batch_stats", dtype=bn.dtype, **kwargs)
        self.bn = bn
        self.records: list[tuple[int, np.ndarray, np.ndarray]] = []

    def call(self, x: Any, training: Any = None) -> Any:
        bn = self.bn
        x32 = tf.cast(x, tf.float32)
        rank = x32.shape.rank
        axes = [a % rank for a in bn.axis]
        reduce = [i for i in range(rank) if i not in axes]
        mean64, var64 = tf.nn.moments(tf.cast(x, tf.float64), reduce)  # float32 sums of a million values lose ~0.1 %
        mean, var = tf.cast(mean64, tf.float32), tf.cast(var64, tf.float32)
        if tf.executing_eagerly():  # the recording pass; the clone is also built once symbolically
            count = int(np.prod([x32.shape[i] for i in reduce]))
            self.records.append((count, mean64.numpy(), var64.numpy()))
        shape = [1] * rank
        for a in axes:
            shape[a] = x32.shape[a]

        def bcast(v: Any) -> Any:
            return None if v is None else tf.reshape(tf.cast(v, tf.float32), shape)

        out = tf.nn.batch_normalization(x32, bcast(mean), bcast(var), bcast(bn.beta), bcast(bn.gamma), bn.epsilon)
        return tf.cast(out, x.dtype)


def _batch_stats_clone(model: Any) -> tuple[Any, list]:
    """``model`` rebuilt from its own layers, each BatchNormalization (nested models too) replaced by a `_BatchStatsNorm`."""
    probes: list[_BatchStatsNorm] = []

    def fn(layer: Any) -> Any:
        if isinstance(layer, keras.layers.BatchNormalization):
            probes.append(_BatchStatsNorm(layer))
            return probes[-1]
        if isinstance(layer, keras.Model) and any(isinstance(sub, keras.layers.BatchNormalization) for sub in layer.submodules):
            return keras.models.clone_model(layer, clone_function=fn)
        return layer  # shared, not copied: no weight is duplicated or changed

    try:
        clone = keras.models.clone_model(model, clone_function=fn)
    except (ValueError, NotImplementedError, TypeError) as err:
        raise TypeError(
            f"reestimate_batchnorm needs a Sequential or functional model; {model.name!r} cannot be rebuilt layer by layer ({err}). "
            "Fix: build it with the functional API."
        ) from err
    return clone, probes


def reestimate_batchnorm(model: Any, data: Any, batch_size: int | None = None, n_samples: int | None = 4096) -> Any:
    """Recompute every BatchNormalization's moving mean and variance from ``data`` (in place; returns ``model``).

    One forward pass in inference mode (Dropout and the like off) in which
    every BatchNorm normalises with the statistics of the data it sees and
    records them; those become its moving mean and (population) variance.
    With ``batch_size=None`` (default) the ``n_samples`` inputs go through as
    one batch: each BatchNorm's input is then computed with every earlier
    BatchNorm already using the final statistics, so the result equals
    re-estimating them one after another in graph order, at the cost of one
    forward pass (memory: one pass over ``n_samples`` at once). A
    ``batch_size`` streams the data in batches with less memory; later
    BatchNorms then see inputs normalised with per-batch statistics (close,
    not identical). Only inputs are read; labels are ignored. A Keras 3 model's statistics are computed on its tf-keras twin and
    copied back into it.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import copy_weights, to_tf_keras

        twin = to_tf_keras(model)
        reestimate_batchnorm(twin, data, batch_size=batch_size, n_samples=n_samples)
        copy_weights(twin, model)
        return model
    check_model(model)
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.submodules):
        return model
    clone, probes = _batch_stats_clone(model)
    if batch_size is None:
        it = [_data.take(data, n_samples)]
    else:
        it = _data.batches(data, int(batch_size), n_samples)
    seen = 0
    for x, _, _ in it:
        finite_data(x, "reestimate_batchnorm data (x)")
        clone(x, training=False)
        seen += _data.Samples(x).n
    if not seen:
        raise ValueError("reestimate_batchnorm: the data is empty. Fix: pass at least one batch of inputs")
    by_bn: dict[int, tuple[Any, list]] = {}
    for p in probes:  # a BatchNorm shared by several call sites: all its inputs count
        by_bn.setdefault(id(p.bn), (p.bn, []))[1].extend(p.records)
    for bn, recs in by_bn.values():
        if not recs:
            continue
        mean, var = combine_moments(np.array([r[0] for r in recs]), np.stack([r[1] for r in recs]), np.stack([r[2] for r in recs]))
        bn.moving_mean.assign(mean.reshape(bn.moving_mean.shape).astype(bn.moving_mean.dtype.as_numpy_dtype))
        bn.moving_variance.assign(var.reshape(bn.moving_variance.shape).astype(bn.moving_variance.dtype.as_numpy_dtype))
    return model
