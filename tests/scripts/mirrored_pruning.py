"""Prune one small model on one device and under MirroredStrategy with 2 logical CPUs; print both results as JSON.

Run in a fresh process: logical devices must be configured before TensorFlow starts.
Usage: python mirrored_pruning.py GRANULARITY[,GRANULARITY...]  (one "RESULT <granularity> <json>" line each)
"""

import json
import sys

import numpy as np

# isort: off
import tfprune  # first: sets TF_USE_LEGACY_KERAS before TensorFlow resolves tf.keras
import tensorflow as tf
from tfprune._keras import keras

# isort: on

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
granularities = sys.argv[1].split(",")


def model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, name="c2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="d1")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(x))


rng = np.random.default_rng(0)
x = rng.random((256, 8, 8, 4), dtype=np.float32)
y = rng.integers(0, 4, 256)
def run(granularity: str) -> dict:
    out = {}
    for name, strategy in (("one", tf.distribute.get_strategy()), ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        with strategy.scope():
            w = tfprune.wrap(model(), granularity="2:4" if granularity == "2:4" else "unstructured")
            w.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        cb = tfprune.Pruning(0.5, granularity=granularity, end_step=12, frequency=2)
        w.fit(x, y, batch_size=32, epochs=2, callbacks=[cb], verbose=0, shuffle=False)
        inv = tfprune.prunable_layers(w)
        out[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "steps": [int(p.layer.pruning_step.numpy()) for p in inv],
            "zeros": {p.name: int(np.count_nonzero(p.kernel() == 0)) for p in inv},
            "planned": {p.name: int(cb.plan_.removed[p.name]) for p in inv},
        }
    return out


for granularity in granularities:
    print(f"RESULT {granularity} " + json.dumps(run(granularity)), flush=True)
