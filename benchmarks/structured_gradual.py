"""Gradual (the Pruning callback over channel groups during fit) vs one-shot (plan -> shrink -> fine-tune) structured pruning, same training budget.

    python benchmarks/structured_gradual.py                                   # LeNet-5, MNIST, 0.5 and 0.7 of MACs, 2 seeds
    python benchmarks/structured_gradual.py --model resnet20 --train-n 8000 --macs 0.5 --seeds 0

Per seed: the model (`tfprune.models`, 28x28) is trained dense for
``--dense-epochs`` (Adam 1e-3, cosine decay, batch 128) on the MNIST training
images (--data, default ../shared/data/mnist/mnist.npz; the first
``--train-n``). From that dense model, at each fraction of MACs removed and
the same allocation:

* one-shot: `tfprune.structured.prune_channels` (plan, shrink) then
  ``--epochs`` of fine-tuning of the small model;
* gradual: `tfprune.structured.gradual.prune_channels_gradually`: ``--epochs``
  of ``fit`` with `tfprune.Pruning` over channel groups (ramp over the first 70% of the
  steps) on a copy of the dense model, then `shrink` (no further training).

Both get the same number of epochs, optimizer and learning-rate schedule after
the dense model. Test accuracy on the 10,000 test images; MACs of the small
model from `tfprune.profile`. Writes JSON and markdown (results/structured_gradual.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as benchmarks/structured.py (oneDNN crashed fine-tuning odd channel counts)

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.inventory.profiling import profile  # noqa: E402
from tfprune.structured.gradual import prune_channels_gradually  # noqa: E402
from tfprune.structured.prune import prune_channels, top1_accuracy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 128
MODELS = {"lenet5": tp.models.lenet5, "resnet20": lambda: tp.models.resnet20((28, 28, 1)), "vgg_small": tp.models.vgg_small}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    p.add_argument("--train-n", type=int, default=None, help="first N training images (default all)")
    p.add_argument("--macs", default="0.5,0.7", help="fractions of MACs removed")
    p.add_argument("--allocation", default="importance")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--dense-epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="training after the dense model, both paths")
    p.add_argument("--out", default=os.path.join(HERE, "results", "structured_gradual.json"))
    args = p.parse_args(argv)

    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data, fallback=False)
    if args.train_n:
        xt, yt = xt[: args.train_n], yt[: args.train_n]
    fractions = [float(v) for v in args.macs.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    rows = []
    t_all = time.perf_counter()
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        dense = MODELS[args.model]()
        steps = args.dense_epochs * -(-len(xt) // BATCH)
        tp.models.compile_classifier(dense, decay_steps=steps)
        t0 = time.perf_counter()
        dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=BATCH, verbose=0)
        dense_acc = top1_accuracy(ys, dense.predict(xs, batch_size=512, verbose=0))
        print(f"seed {seed}: dense {dense_acc:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
        for frac in fractions:
            for method in ("one-shot", "gradual"):
                t0 = time.perf_counter()
                kw = dict(allocation=args.allocation, batch_size=BATCH, seed=seed)
                if method == "one-shot":
                    small, rep = prune_channels(dense, frac, data=(xt, yt), eval_data=(xs, ys), finetune_epochs=args.epochs, **kw)
                else:
                    small, rep = prune_channels_gradually(dense, frac, data=(xt, yt), eval_data=(xs, ys), epochs=args.epochs, **kw)
                acc = rep.acc_after if method == "one-shot" else rep.acc_shrunk
                row = {"seed": seed, "method": method, "macs_requested": frac, "macs_removed": 1 - profile(small).macs / profile(dense).macs,
                       "plan_achieved": rep.plan.achieved, "acc": acc, "dense_acc": dense_acc, "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for frac in fractions:
        for method in ("one-shot", "gradual"):
            accs = [r["acc"] for r in rows if r["macs_requested"] == frac and r["method"] == method]
            removed = [r["macs_removed"] for r in rows if r["macs_requested"] == frac and r["method"] == method]
            summary.append({"method": method, "macs_requested": frac, "macs_removed_mean": float(np.mean(removed)),
                            "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "n_seeds": len(accs)})
    dense_accs = sorted({(r["seed"], r["dense_acc"]) for r in rows})
    result = {"model": args.model, "allocation": args.allocation, "train_n": len(xt), "dense_epochs": args.dense_epochs,
              "epochs": args.epochs, "dense_acc_mean": float(np.mean([a for _, a in dense_accs])), "summary": summary, "runs": rows,
              "command": "python benchmarks/structured_gradual.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": platform.platform(), "seconds": time.perf_counter() - t_all}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Gradual vs one-shot channel pruning: {args.model} on MNIST ({len(xt)} train images)", "",
             f"`{result['command']}`; dense {args.dense_epochs} epochs (mean test accuracy {result['dense_acc_mean']:.4f}), then "
             f"{args.epochs} epochs for either path, allocation `{args.allocation}`, seeds {seeds}.", "",
             "| method | MACs removed (requested) | MACs removed (shrunk) | test accuracy | std | seeds |", "|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['macs_requested']:.2f} | {s['macs_removed_mean']:.3f} | {s['acc_mean']:.4f} | "
                     f"{s['acc_std']:.4f} | {s['n_seeds']} |")
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
