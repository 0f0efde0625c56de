"""Train a wrapped network with the loss of the task model it came from.

`tfprune.wrap` rebuilds a model layer by layer into a plain functional model:
a task model's own Python (keras-cv's ``YOLOV8Detector.compute_loss`` with
its label encoder, ``predict_step`` with box decoding and NMS) does not come
along. `TaskModel` puts it back for training: it runs the wrapped network and
hands the network's raw outputs to the original task's ``compute_loss``; the
training step (gradient, optimizer, loss average) is ours and updates only the
network's weights. The pruning callback finds the network's `PruneLayer` s
through it (the network is a nested model).

    det = keras_cv.models.YOLOV8Detector(num_classes=3, bounding_box_format="xywh", backbone=backbone, fpn_depth=1)
    det.compile(box_loss="ciou", classification_loss="binary_crossentropy", optimizer="adam")  # the task's losses
    net = tfprune.wrap(det)                       # plain functional: image -> {"boxes", "classes"} raw heads
    trainer = tfprune.TaskModel(net, det)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(images, {"boxes": boxes, "classes": classes}, callbacks=[tfprune.Pruning(0.7)])
    pruned = tfprune.strip(net)                   # the network, raw heads; export_tflite(pruned, ...)

Inference of the pruned network gives the raw head outputs; decoding them
(for YOLOV8: ``det.decode_predictions(raw, images)``, distance bins to boxes,
then NMS) stays outside the network and outside the .tflite file.

Works for any tf-keras task model whose ``compute_loss(x, y, y_pred,
sample_weight)`` defines its loss (keras-cv tasks, and plain compiled models:
their compiled loss), when the wrapped network has the task's outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model, keras

__all__ = ["TaskModel", "synthetic_boxes"]


def synthetic_boxes(n: int, side: int = 64, max_boxes: int = 2, num_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A toy detection set: dark noise images with 1..``max_boxes`` filled rectangles, the class in the colour channel.

    Returns ``x`` (n, side, side, 3) float32 in [0, 1] and keras-cv labels
    ``{"boxes": (n, max_boxes, 4) xywh in pixels, "classes": (n, max_boxes)}``,
    padded with -1. Rectangles are 12..31 pixels wide and high; class ``c``
    lights channel ``c % 3``. For tests and benchmarks of the detector flow.
    """
    if side < 33 or max_boxes < 1 or num_classes < 1:
        raise ValueError(f"synthetic_boxes needs side >= 33, max_boxes >= 1, num_classes >= 1; got {side}, {max_boxes}, {num_classes}")
    rng = np.random.default_rng(seed)
    x = rng.random((n, side, side, 3), dtype=np.float32) * 0.1
    boxes = -np.ones((n, max_boxes, 4), np.float32)
    classes = -np.ones((n, max_boxes), np.float32)
    for i in range(n):
        for j in range(int(rng.integers(1, max_boxes + 1))):
            w, h = (int(v) for v in rng.integers(12, 32, 2))
            x0, y0 = int(rng.integers(0, side - w)), int(rng.integers(0, side - h))
            c = int(rng.integers(0, num_classes))
            x[i, y0 : y0 + h, x0 : x0 + w, c % 3] = 1.0
            boxes[i, j] = (x0, y0, w, h)
            classes[i, j] = c
    return x, {"boxes": boxes, "classes": classes}


class _Ref:
    """Holds the task without Keras tracking it (its weights are not the trainer's)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _structure(outputs: Any) -> Any:
    """Output names and per-sample shapes, nested as the model's outputs are."""
    return tf.nest.map_structure(lambda t: tuple(t.shape[1:]), outputs)


def _unpack(data: Any) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` from a batch: Keras' forms, or keras-cv's ``{"images": x, "bounding_boxes": y}``."""
    x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
    if y is None and isinstance(x, dict) and "images" in x:
        return x["images"], x.get("bounding_boxes", x.get("labels")), sw
    return x, y, sw


class TaskModel(keras.Model):
    """Fit ``network`` (e.g. ``tfprune.wrap(task)``) with ``task``'s own ``compute_loss``.

    Args:
      network: a built tf-keras model with the task's outputs (the same
        nesting, names and per-sample shapes), typically ``tfprune.wrap(task)``.
        Trained in place: after ``fit`` its weights (and pruning masks) are
        the trained ones; strip and export it, not this trainer.
      task: the original task model, compiled with its losses (keras-cv:
        ``det.compile(box_loss="ciou", classification_loss="binary_crossentropy",
        optimizer=...)``; the optimizer given there is not used). Only its
        ``compute_loss`` (and what that uses: label encoder, loss objects,
        loss weights) is used; its weights are neither used nor changed.

    ``compile(optimizer=...)`` as usual (no ``loss``: the task's is used;
    ``metrics`` are not supported). The logged ``loss`` is the task's loss
    plus the network's regularization losses. Batches: ``(x, y)``,
    ``(x, y, sample_weight)`` or keras-cv's ``{"images": x, "bounding_boxes": y}``.
    ``compute_loss`` receives ``x``, ``y``, the network's outputs (training
    mode) and ``sample_weight``. A task whose ``compute_loss`` adds its own
    layers' regularization terms adds them as constants (they are computed on
    the task's weights, not the network's).

    ``get_config`` describes the nested network only (so `tfprune.plan` finds
    the output layers); the trainer itself is not meant to be saved: save
    ``tfprune.strip(network)``.
    """

    def __init__(self, network: Any, task: Any, **kwargs: Any) -> None:
        check_model(network, "network")
        check_model(task, "task")
        if not callable(getattr(task, "compute_loss", None)):
            raise TypeError(f"task {task.name!r} has no compute_loss. Fix: pass the original tf-keras task model (e.g. a keras-cv YOLOV8Detector).")
        if getattr(task, "compiled_loss", None) is None:
            raise ValueError(
                f"task {task.name!r} is not compiled: its compute_loss needs the losses compile() sets up. Fix: compile it with its own "
                "losses first, e.g. for keras-cv YOLOV8Detector: det.compile(box_loss='ciou', classification_loss='binary_crossentropy', "
                "optimizer='adam')."
            )
        want, got = _structure(task.output), _structure(network.output)
        try:
            tf.nest.assert_same_structure(want, got)
            same = tf.nest.flatten(want) == tf.nest.flatten(got)
        except (ValueError, TypeError):
            same = False
        if not same:
            raise ValueError(
                f"network {network.name!r} has outputs {got}, task {task.name!r} has {want}: the task's compute_loss reads the "
                "network's outputs by its own structure. Fix: pass the network wrapped from this task (tfprune.wrap(task))."
            )
        kwargs.setdefault("name", f"{network.name}_task")
        super().__init__(**kwargs)
        self.network = network
        self._task = _Ref(task)
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True  # the network is built; the pruning callback plans before the first call

    @property
    def task(self) -> Any:
        """The original task model (not tracked: its weights are not this model's)."""
        return self._task.obj

    def call(self, inputs: Any, training: Any = None) -> Any:
        """The network's raw outputs."""
        return self.network(inputs, training=training)

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None, **kwargs: Any) -> None:  # noqa: D401
        """Keras ``compile`` with the optimizer; ``loss`` must stay None (the task's is used), ``metrics`` are not supported."""
        if loss is not None:
            raise ValueError("TaskModel trains with the task's own compute_loss. Fix: leave loss=None, or compile the network itself with that loss.")
        if metrics:
            raise ValueError("TaskModel does not support compiled metrics. Fix: evaluate the stripped network with the task's own tools.")
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self) -> list[Any]:
        return [self._loss_tracker]

    def _task_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> tf.Tensor:
        loss = self.task.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        if self.network.losses:
            loss = loss + tf.add_n(self.network.losses)
        return loss

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = _unpack(data)
        with tf.GradientTape() as tape:
            y_pred = self.network(x, training=True)
            loss = self._task_loss(x, y, y_pred, sw)
        variables = self.network.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        self._loss_tracker.update_state(loss)
        return {"loss": self._loss_tracker.result()}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = _unpack(data)
        y_pred = self.network(x, training=False)
        self._loss_tracker.update_state(self._task_loss(x, y, y_pred, sw))
        return {"loss": self._loss_tracker.result()}

    def get_config(self) -> dict[str, Any]:
        kind = type(self.network).__name__
        kind = kind if kind in ("Sequential", "Functional", "Model") else "Functional"
        return {"name": self.name, "layers": [{"class_name": kind, "name": self.network.name, "config": self.network.get_config()}]}
