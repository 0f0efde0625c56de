"""The global-removal-ratio paper's experiment on CIFAR-10 ResNet-56: accuracy against one global removal ratio, and what it removes per layer.

    python benchmarks/global_ratio_cifar.py --models resnet56 --max-minutes 110 --resume
    python benchmarks/global_ratio_cifar.py --models resnet20 --resume

One removal ratio ``r`` (fraction of all prunable weights removed, 0.1 to 0.9)
for the whole model, split by tfprune's global rule
(``tfprune.plan(model, r, allocation="global_ratio")``: one threshold on the
per-layer normalised score, `tfprune.allocation.global_ratio`), from the
committed dense checkpoint:

  one-shot     the plan's weights removed at once (smallest magnitudes in each layer), no training
  fine-tuned   ``--ramp-epochs`` of ``fit`` with `tfprune.Pruning` ramping to the same plan, then
               ``--finetune-epochs`` at it (augmented data, SGD momentum 0.9 Nesterov, lr cosine to 0)

and the share of each layer removed against its depth (the paper's
"pattern of what is removed per layer"). Writes
``benchmarks/results/global_ratio_cifar.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _cifar import (  # noqa: E402
    RESULTS,
    Deadline,
    Ledger,
    accuracy_on,
    check_subset,
    command_line,
    common_arguments,
    compile_finetune,
    dense_entry,
    load_data,
)

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.files import atomic_write, save_figure  # noqa: E402

RATIOS = tuple(round(0.1 * k, 1) for k in range(1, 10))
DEFAULT_OUT = os.path.join(RESULTS, "global_ratio_cifar.json")
RULE = "global_ratio"


def run_one(dense, tag: str, ratio: float, args, data) -> dict:
    (xt, yt), (xs, ys) = data
    t0, c0 = time.time(), time.process_time()
    plan = tp.plan(dense, ratio, allocation=RULE)
    one_shot, _ = tp.obs.prune(dense, xt[:32].astype(np.float32), targets=plan, solver="magnitude", progress=False)
    acc_one_shot = accuracy_on(one_shot, xs, ys)
    acc = None
    if args.ramp_epochs:
        steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
        epochs = args.ramp_epochs + args.finetune_epochs
        keras.utils.set_random_seed(1000)
        model = compile_finetune(tp.wrap(dense), args.lr, epochs * steps)
        model.fit(tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=0), epochs=epochs, steps_per_epoch=steps,
                  callbacks=[tp.Pruning(plan, begin_step=0, end_step=args.ramp_epochs * steps)], verbose=0)
        acc = accuracy_on(model, xs, ys)
    names = tp.prunable_layers(dense).names
    return {"model": tag, "ratio": ratio, "acc_one_shot": acc_one_shot, "acc_finetuned": acc,
            "layer_removed": [round(float(plan.targets[n]), 5) for n in names], "layers": names,
            "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def write_outputs(data: dict, path: str) -> None:
    cfg, b = data["config"], data["config"]["budget"]
    base = os.path.splitext(path)[0]
    lines = []
    for tag, e in data["models"].items():
        runs = sorted((r for r in data["runs"] if r["model"] == tag), key=lambda r: r["ratio"])
        e["results"] = [{k: r[k] for k in ("ratio", "acc_one_shot", "acc_finetuned")} for r in runs]
        lines += [f"### {tag}: dense {100 * e['dense_acc']:.2f}% (`{e['checkpoint']}`), rule `{RULE}`", "",
                  "| removal ratio | one-shot % | fine-tuned % | least / most removed layer | first conv / last layer removed |", "|---:|---:|---:|---|---|"]
        for r in runs:
            lr = np.asarray(r["layer_removed"])
            ft = "" if r["acc_finetuned"] is None else f"{100 * r['acc_finetuned']:.2f}"
            lines.append(f"| {r['ratio']:g} | {100 * r['acc_one_shot']:.2f} | {ft} | {lr.min():.3f} / {lr.max():.3f} | {lr[0]:.3f} / {lr[-1]:.3f} |")
        lines.append("")
    lines += [f"Fine-tuned: {b['ramp_epochs']} epoch(s) of polynomial ramp (power 3) + {b['finetune_epochs']} at the plan, augmented CIFAR-10, "
              f"SGD momentum 0.9 Nesterov, lr {b['lr']} cosine to 0, batch {b['batch_size']}, one seed. One-shot: the plan's weights removed "
              f"at once (smallest |w| in each layer), BatchNorm statistics of the dense model. CPU time so far: {cfg['cpu_minutes']:.1f} min "
              f"({cfg['wall_minutes']:.1f} min wall) on {cfg['machine']}.", "", "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(cfg["commands"]))]
    with atomic_write(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(data["models"])
    if not models:
        return
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for (ax_pat, ax_acc), tag in zip(axes, models):
        runs = sorted((r for r in data["runs"] if r["model"] == tag), key=lambda r: r["ratio"])
        cmap = plt.get_cmap("viridis")
        for i, r in enumerate(runs):
            ax_pat.plot(np.arange(1, len(r["layer_removed"]) + 1), r["layer_removed"], marker=".", color=cmap(i / max(1, len(runs) - 1)),
                        label=f"r={r['ratio']:g}")
        ax_pat.set_xlabel("prunable layer (depth, input to output)")
        ax_pat.set_ylabel("share of the layer's weights removed")
        ax_pat.set_title(f"{tag}: per-layer removal under one global ratio")
        ax_pat.grid(alpha=0.3)
        ax_pat.legend(fontsize=7, ncol=3)
        ax_acc.plot([r["ratio"] for r in runs], [100 * r["acc_one_shot"] for r in runs], marker="o", label="one-shot")
        ft = [r for r in runs if r["acc_finetuned"] is not None]
        ax_acc.plot([r["ratio"] for r in ft], [100 * r["acc_finetuned"] for r in ft], marker="s", label="fine-tuned")
        ax_acc.axhline(100 * data["models"][tag]["dense_acc"], color="k", ls=":", lw=1, label="dense")
        ax_acc.set_xlabel("global removal ratio (fraction of weights removed)")
        ax_acc.set_ylabel("test accuracy (%)")
        ax_acc.set_title(f"{tag}: accuracy vs removal ratio")
        ax_acc.grid(alpha=0.3)
        ax_acc.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, base + ".png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56")
    ap.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    ap.add_argument("--ramp-epochs", type=int, default=1, help="0: one-shot only")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.ramp_epochs < 0 or args.finetune_epochs < 0:
        ap.error("--ramp-epochs and --finetune-epochs must be >= 0")
    check_subset(ap, args, DEFAULT_OUT)
    (xt, yt), (xs, ys) = load_data(args.data, args.subset)
    budget = {"rule": RULE, "ramp_epochs": args.ramp_epochs, "finetune_epochs": args.finetune_epochs, "lr": args.lr,
              "batch_size": args.batch_size, "n_train": len(xt), "n_test": len(xs)}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "ratio"))
    deadline, last = Deadline(args.max_minutes), 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, (xs, ys))
        for ratio in (float(r) for r in args.ratios.split(",")):
            if ledger.done(model=tag, ratio=ratio):
                continue
            if not deadline.allows(1.1 * last):
                print(f"[global_ratio_cifar] --max-minutes {args.max_minutes}: stopping; run the same command with --resume", flush=True)
                break
            run = run_one(dense, tag, ratio, args, ((xt, yt), (xs, ys)))
            last = run["seconds"]
            ledger.add(run)
            ledger.save()
            write_outputs(ledger.data, args.out)
            print(f"[global_ratio_cifar] {tag} r={ratio:g}: one-shot {100 * run['acc_one_shot']:.2f}%, fine-tuned {run['acc_finetuned']} "
                  f"({run['seconds'] / 60:.1f} min)", flush=True)
    ledger.save()
    write_outputs(ledger.data, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
