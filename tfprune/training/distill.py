"""`Distiller`: knowledge distillation as a Keras model trained with ``fit``.

loss = (1 - alpha) * hard(y, student) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + student.losses

``hard`` is the loss given to ``Distiller.compile(loss=...)``, else the
student's compiled loss, else a cross-entropy matched to the student's output
(softmax: on probabilities; no activation: from logits; class ids or one-hot
labels), see `tfprune.training.finetune.model_loss`. Outputs may be logits or softmax
probabilities (the KL term uses log-probabilities as logits then); with
several outputs the KL terms are summed. ``student.losses`` are the student's
regularisation losses. Only the student's weights train (the teacher object
is left exactly as it was); ``distiller.student`` is the trained model
(``call`` runs the student). Metrics come from ``compile(metrics=...)``
(default ``["accuracy"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model, keras
from tfprune.training.finetune import check_labels, model_loss, output_activations
from tfprune.validation import fraction, number

__all__ = ["Distiller", "distillation_loss", "soft_kl"]

_EPS = 1e-30


def soft_kl(teacher_logits: Any, student_logits: Any, temperature: float, sample_weight: Any = None) -> tf.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) over the last axis, averaged over the batch (weighted if given)."""
    t = tf.nn.softmax(teacher_logits / temperature)
    log_s = tf.nn.log_softmax(student_logits / temperature)
    log_t = tf.nn.log_softmax(teacher_logits / temperature)
    kl = tf.reduce_sum(t * (log_t - log_s), axis=-1)
    kl = tf.reshape(kl, [tf.shape(kl)[0], -1])
    kl = tf.reduce_mean(kl, axis=-1)
    if sample_weight is None:
        return tf.reduce_mean(kl)
    sw = tf.reshape(tf.cast(sample_weight, kl.dtype), [-1])
    return tf.reduce_sum(kl * sw) / tf.cast(tf.size(kl), kl.dtype)  # like Keras' sum-over-batch-size reduction


def distillation_loss(y_true: Any, teacher_logits: Any, student_logits: Any, temperature: float, alpha: float, ce: Any = None) -> tf.Tensor:
    """The Hinton et al. loss above for one logits output, averaged over the batch (``ce``: the hard loss)."""
    ce = ce or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    hard = ce(y_true, student_logits)
    return (1.0 - alpha) * hard + alpha * (temperature**2) * soft_kl(teacher_logits, student_logits, temperature)


def _as_logits(outputs: Any, kinds: list[str]) -> list:
    """Each output as logits: log-probabilities for softmax outputs, as they are otherwise."""
    outs = tf.nest.flatten(outputs)
    return [tf.math.log(tf.maximum(o, _EPS)) if k == "softmax" else o for o, k in zip(outs, kinds)]


class Distiller(keras.Model):
    """Train ``student`` to match ``teacher`` (frozen) and the labels.

    Args:
      teacher, student: tf-keras models with outputs of the same shapes,
        logits or softmax probabilities.
      temperature: softening temperature T (> 0).
      alpha: weight of the distillation term, in [0, 1].

    ``compile(optimizer, loss=None, metrics=None, loss_weights=None)``: the
    hard loss (default: the student's compiled loss, else a matched
    cross-entropy) and metrics on the student's outputs (default accuracy).
    Saved and reloaded with ``tfprune.load_model`` (teacher and student are
    part of the config).
    """

    def __init__(self, teacher: Any, student: Any, temperature: float = 4.0, alpha: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_model(teacher, "teacher")
        check_model(student, "student")
        temperature = number(temperature, "temperature", minimum=0.0, strict=True, what="a finite softening temperature (4.0 is usual)")
        alpha = fraction(alpha, "alpha", unit="weight of the distillation term", include_high=True, example="alpha=0.9")
        t_shapes = [tuple(s) for s in _output_shapes(teacher)]
        s_shapes = [tuple(s) for s in _output_shapes(student)]
        if t_shapes != s_shapes:
            raise ValueError(f"teacher outputs {t_shapes} and student outputs {s_shapes} differ. Fix: distil into a student with the teacher's outputs "
                             "(same classes), e.g. the pruned or shallowed copy of the teacher")
        self._kinds = {}
        for role, m in (("teacher", teacher), ("student", student)):
            kinds = output_activations(m)
            if len(kinds) != len(s_shapes):
                kinds = ["unknown"] * len(s_shapes)
            bad = [k for k in kinds if k == "sigmoid"]
            if bad:
                raise ValueError(f"the {role} has a sigmoid output; Distiller distils softmax classifiers (logits or softmax outputs)")
            self._kinds[role] = kinds
        self.teacher = teacher
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        # The teacher is not modified (not even its `trainable` flag): gradients are taken for the
        # student's variables only, and the teacher always runs with training=False.
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._hard = None
        self.built = True  # no weights of its own: teacher and student are built models
        self.output_names = list(student.output_names)  # compile's per-output losses and metrics follow the student's names

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None, loss_weights: Any = None, **kwargs: Any) -> None:
        if metrics is None:
            metrics = ["accuracy"]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=loss_weights, **kwargs)
        self._hard = model_loss(self.student, loss, loss_weights)

    def get_compile_config(self) -> dict | None:
        config = getattr(self, "_compile_config", None)
        return config.serialize() if self._is_compiled and config is not None else None

    def compile_from_config(self, config: dict) -> None:
        """Re-compile from a saved compile config (``tfprune.load_model`` of a saved Distiller)."""
        from tfprune.compat import deserialize_compile_config

        self.compile(**deserialize_compile_config(config))
        self.optimizer.build(self.student.trainable_variables)

    @property
    def hard_loss_source(self) -> str:
        """Where the hard loss comes from (compile's loss=, the student's compiled loss, or the default)."""
        return self._hard_loss().source

    def _hard_loss(self) -> Any:
        if self._hard is None:
            self._hard = model_loss(self.student)
        return self._hard

    @property
    def metrics(self) -> list:
        out = [self.loss_tracker]
        if self.compiled_metrics is not None:
            out += self.compiled_metrics.metrics
        return out

    def call(self, x: Any, training: bool = False) -> Any:
        return self.student(x, training=training)

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``keras.Model.fit``; labels given as arrays (``y``, or ``x=(inputs, labels)``) are checked against the hard loss first."""
        labels = y if y is not None else x[1] if isinstance(x, tuple) and len(x) >= 2 else None
        if labels is not None and hasattr(labels, "shape") and not isinstance(labels, tf.data.Dataset):
            check_labels(self.student, np.asarray(labels), self._hard_loss(), "Distiller.fit labels (y)")
        return super().fit(x, y, *args, **kwargs)

    def _total(self, x: Any, y: Any, sw: Any, s: Any) -> tf.Tensor:
        t = self.teacher(x, training=False)
        loss = (1.0 - self.alpha) * self._hard_loss()(y, s, sw) if self.alpha < 1.0 else 0.0
        if self.alpha > 0.0:
            pairs = zip(_as_logits(t, self._kinds["teacher"]), _as_logits(s, self._kinds["student"]))
            loss += self.alpha * self.temperature**2 * tf.add_n([soft_kl(a, b, self.temperature, sw) for a, b in pairs])
        if self.student.losses:
            loss += tf.add_n(self.student.losses)
        return loss

    def train_step(self, data: Any) -> dict:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("Distiller.fit needs labels: fit(x, y) or a dataset of (x, y) batches")
        with tf.GradientTape() as tape:
            s = self.student(x, training=True)
            loss = self._total(x, y, sw, s)
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return self._update_metrics(loss, y, s, sw)

    def test_step(self, data: Any) -> dict:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        s = self.student(x, training=False)
        return self._update_metrics(self._total(x, y, sw, s), y, s, sw)

    def _update_metrics(self, loss: Any, y: Any, s: Any, sw: Any) -> dict:
        self.loss_tracker.update_state(loss)
        if self.compiled_metrics is not None:
            self.compiled_metrics.update_state(y, s, sw)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict:
        return {
            "teacher": keras.layers.serialize(self.teacher),
            "student": keras.layers.serialize(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: Any = None) -> Distiller:
        config = dict(config)
        teacher = keras.layers.deserialize(config.pop("teacher"), custom_objects=custom_objects)
        student = keras.layers.deserialize(config.pop("student"), custom_objects=custom_objects)
        return cls(teacher, student, **config)


def _output_shapes(model: Any) -> list:
    shapes = model.output_shape
    return shapes if isinstance(shapes, list) else [shapes]
