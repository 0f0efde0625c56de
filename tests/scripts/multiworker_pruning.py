"""One worker of a MultiWorkerMirroredStrategy pruning run (TF_CONFIG names the cluster), or the one-device reference.

Usage: python multiworker_pruning.py GRANULARITY[,GRANULARITY...] [--single]
Prints one "RESULT <granularity> <json>" line per granularity (`dist_common.summary`).
Without --single, TF_CONFIG must be set (the test sets it to two workers on 127.0.0.1).
"""

import json
import sys

# isort: off
import tfprune  # noqa: F401  first: sets TF_USE_LEGACY_KERAS before TensorFlow resolves tf.keras
import tensorflow as tf
from dist_common import build, data, summary

# isort: on

granularities = sys.argv[1].split(",")
single = "--single" in sys.argv[2:]
strategy = tf.distribute.get_strategy() if single else tf.distribute.MultiWorkerMirroredStrategy()
x, y = data()
for granularity in granularities:
    with strategy.scope():
        w, cb = build(granularity)
    # the global batch is 32 on one device and across the workers; numpy input is sharded by Keras
    w.fit(x, y, batch_size=32, epochs=2, callbacks=[cb], verbose=0, shuffle=False)
    print(f"RESULT {granularity} " + json.dumps(summary(w, cb, strategy.num_replicas_in_sync)), flush=True)
