"""One deterministic pruning run with BackupAndRestore, optionally SIGKILLed mid-ramp (tests/test_fault.py).

Usage: python fault_pruning.py GRANULARITY BACKUP_DIR OUT [--kill-at-epoch E --kill-at-batch B]

GRANULARITY: ``unstructured`` (``tfprune.wrap(model)`` + ``Pruning(sparsity=0.6)``) or ``channel``
(``wrap(model, granularity="channel")`` + ``Pruning(macs=0.4)``). The ramp is the callback's default
(``end_step=None``: 70 % of the fit's steps), so a restarted run must keep the ramp it saved.

Everything is deterministic (seeded init, op determinism, one thread, ``shuffle=False``): a run that
restarts from the backup of an epoch end and redoes that epoch computes bit for bit what an
uninterrupted run computes.

* Without --kill-*: trains to the end, writes every variable of the model (kernels, biases, BN statistics,
  wrapper masks / keep-vectors, ranks, step counters, schedules) and of the optimizer to ``OUT.npz``,
  and a summary (``action``, first epoch of this fit, zeros / masked channels and their targets) to ``OUT.json``.
* With --kill-at-epoch E --kill-at-batch B: at the end of batch B of epoch E it writes the state it is in
  (pruning step, the ramp, zeros / masked channels now, the backup files present) to ``OUT.killed.json``,
  then sends itself SIGKILL: no Python cleanup, no ``on_train_end``, no deletion of the backup.
"""

import argparse
import json
import os
import signal
from pathlib import Path

import numpy as np

# isort: off
import tfprune  # first: sets TF_USE_LEGACY_KERAS before TensorFlow resolves tf.keras
import tensorflow as tf
from tfprune._keras import keras
from tfprune.masks.wrapping import channel_masks

# isort: on

# before any op runs: one thread each, deterministic kernels
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()

N, BATCH, EPOCHS = 256, 32, 5  # 8 steps per epoch, 40 steps; default ramp: steps 0 -> 28


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 10, 10, 3)).astype(np.float32)
    y = (x.reshape(N, -1) @ rng.standard_normal((300, 4))).argmax(1)  # learnable labels
    return x, y


def model():
    inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(16, 3, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(24, 3, activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="d1")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(x), name="fault")


def build(granularity: str):
    keras.utils.set_random_seed(0)
    if granularity == "channel":
        w = tfprune.wrap(model(), granularity="channel")
        cb = tfprune.Pruning(macs=0.4, granularity="channel")
    elif granularity == "unstructured":
        w = tfprune.wrap(model())
        cb = tfprune.Pruning(0.6)
    else:
        raise SystemExit(f"unknown granularity {granularity!r}")
    w.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return w, cb


def state(w) -> dict:
    """The pruning state now: step, ramp, and per layer/wrapper the units pruned now and at the target."""
    cms = channel_masks(w)
    if cms:
        s = cms[0].pruning_schedule
        return {
            "step": int(cms[0].pruning_step.numpy()), "begin_step": int(s.begin_step), "end_step": int(s.end_step),
            "pruned": {m.name: int(np.count_nonzero(m.keep.numpy() == 0)) for m in cms},
            "target": {m.name: int(round(m.pruning_schedule.target_sparsity * m.channels)) for m in cms},
        }
    inv = [p for p in tfprune.prunable_layers(w) if p.wrapped]
    s = inv[0].schedule
    return {
        "step": int(inv[0].layer.pruning_step.numpy()), "begin_step": int(s.begin_step), "end_step": int(s.end_step),
        "pruned": {p.name: int(np.count_nonzero(p.kernel() == 0)) for p in inv},
        "masked": {p.name: int(np.count_nonzero(p.mask() == 0)) for p in inv},
        "target": {p.name: p.n_params - int(round(p.n_params * (1 - p.schedule.target_sparsity))) for p in inv},
        "sparsity": sum(int(np.count_nonzero(p.kernel() == 0)) for p in inv) / sum(p.n_params for p in inv),
    }


class Record(keras.callbacks.Callback):
    """The first epoch this fit runs (the restored one after a restart); optionally SIGKILL at (epoch, batch)."""

    def __init__(self, kill_at, killed_path: Path, backup_dir: str):
        super().__init__()
        self.kill_at, self.killed_path, self.backup_dir = kill_at, killed_path, backup_dir
        self.first_epoch = self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.kill_at != (self.epoch, batch):
            return
        files = sorted(str(p.relative_to(self.backup_dir)) for p in Path(self.backup_dir).rglob("*") if p.is_file())
        with open(self.killed_path, "w") as f:
            json.dump({"epoch": self.epoch, "batch": batch, "first_epoch": self.first_epoch, "backup_files": files, **state(self.model)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("granularity", choices=["unstructured", "channel"])
    ap.add_argument("backup_dir")
    ap.add_argument("out")
    ap.add_argument("--kill-at-epoch", type=int)
    ap.add_argument("--kill-at-batch", type=int)
    a = ap.parse_args()
    if (a.kill_at_epoch is None) != (a.kill_at_batch is None):
        ap.error("give both --kill-at-epoch and --kill-at-batch, or neither")
    kill_at = None if a.kill_at_epoch is None else (a.kill_at_epoch, a.kill_at_batch)
    x, y = data()
    w, cb = build(a.granularity)
    rec = Record(kill_at, Path(a.out + ".killed.json"), a.backup_dir)
    # Pruning first: its epoch-end mask application lands in the backup; it sets up at the first batch, after the restore
    w.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
          callbacks=[cb, keras.callbacks.BackupAndRestore(a.backup_dir), rec])
    variables = {f"model/{i:03d}/{v.name}": v.numpy() for i, v in enumerate(w.weights)}
    variables.update({f"optimizer/{i:03d}/{v.name}": v.numpy() for i, v in enumerate(w.optimizer.variables)})
    np.savez(a.out + ".npz", **variables)
    with open(a.out + ".json", "w") as f:
        json.dump({"action": cb.action_, "planned_here": cb.plan_ is not None, "first_epoch": rec.first_epoch, **state(w)}, f)


if __name__ == "__main__":
    main()
