"""BatchNorm re-estimation after shallowing: its effect on accuracy and its cost.

    python benchmarks/bn_reestimate.py

1. Train ResNet-20 (28x28 MNIST) for 1 epoch; remove each removable residual
   block alone; test accuracy (first 3,000 test images) of the student as
   rebuilt (stale BatchNorm statistics) and after `reestimate_batchnorm` on
   2,048 training images.
2. Seconds `reestimate_batchnorm` takes on 2,048 images for ResNet-20 and ResNet-56.
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
from tfprune.obs.prune import reestimate_batchnorm  # noqa: E402
from tfprune.shallow import find_units, remove_units  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bn_reestimate.json"))
    ap.add_argument("--samples", type=int, default=2048)
    args = ap.parse_args(argv)
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    xs, ys, calib = xs[:3000], ys[:3000], xt[: args.samples]

    def accuracy(m) -> float:
        return float(np.mean(np.argmax(m.predict(xs, verbose=0, batch_size=500), 1) == ys))

    keras.utils.set_random_seed(0)
    dense = tp.models.compile_classifier(tp.models.resnet_cifar(20, (28, 28, 1)), 1e-3, int(np.ceil(len(xt) / 128)))
    dense.fit(xt, yt, epochs=1, batch_size=128, verbose=0)
    out: dict = {"samples": args.samples, "dense_acc": accuracy(dense), "removals": [], "seconds": {}}
    for unit in [u for u in find_units(dense) if u.removable]:
        student = remove_units(dense, [unit])
        row = {"removed": unit.end, "acc_stale_bn": accuracy(student)}
        row["acc_reestimated_bn"] = accuracy(reestimate_batchnorm(student, calib))
        out["removals"].append(row)
        print(row, flush=True)
    for depth in (20, 56):
        m = tp.models.resnet_cifar(depth, (28, 28, 1))
        t = time.perf_counter()
        reestimate_batchnorm(m, calib)
        out["seconds"][f"resnet{depth}"] = time.perf_counter() - t
        print(depth, out["seconds"][f"resnet{depth}"], flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    lines = [f"ResNet-20 after 1 epoch: dense accuracy {100 * out['dense_acc']:.2f}% (first 3,000 test images); one residual block removed:\n",
             "| block removed | accuracy, stale BN statistics | accuracy, BN re-estimated |", "|---|---:|---:|"]
    lines += [f"| {r['removed']} | {100 * r['acc_stale_bn']:.2f} | {100 * r['acc_reestimated_bn']:.2f} |" for r in out["removals"]]
    lines += ["", f"`reestimate_batchnorm` on {args.samples} images (2 CPU cores): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in out["seconds"].items()) + "."]
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
