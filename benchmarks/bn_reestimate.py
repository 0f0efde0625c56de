"""BatchNorm re-estimation after shallowing: its effect on accuracy, the one-pass method against the sequential one, and cost.

    python benchmarks/bn_reestimate.py            # full run (about 10 minutes on 2 CPU cores)
    python benchmarks/bn_reestimate.py --quick    # skips the sequential method on ResNet-56

Two methods, both setting each BatchNorm's moving mean/variance to the
moments of its input over 2,048 training images:

* sequential (the former `reestimate_batchnorm`, kept here as the
  reference): one sub-model per BatchNorm, each run from the input with the
  BatchNorms before it already updated; exact, but one partial forward pass
  per BatchNorm.
* one pass (`tfprune.training.finetune.reestimate_batchnorm`): every BatchNorm
  normalises with the statistics of what it sees in one forward pass of the
  2,048 images as one batch (Dropout off); equal to the sequential result.
  Also shown: the same with batches of 256 (per-batch normalisation
  upstream: an approximation that needs less memory).

1. Train ResNet-20 (28x28 MNIST) for 1 epoch; remove each removable residual
   block alone; test accuracy (first 3,000 test images) of the student as
   rebuilt (stale statistics) and after each method, and the largest
   difference between the statistics the methods set.
2. Seconds each method takes for ResNet-20 and ResNet-56.
Writes benchmarks/results/bn_reestimate.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.shallow import find_units, remove_units  # noqa: E402
from tfprune.training.finetune import reestimate_batchnorm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def sequential_reestimate(model, x: np.ndarray, batch_size: int = 256):
    """The reference: each top-level BatchNorm in graph order, from a sub-model up to it (earlier ones already updated)."""
    for b in [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        upto = keras.Model(model.inputs, b.input)
        parts = [np.asarray(upto(x[i : i + batch_size], training=False), np.float64) for i in range(0, len(x), batch_size)]
        a = np.concatenate(parts).reshape(-1, b.moving_mean.shape[0])
        b.moving_mean.assign(a.mean(0).astype(np.float32))
        b.moving_variance.assign(a.var(0).astype(np.float32))
    return model


def bn_stats(model) -> dict:
    return {b.name: (b.moving_mean.numpy(), b.moving_variance.numpy()) for b in model.layers if isinstance(b, keras.layers.BatchNormalization)}


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over every BatchNorm's mean and variance, relative to that BatchNorm's largest |value|."""
    return float(max(np.abs(a[k][i] - b[k][i]).max() / max(np.abs(a[k][i]).max(), 1e-12) for k in a for i in (0, 1)))


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bn_reestimate.json"))
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="skip the sequential method on ResNet-56 (about 2.5 minutes)")
    args = ap.parse_args(argv)
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    xs, ys, calib = xs[:3000], ys[:3000], xt[: args.samples]

    def accuracy(m) -> float:
        return float(np.mean(np.argmax(m.predict(xs, verbose=0, batch_size=500), 1) == ys))

    keras.utils.set_random_seed(0)
    dense = tp.models.compile_classifier(tp.models.resnet_cifar(20, (28, 28, 1)), 1e-3, int(np.ceil(len(xt) / 128)))
    dense.fit(xt, yt, epochs=1, batch_size=128, verbose=0)
    out: dict = {"samples": args.samples, "dense_acc": accuracy(dense), "removals": [], "seconds": {}, "quick": args.quick}
    for unit in [u for u in find_units(dense) if u.removable]:
        student = remove_units(dense, [unit])
        row = {"removed": unit.end, "acc_stale_bn": accuracy(student)}
        seq, row["seconds_sequential"] = timed(sequential_reestimate, tp.clone(student), calib)
        one, row["seconds_one_pass"] = timed(reestimate_batchnorm, tp.clone(student), calib)
        bat, row["seconds_batches_256"] = timed(reestimate_batchnorm, tp.clone(student), calib, batch_size=256)
        row["acc_sequential"], row["acc_one_pass"], row["acc_batches_256"] = accuracy(seq), accuracy(one), accuracy(bat)
        row["max_rel_diff_one_pass"] = max_rel_diff(bn_stats(seq), bn_stats(one))
        row["max_rel_diff_batches_256"] = max_rel_diff(bn_stats(seq), bn_stats(bat))
        out["removals"].append(row)
        print(row, flush=True)
    for depth in (20, 56):
        m = tp.models.resnet_cifar(depth, (28, 28, 1))
        secs = {"one_pass": timed(reestimate_batchnorm, m, calib)[1], "batches_256": timed(reestimate_batchnorm, m, calib, batch_size=256)[1]}
        if not (args.quick and depth == 56):
            secs["sequential"] = timed(sequential_reestimate, m, calib)[1]
        out["seconds"][f"resnet{depth}"] = secs
        print(depth, secs, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    lines = [
        f"ResNet-20 after 1 epoch: dense accuracy {100 * out['dense_acc']:.2f}% (first 3,000 test images); one residual block removed; "
        f"BatchNorm statistics from {args.samples} training images:\n",
        "| block removed | stale BN | sequential (reference) | one pass | batches of 256 | max rel. diff one pass | max rel. diff batches |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['removed']} | {100 * r['acc_stale_bn']:.2f} | {100 * r['acc_sequential']:.2f} | {100 * r['acc_one_pass']:.2f} | "
        f"{100 * r['acc_batches_256']:.2f} | {r['max_rel_diff_one_pass']:.1e} | {r['max_rel_diff_batches_256']:.1e} |"
        for r in out["removals"]
    ]
    lines += ["", "Seconds to re-estimate every BatchNorm on 2 CPU cores (shared with other jobs while this ran):", "",
              "| model | sequential (reference) | one pass | batches of 256 |", "|---|---:|---:|---:|"]
    for k, v in out["seconds"].items():
        seq = f"{v['sequential']:.1f}" if "sequential" in v else "skipped (--quick)"
        lines.append(f"| {k} | {seq} | {v['one_pass']:.1f} | {v['batches_256']:.1f} |")
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
