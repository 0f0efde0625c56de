"""Does importance-based allocation help every granularity? (How Compact? pairs it with several pruning methods.)

    python benchmarks/granularity.py            # LeNet-5, 2 seeds
    python benchmarks/granularity.py --quick    # 1 seed

Granularities (tfprune's in-graph mask rules): unstructured, block (Dense
kernels in 4x1 blocks; convolutions element-wise), channel (whole output
channels and their biases; the logits layer is left dense, as by default)
and 2:4 (in every group of 4 input weights, 2 go; conv1 has one input
channel and stays dense, so the total is 0.4994). For each: uniform vs LAMP
vs importance (capacity) allocation at the same total, same training budget.
Writes benchmarks/results/granularity.json and .md.
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

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = [("unstructured", None, 0.95), ("block", (4, 1), 0.95), ("channel", None, 0.7), ("2:4", None, 0.5)]
ALLOCATORS = ["uniform", "lamp", "importance"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "granularity.json"))
    args = ap.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    steps = int(np.ceil(len(xt) / 128))
    rows, t0 = [], time.time()
    for seed in range(seeds):
        keras.utils.set_random_seed(seed)
        dense = tp.models.compile_classifier(tp.models.lenet5())
        dense.fit(xt, yt, epochs=3, batch_size=128, verbose=0)
        dense_acc = float(dense.evaluate(xs, ys, verbose=0)[1])
        for gran, block, sparsity in SETTINGS:
            for alloc in ALLOCATORS:
                keras.utils.set_random_seed(100 + seed)
                w = tp.models.compile_classifier(tp.wrap(dense, block_size=block, granularity="2:4" if gran == "2:4" else "unstructured"),
                                                 learning_rate=5e-4)
                cb = tp.Pruning(sparsity, importance="capacity", allocation=alloc, granularity=gran, end_step=steps, verbose=0)
                w.fit(xt, yt, epochs=3, batch_size=128, verbose=0, callbacks=[cb])
                acc = float(w.evaluate(xs, ys, verbose=0)[1])
                achieved = tp.prunable_layers(w).total_sparsity()
                rows.append({"seed": seed, "granularity": gran, "block_size": block, "sparsity": sparsity, "allocation": alloc,
                             "acc": acc, "achieved_sparsity": achieved, "dense_acc": dense_acc, "targets": cb.targets_})
                print(f"[{time.time() - t0:5.0f}s] seed {seed} {gran:<12} {alloc:<10} s={sparsity} acc={acc:.4f} achieved={achieved:.4f}", flush=True)
                os.makedirs(os.path.dirname(args.out), exist_ok=True)
                with open(args.out, "w") as f:
                    json.dump({"budget": "dense 3 epochs; prune: 1 epoch ramp + 2 epochs at target, Adam 5e-4, batch 128", "rows": rows}, f, indent=2)
    lines = ["| granularity | total sparsity | " + " | ".join(ALLOCATORS) + " |", "|---|---:|" + "---:|" * len(ALLOCATORS)]
    for gran, _, sparsity in SETTINGS:
        cells = []
        for alloc in ALLOCATORS:
            accs = [r["acc"] for r in rows if r["granularity"] == gran and r["allocation"] == alloc]
            ach = np.mean([r["achieved_sparsity"] for r in rows if r["granularity"] == gran and r["allocation"] == alloc])
            cells.append(f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f} (s={ach:.3f})")
        lines.append(f"| {gran} | {sparsity} | " + " | ".join(cells) + " |")
    dense_mean = np.mean([r["dense_acc"] for r in rows])
    lines.append(f"\nLeNet-5 on MNIST, dense {100 * dense_mean:.2f}%, {seeds} seed(s); test accuracy %, mean ± std; s = achieved total sparsity.")
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
