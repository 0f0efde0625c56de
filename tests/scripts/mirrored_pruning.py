"""Prune one small model on one device and under MirroredStrategy with 2 logical CPUs; print both results as JSON.

Run in a fresh process: logical devices must be configured before TensorFlow starts.
Usage: python mirrored_pruning.py GRANULARITY[,GRANULARITY...]  (one "RESULT <granularity> <json>" line each)
"""

import json
import sys

# isort: off
import tfprune  # noqa: F401  first: sets TF_USE_LEGACY_KERAS before TensorFlow resolves tf.keras
import tensorflow as tf
from dist_common import build, data, summary

# isort: on

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
granularities = sys.argv[1].split(",")
x, y = data()
# one strategy object for every run: a second MirroredStrategy in the same process can reuse the first one's collective keys
MIRRORED = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def run(granularity: str) -> dict:
    out = {}
    for name, strategy in (("one", tf.distribute.get_strategy()), ("mirrored", MIRRORED)):
        with strategy.scope():
            w, cb = build(granularity)
        w.fit(x, y, batch_size=32, epochs=2, callbacks=[cb], verbose=0, shuffle=False)
        out[name] = summary(w, cb, strategy.num_replicas_in_sync)
    return out


for granularity in granularities:
    print(f"RESULT {granularity} " + json.dumps(run(granularity)), flush=True)
