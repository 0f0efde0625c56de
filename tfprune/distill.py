"""`Distiller`: knowledge distillation as a Keras model trained with ``fit``.

loss = (1 - alpha) * CE(y, student) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

Teacher and student must output logits. Only the student's weights train (the
teacher object is left exactly as it was);
``distiller.student`` is the trained model (``call`` runs the student).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfprune._keras import check_model, keras

__all__ = ["Distiller", "distillation_loss"]


def distillation_loss(y_true: Any, teacher_logits: Any, student_logits: Any, temperature: float, alpha: float, ce: Any = None) -> tf.Tensor:
    """The Hinton et al. loss above, averaged over the batch."""
    ce = ce or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    hard = ce(y_true, student_logits)
    t = tf.nn.softmax(teacher_logits / temperature)
    log_s = tf.nn.log_softmax(student_logits / temperature)
    log_t = tf.nn.log_softmax(teacher_logits / temperature)
    kl = tf.reduce_mean(tf.reduce_sum(t * (log_t - log_s), axis=-1))
    return (1.0 - alpha) * hard + alpha * (temperature**2) * kl


class Distiller(keras.Model):
    """Train ``student`` to match ``teacher`` (frozen) and the labels.

    Args:
      teacher, student: tf-keras models with logits outputs of the same shape.
      temperature: softening temperature T (> 0).
      alpha: weight of the distillation term, in [0, 1].
    """

    def __init__(self, teacher: Any, student: Any, temperature: float = 4.0, alpha: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_model(teacher, "teacher")
        check_model(student, "student")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if tuple(teacher.output_shape) != tuple(student.output_shape):
            raise ValueError(f"teacher output {teacher.output_shape} and student output {student.output_shape} differ")
        self.teacher = teacher
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        # The teacher is not modified (not even its `trainable` flag): gradients are taken for the
        # student's variables only, and the teacher always runs with training=False.
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.acc]

    def call(self, x: Any, training: bool = False) -> Any:
        return self.student(x, training=training)

    def train_step(self, data: Any) -> dict:
        x, y = data[0], data[1]
        t = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            s = self.student(x, training=True)
            loss = distillation_loss(y, t, s, self.temperature, self.alpha)
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.acc.update_state(y, s)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict:
        x, y = data[0], data[1]
        s = self.student(x, training=False)
        loss = distillation_loss(y, self.teacher(x, training=False), s, self.temperature, self.alpha)
        self.loss_tracker.update_state(loss)
        self.acc.update_state(y, s)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict:
        return {"temperature": self.temperature, "alpha": self.alpha}
