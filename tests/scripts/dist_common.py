"""What the distribution scripts share: one small model, its data, a pruning run and its summary as JSON."""

import numpy as np

# isort: off
import tfprune  # first: sets TF_USE_LEGACY_KERAS before TensorFlow resolves tf.keras
from tfprune._keras import keras
from tfprune.masks.wrapping import channel_masks

# isort: on


def model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, name="c2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="d1")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(x))


def data():
    rng = np.random.default_rng(0)
    return rng.random((256, 8, 8, 4), dtype=np.float32), rng.integers(0, 4, 256)


def build(granularity: str):
    """The wrapped, compiled model and its callback (build under the strategy's scope)."""
    w = tfprune.wrap(model(), granularity={"2:4": "2:4", "channel": "channel"}.get(granularity, "unstructured"))
    w.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if granularity == "channel":
        return w, tfprune.Pruning(macs=0.4, granularity="channel", end_step=12, frequency=2)
    return w, tfprune.Pruning(0.5, granularity=granularity, end_step=12, frequency=2)


def summary(w, cb, replicas: int) -> dict:
    """Steps of every wrapper, zeros (or masked channels) per layer, what the plan asked, and the masks themselves."""
    cms = channel_masks(w)
    if cms:
        return {
            "replicas": replicas,
            "steps": [int(m.pruning_step.numpy()) for m in cms],
            "zeros": {m.name: int(np.count_nonzero(m.keep.numpy() == 0)) for m in cms},
            "planned": {m.name: int(round(m.pruning_schedule.target_sparsity * m.channels)) for m in cms},
            "masks": {m.name: np.flatnonzero(m.keep.numpy() == 0).tolist() for m in cms},
        }
    inv = tfprune.prunable_layers(w)
    return {
        "replicas": replicas,
        "steps": [int(p.layer.pruning_step.numpy()) for p in inv],
        "zeros": {p.name: int(np.count_nonzero(p.kernel() == 0)) for p in inv},
        "planned": {p.name: int(cb.plan_.removed[p.name]) for p in inv},
    }
