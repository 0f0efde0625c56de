"""Prune a small Keras 3 CNN in its own fit on the backend named by $KERAS_BACKEND; print a JSON summary (run by tests/test_keras3.py).

    KERAS_BACKEND=jax python tests/scripts/keras3_backend.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

import keras  # the backend comes from $KERAS_BACKEND, read at this import
import numpy as np

import tfprune
from tfprune.masks.granularity import kept_count


def main(out_dir: str) -> int:
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="fc2")(x))
    rng = np.random.default_rng(0)
    xs, ys = rng.random((256, 12, 12, 1)).astype("float32"), rng.integers(0, 4, 256)
    wrapped = tfprune.wrap(model)
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], steps_per_execution=2)
    cb = tfprune.Pruning(0.8, end_step=12, frequency=2)
    hist = wrapped.fit(xs, ys, batch_size=32, epochs=2, callbacks=[cb], verbose=0)
    layers = {}
    for p in tfprune.prunable_layers(wrapped):
        k = p.kernel()
        layers[p.name] = {"zeros": int((k == 0).sum()), "planned_zeros": int(k.size - kept_count(k.size, cb.targets_[p.name])),
                          "step": int(p.layer.pruning_step.numpy())}
    plain = tfprune.strip(wrapped)
    path = os.path.join(out_dir, "plain.keras")
    plain.save(path)
    again = keras.saving.load_model(path)
    diff = float(np.max(np.abs(np.asarray(again.predict(xs[:16], verbose=0)) - np.asarray(wrapped.predict(xs[:16], verbose=0)))))
    channels = tfprune.wrap(model, granularity="channel")  # coupled channel groups, masked in the JAX train step
    channels.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ccb = tfprune.Pruning(macs=0.5, granularity="channel", end_step=8, frequency=2)
    channels.fit(xs, ys, batch_size=32, epochs=1, callbacks=[ccb], verbose=0)
    small = ccb.finalize(x=xs[:8])
    channel_diff = float(np.max(np.abs(np.asarray(small.predict(xs[:16], verbose=0)) - np.asarray(channels.predict(xs[:16], verbose=0)))))
    result = {"backend": keras.backend.backend(), "layers": layers, "sparsity_log": hist.history["sparsity"], "max_abs_diff": diff,
              "plain_layers": [type(layer).__name__ for layer in again.layers], "small_macs_ratio": tfprune.profile(small).macs /
              tfprune.profile(model).macs, "planned_macs_removed": float(ccb.plan_.achieved), "channel_max_abs_diff": channel_diff,
              "small_backend_module": type(small).__module__}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
