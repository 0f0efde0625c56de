"""Reference models (tf-keras, functional). All return **logits** (no softmax).

* `lenet_300_100`: 784-300-100-10 MLP (266,200 weights in its kernels).
* `lenet5`: Caffe LeNet-5: conv 20 (5x5) -> pool -> conv 50 (5x5) -> pool ->
  fc 500 -> fc 10; 430,500 kernel weights on 28x28x1 input.
* `vgg_small`: a small VGG-style CNN (conv-BN-ReLU pairs, max-pool).
* `plain_cnn`: a plain VGG-style CNN, 8 conv-BN-ReLU units in 3 stages (shallowing experiments).
* `resnet_cifar`: CIFAR-style ResNet-(6n+2) (ResNet-20: n=3, ResNet-56: n=9)
  with identity shortcuts inside a stage and 1x1 projection shortcuts
  between stages.
* `vgg_cifar`: CIFAR VGG-11 / VGG-16 (conv-BN-ReLU, 5 max-pools, GAP, one
  dense layer) with a width multiplier.
* `mobilenet_v2_cifar`: MobileNetV2 (inverted residuals, depthwise convs)
  for 32x32 inputs, with a width multiplier.

The CIFAR models (``input_shape=(32, 32, 3)``) start with a ``Normalization``
layer holding the CIFAR-10 per-channel mean and variance
(`tfprune.datasets.CIFAR10_MEAN` / ``CIFAR10_STD``), so they take raw pixels
0-255 and a saved model needs no preprocessing outside it.
"""

from __future__ import annotations

from typing import Sequence

from tfprune._keras import keras
from tfprune.datasets import CIFAR10_MEAN, CIFAR10_STD
from tfprune.training.finetune import adam_cosine

L = keras.layers
#: BatchNorm momentum of the reference CNNs: 0.9, so the moving statistics settle within the short
#: CPU training budgets used here (with Keras' 0.99 a few hundred steps leave them far off).
BN_MOMENTUM = 0.9

def _api(keras3: bool):
    """The Keras to build with: tf-keras (default) or Keras 3 (``keras3=True``: ``import keras``, for `tfprune.keras3`)."""
    if not keras3:
        return keras
    import keras as keras_3

    return keras_3


__all__ = ["lenet_300_100", "lenet5", "vgg_small", "plain_cnn", "resnet_cifar", "resnet20", "resnet56", "vgg_cifar", "VGG_CIFAR_STAGES",
           "mobilenet_v2_cifar", "MOBILENET_V2_STAGES", "compile_classifier"]


def lenet_300_100(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, *, keras3: bool = False) -> keras.Model:
    k = _api(keras3)
    L = k.layers  # noqa: N806
    inp = k.Input(tuple(input_shape), name="image")
    x = L.Flatten(name="flatten")(inp)
    x = L.Dense(300, activation="relu", name="fc1")(x)
    x = L.Dense(100, activation="relu", name="fc2")(x)
    out = L.Dense(num_classes, name="fc3")(x)
    return k.Model(inp, out, name="lenet_300_100")


def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, *, keras3: bool = False) -> keras.Model:
    """Caffe's LeNet-5 variant (no activation after the convolutions, as in Caffe)."""
    k = _api(keras3)
    L = k.layers  # noqa: N806
    inp = k.Input(tuple(input_shape), name="image")
    x = L.Conv2D(20, 5, name="conv1")(inp)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(50, 5, name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(500, activation="relu", name="fc1")(x)
    out = L.Dense(num_classes, name="fc2")(x)
    return k.Model(inp, out, name="lenet5")


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
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, stages: Sequence[tuple[int, int]] = ((16, 2), (32, 3), (64, 3)),
    *, keras3: bool = False,
) -> keras.Model:
    """A plain (no shortcut) VGG-style CNN of conv-BN-ReLU units: ``stages`` is ``((width, n_convs), ...)``.

    Max-pooling (2x2) follows every stage but the last; then GAP and a dense
    logits layer. The default has 8 convs (``conv0``..``conv7``); doubling the
    width as the resolution halves gives every conv after a stage's first about
    the same MACs (1.8 M at 28x28 input), and every conv but a stage's first
    keeps its input's shape, so it is a candidate for shallowing. ``keras3``: build a Keras 3 model.
    """
    if not stages or any(w < 1 or n < 1 for w, n in stages):
        raise ValueError(f"stages must be a non-empty list of (width >= 1, n_convs >= 1), got {stages!r}")
    k = _api(keras3)
    L = k.layers  # noqa: N806
    inp = k.Input(tuple(input_shape), name="image")
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
    return k.Model(inp, out, name="plain_cnn")


def _regularizer(weight_decay: float, k=keras):
    """L2 on a kernel with PyTorch's ``weight_decay`` convention: the loss gets ``wd / 2 * sum(w ** 2)``, the gradient ``wd * w``."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return k.regularizers.L2(weight_decay / 2) if weight_decay else None


def _input(input_shape: Sequence[int], normalize: bool | None, k=keras):
    """The image input and, for CIFAR-10 (``normalize``; None: when the shape is (32, 32, 3)), the normalisation layer after it."""
    shape = tuple(int(d) for d in input_shape)
    inp = k.Input(shape, name="image")
    if normalize is None:
        normalize = shape == (32, 32, 3)
    if not normalize:
        return inp, inp
    if shape[-1] != 3:
        raise ValueError(f"normalize=True applies the CIFAR-10 RGB statistics: the input needs 3 channels, got shape {shape}")
    norm = k.layers.Normalization(axis=-1, mean=list(CIFAR10_MEAN), variance=[s * s for s in CIFAR10_STD], name="normalize")
    return inp, norm(inp)


def _basic_block(x, filters: int, stride: int, name: str, reg=None, k=keras):
    L = k.layers  # noqa: N806
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv1")(x)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = L.ReLU(name=f"{name}_relu1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=reg, name=f"{name}_proj")(x)
        shortcut = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.ReLU(name=f"{name}_out")(y)


def resnet_cifar(
    depth: int = 20,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    normalize: bool | None = None,
    weight_decay: float = 0.0,
    keras3: bool = False,
) -> keras.Model:
    """CIFAR ResNet of ``depth = 6n + 2`` layers (20, 32, 44, 56, 110), He et al. 2016 section 4.2.

    A 3x3 conv (16 filters), then 3 stages of ``n`` basic blocks (two 3x3
    conv-BN, ReLU between them and after the addition) with 16, 32 and 64
    filters at 32x32, 16x16 and 8x8; the first block of stages 2 and 3
    strides by 2. Shortcuts: identity inside a stage; between stages
    **option B** (1x1 conv with stride 2, then BN), not the paper's CIFAR
    option A (subsample and zero-pad channels): option B adds 2 small
    convs (2,560 weights), and its shortcut is a layer that tfprune's
    channel graph couples to the block's output, where option A's padding
    would freeze the channels. Then global average pooling and a dense
    layer giving ``num_classes`` logits. BN momentum 0.9.

    Layer names: ``stem_conv``, ``stage{s}_block{b}_conv1`` / ``_conv2`` /
    ``_proj`` (+ ``_bn*``), ``fc``; ``normalize`` first when present.

    On 32x32x3 input (trainable parameters; prunable kernel weights;
    MACs per image from `tfprune.profile`):

    ===== ========== ========== ==========
    depth trainable  prunable   MACs
    ===== ========== ========== ==========
    20    272,474    270,896    40.8 M
    56    855,770    851,504    125.7 M
    ===== ========== ========== ==========

    (He et al.: 0.27 M and 0.85 M parameters.) BN moving statistics and the
    normalisation constants add 1,568 / 4,256 non-trainable values. ``normalize``: put the CIFAR-10
    per-channel normalisation first (raw pixels 0-255 in); None (default):
    only when ``input_shape == (32, 32, 3)``. ``keras3``: build a Keras 3 model (``import keras``) instead of tf-keras. ``weight_decay``: L2 on every
    conv and dense kernel in PyTorch's convention (gradient ``wd * w``;
    He et al. use 1e-4); 0 (default) adds no regularizer.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    k = _api(keras3)
    L = k.layers  # noqa: N806
    reg = _regularizer(weight_decay, k)
    inp, x = _input(input_shape, normalize, k)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, kernel_regularizer=reg, name="stem_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for b in range(n):
            stride = 2 if (stage > 1 and b == 0) else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{b + 1}", reg, k)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, kernel_regularizer=reg, name="fc")(x)
    return k.Model(inp, out, name=f"resnet{depth}")


def resnet20(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, **kwargs: object) -> keras.Model:
    """`resnet_cifar` with depth 20 (``kwargs``: ``normalize``, ``weight_decay``)."""
    return resnet_cifar(20, input_shape, num_classes, **kwargs)


def resnet56(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, **kwargs: object) -> keras.Model:
    """`resnet_cifar` with depth 56 (``kwargs``: ``normalize``, ``weight_decay``)."""
    return resnet_cifar(56, input_shape, num_classes, **kwargs)


#: The CIFAR VGG configurations at full width: one tuple of conv widths per stage; a 2x2 max-pool ends every stage.
VGG_CIFAR_STAGES = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def vgg_cifar(
    depth: int = 16,
    width: float = 0.25,
    *,
    batch_norm: bool = True,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    normalize: bool | None = None,
    weight_decay: float = 0.0,
    keras3: bool = False,
) -> keras.Model:
    """The CIFAR VGG of the pruning literature (LAMP, RD-Prune: VGG-16 with BN), with a width multiplier.

    ``depth`` 11 or 16 (`VGG_CIFAR_STAGES`): 8 or 13 3x3 convs, each
    followed by BN (``batch_norm``) and ReLU, a 2x2 max-pool after each of
    the 5 stages (32x32 -> 1x1), global average pooling and one dense layer
    giving ``num_classes`` logits (the common CIFAR variant: no 4096-wide
    classifier). Every conv has ``max(1, round(c * width))`` filters.

    **Default: VGG-16 at width 0.25** (16 to 128 filters), chosen for this
    project's 2 shared CPU cores: there a full-width VGG-16 takes about
    45 min per CIFAR-10 epoch; at width 0.25 about 1.2 min (train + test,
    batch 128, measured under load ~2), VGG-11 at 0.25 about 0.65 min, VGG-16
    at 0.5 about 4 min. MACs fall with the square of the width. On 32x32x3
    input (trainable parameters; MACs per image from `tfprune.profile`):

    ===== ====== ============ ==========
    depth width  trainable    MACs
    ===== ====== ============ ==========
    16    1.0    14,724,042   313.2 M
    16    0.5    3,684,842    78.7 M
    16    0.25   923,130      19.9 M
    11    1.0    9,228,362    152.8 M
    11    0.5    2,310,186    38.6 M
    11    0.25   579,098      9.9 M
    ===== ====== ============ ==========

    Layer names: ``block{s}_conv{c}``, ``block{s}_bn{c}``, ``block{s}_relu{c}``,
    ``block{s}_pool``, ``gap``, ``fc``; ``normalize`` first when present.
    ``normalize`` and ``weight_decay`` as in `resnet_cifar` (LAMP's recipe
    uses weight decay 5e-4 for VGG-16); ``keras3`` as in `resnet_cifar`.
    """
    if depth not in VGG_CIFAR_STAGES:
        raise ValueError(f"depth must be one of {sorted(VGG_CIFAR_STAGES)}, got {depth}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    k = _api(keras3)
    L = k.layers  # noqa: N806
    reg = _regularizer(weight_decay, k)
    inp, x = _input(input_shape, normalize, k)
    for s, stage in enumerate(VGG_CIFAR_STAGES[depth], start=1):
        for c, filters in enumerate(stage, start=1):
            x = L.Conv2D(max(1, round(filters * width)), 3, padding="same", use_bias=not batch_norm, kernel_regularizer=reg,
                         name=f"block{s}_conv{c}")(x)
            if batch_norm:
                x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{s}_bn{c}")(x)
            x = L.ReLU(name=f"block{s}_relu{c}")(x)
        x = L.MaxPooling2D(2, name=f"block{s}_pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, kernel_regularizer=reg, name="fc")(x)
    return k.Model(inp, out, name=f"vgg{depth}" + ("" if width == 1 else f"_w{width:g}"))


#: MobileNetV2's inverted-residual stages (Sandler et al. 2018, table 2): (expansion, output channels at width 1, blocks, stride
#: of the first block). For 32x32 inputs the stem and the second stage do not stride (the common CIFAR adaptation), so the
#: feature maps are 32, 32, 16, 8, 8, 4, 4 pixels wide.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(c: float, by: int = 8) -> int:
    """``c`` rounded to a multiple of ``by`` (at least ``by``), never more than 10% below ``c`` (MobileNet's rule)."""
    out = max(by, int(c + by / 2) // by * by)
    return out + by if out < 0.9 * c else out


def mobilenet_v2_cifar(
    width: float = 0.5,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    last_channels: int = 1280,
    normalize: bool | None = None,
    weight_decay: float = 0.0,
    keras3: bool = False,
) -> keras.Model:
    """MobileNetV2 for CIFAR-sized inputs, with a width multiplier (``width``; channels rounded to multiples of 8).

    A 3x3 stem conv (32 x width filters, stride 1), the inverted-residual blocks of `MOBILENET_V2_STAGES` (a 1x1 expansion
    conv to ``t`` times the input channels, a 3x3 depthwise conv, a linear 1x1 projection; BN after each, ReLU6 after the
    first two; an identity shortcut added when the block keeps size and channels), a 1x1 head conv to ``last_channels *
    width`` channels (rounded to 8), global average pooling and a dense layer giving ``num_classes`` logits. Strides: stem 1,
    stages 1, 1, 2, 2, 1, 2, 1 (32x32 -> 4x4).

    Layer names: ``stem_conv``, ``block{i}_expand`` / ``_dw`` / ``_project`` (+ ``_bn``, ``_relu``), ``block{i}_add``,
    ``head_conv``, ``fc``; ``normalize`` first when present (as in `resnet_cifar`, with ``weight_decay`` and ``keras3``).

    On 32x32x3 input (trainable parameters; MACs per image from `tfprune.profile`): width 0.35, 305,770 and 14.1 M;
    width 0.5, 590,410 and 26.3 M; width 1.0, 2,236,682 and 88.0 M.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    k = _api(keras3)
    L = k.layers  # noqa: N806
    reg = _regularizer(weight_decay, k)

    def conv_bn(x, filters: int, kernel: int, name: str, relu: bool, stride: int = 1):
        x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        return L.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    inp, x = _input(input_shape, normalize, k)
    x = conv_bn(x, _divisible(32 * width), 3, "stem_conv", True)
    i = 0
    for t, c, n, s in MOBILENET_V2_STAGES:
        out_ch = _divisible(c * width)
        for b in range(n):
            stride = s if b == 0 else 1
            y = x
            if t != 1:
                y = conv_bn(y, int(x.shape[-1]) * t, 1, f"block{i}_expand", True)
            y = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, depthwise_regularizer=reg, name=f"block{i}_dw")(y)
            y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_dw_bn")(y)
            y = L.ReLU(6.0, name=f"block{i}_dw_relu")(y)
            y = conv_bn(y, out_ch, 1, f"block{i}_project", False)
            x = L.Add(name=f"block{i}_add")([x, y]) if stride == 1 and int(x.shape[-1]) == out_ch else y
            i += 1
    x = conv_bn(x, _divisible(last_channels * width), 1, "head_conv", True)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, kernel_regularizer=reg, name="fc")(x)
    return k.Model(inp, out, name=f"mobilenet_v2_cifar_w{width:g}")


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
