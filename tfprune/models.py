"""Reference models (tf-keras, functional). All return **logits** (no softmax).

* `lenet_300_100`: 784-300-100-10 MLP (266,200 weights in its kernels).
* `lenet5`: Caffe LeNet-5: conv 20 (5x5) -> pool -> conv 50 (5x5) -> pool ->
  fc 500 -> fc 10; 430,500 kernel weights on 28x28x1 input.
* `vgg_small`: a small VGG-style CNN (conv-BN-ReLU pairs, max-pool).
* `plain_cnn`: a plain VGG-style CNN, 8 conv-BN-ReLU units in 3 stages (shallowing experiments).
* `resnet_cifar`: CIFAR-style ResNet-(6n+2) (ResNet-20: n=3, ResNet-56: n=9)
  with identity shortcuts inside a stage and 1x1 projection shortcuts
  between stages.
"""

from __future__ import annotations

from typing import Sequence

from tfprune._keras import keras
from tfprune.training.finetune import adam_cosine

L = keras.layers
#: BatchNorm momentum of the reference CNNs: 0.9, so the moving statistics settle within the short
#: CPU training budgets used here (with Keras' 0.99 a few hundred steps leave them far off).
BN_MOMENTUM = 0.9

__all__ = ["lenet_300_100", "lenet5", "vgg_small", "plain_cnn", "resnet_cifar", "resnet20", "resnet56", "compile_classifier"]


def lenet_300_100(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    inp = keras.Input(tuple(input_shape), name="image")
    x = L.Flatten(name="flatten")(inp)
    x = L.Dense(300, activation="relu", name="fc1")(x)
    x = L.Dense(100, activation="relu", name="fc2")(x)
    out = L.Dense(num_classes, name="fc3")(x)
    return keras.Model(inp, out, name="lenet_300_100")


def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Caffe's LeNet-5 variant (no activation after the convolutions, as in Caffe)."""
    inp = keras.Input(tuple(input_shape), name="image")
    x = L.Conv2D(20, 5, name="conv1")(inp)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(50, 5, name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(500, activation="relu", name="fc1")(x)
    out = L.Dense(num_classes, name="fc2")(x)
    return keras.Model(inp, out, name="lenet5")


def vgg_small(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, widths: Sequence[int] = (32, 64, 128)
) -> keras.Model:
    inp = keras.Input(tuple(input_shape), name="image")
    x = inp
    for s, w in enumerate(widths, start=1):
        for c in (1, 2):
            x = L.Conv2D(w, 3, padding="same", use_bias=False, name=f"block{s}_conv{c}")(x)
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{s}_bn{c}")(x)
            x = L.ReLU(name=f"block{s}_relu{c}")(x)
        x = L.MaxPooling2D(2, name=f"block{s}_pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, out, name="vgg_small")


def plain_cnn(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, stages: Sequence[tuple[int, int]] = ((16, 2), (32, 3), (64, 3))
) -> keras.Model:
    """A plain (no shortcut) VGG-style CNN of conv-BN-ReLU units: ``stages`` is ``((width, n_convs), ...)``.

    Max-pooling (2x2) follows every stage but the last; then GAP and a dense
    logits layer. The default has 8 convs (``conv0``..``conv7``); doubling the
    width as the resolution halves gives every conv after a stage's first about
    the same MACs (1.8 M at 28x28 input), and every conv but a stage's first
    keeps its input's shape, so it is a candidate for shallowing.
    """
    if not stages or any(w < 1 or n < 1 for w, n in stages):
        raise ValueError(f"stages must be a non-empty list of (width >= 1, n_convs >= 1), got {stages!r}")
    inp = keras.Input(tuple(input_shape), name="image")
    x, i = inp, 0
    for s, (width, n) in enumerate(stages):
        for _ in range(n):
            x = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
            x = L.ReLU(name=f"relu{i}")(x)
            i += 1
        if s < len(stages) - 1:
            x = L.MaxPooling2D(2, name=f"pool{s + 1}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, out, name="plain_cnn")


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = L.ReLU(name=f"{name}_relu1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.ReLU(name=f"{name}_out")(y)


def resnet_cifar(depth: int = 20, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """CIFAR ResNet of ``depth = 6n + 2`` layers (20, 32, 44, 56, 110)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    inp = keras.Input(tuple(input_shape), name="image")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for b in range(n):
            stride = 2 if (stage > 1 and b == 0) else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{b + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, out, name=f"resnet{depth}")


def resnet20(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    return resnet_cifar(20, input_shape, num_classes)


def resnet56(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    return resnet_cifar(56, input_shape, num_classes)




def compile_classifier(model: keras.Model, learning_rate: float = 1e-3, decay_steps: int | None = None) -> keras.Model:
    """Compile a logits classifier with Adam + sparse CE (in place; returns the model).

    ``decay_steps``: see `tfprune.training.finetune.adam_cosine` (cosine decay of the learning rate over that many optimizer steps).
    """
    model.compile(
        optimizer=adam_cosine(learning_rate, decay_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
