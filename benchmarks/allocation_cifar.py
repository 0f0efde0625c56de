"""Allocation on CIFAR-10: per-layer sparsity from each allocator, one pruning and fine-tuning budget for all.

    python benchmarks/allocation_cifar.py --models vgg16_w0.25 --max-minutes 110 --resume
    python benchmarks/allocation_cifar.py --models resnet20 --max-minutes 110 --resume
    python benchmarks/allocation_cifar.py --summarize          # rewrite the table and plot from the JSON

Each configuration (model, allocation, sparsity, seed) starts from the
committed dense checkpoint (``benchmarks/checkpoints/<model>.keras``, see
``train_cifar.py``): the plan is made from the dense weights, the model is
wrapped, and ``model.fit`` runs ``--ramp-epochs`` of polynomial ramp (power 3,
`tfprune.Pruning`) then ``--finetune-epochs`` at the targets, on the
augmented training pipeline, SGD (momentum 0.9, Nesterov) with the learning
rate decayed from ``--lr`` to 0 by a cosine over all those epochs. Test
accuracy is measured on the 10,000 test images. The seed sets the data order,
the augmentation and tf's random state of the fine-tuning; the dense model is
the same for every seed.

Allocations (``--allocations``):
  uniform       the same sparsity in every layer (tfmot's default)
  uniform_plus  uniform, the first conv dense and the last layer keeping >= 20% (LAMP's "uniform+")
  global        one magnitude threshold over all layers
  erk           Erdos-Renyi-kernel densities
  lamp          LAMP scores, one global threshold (Lee et al. 2021)
  importance    tfprune's default (`tfprune.plan(model, sparsity)`: How Compact? capacity x LAMP)
  output_error  per-layer output-error curves from the layers' input Hessians (1,000 training images)
  lamp_gradual  one LAMP ranking redone on the current weights at every mask update of the ramp
  importance_sensitivity
                the default allocator with data-driven layer scores instead of capacity: each layer's loss
                increase when it alone is magnitude-pruned to the target sparsity (`sensitivity` importance,
                1,000 labelled training images); a candidate for where the default does not beat LAMP
  importance_sensitivity_sqrt
                the same scores tempered: the importance allocator with gamma 0.5 (the scores' square root),
                so a layer's measured damage moves its share half as far from LAMP's (in log terms)

Order: seed 0 at 0.95, 0.9885, 0.98, 0.90, then seed 1 at 0.95 and 0.9885 (the
sparsities the targets name come first). The JSON is written after every
configuration; ``--resume`` skips the finished ones; ``--max-minutes`` stops
before a configuration that would pass the limit (estimated from the last).

Writes ``benchmarks/results/allocation_cifar.{json,md,png}``:
``{"models": {"resnet20": {"dense_acc": ..., "default_allocation": "importance",
"results": [{"allocation": "lamp", "sparsity": 0.95, "acc_mean": ..., "acc_std": ...,
"n_seeds": 2, ...}]}}, "runs": [...], "config": {"command": ..., "cpu_minutes": ..., "budget": {...}}}``
(accuracies as fractions).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import allocation as mnist_allocation  # noqa: E402  (the MNIST benchmark: its gradual re-ranking)
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

ALLOCATIONS = ("lamp", "importance", "uniform", "uniform_plus", "global", "erk", "output_error", "lamp_gradual",
               "importance_sensitivity", "importance_sensitivity_sqrt")
DEFAULT_ALLOCATION = "importance"
SPARSITIES = (0.95, 0.9885, 0.98, 0.90)
SEEDED_SPARSITIES = (0.95, 0.9885)  # the second seed runs these
DEFAULT_OUT = os.path.join(RESULTS, "allocation_cifar.json")
CALIBRATION_IMAGES = 1000
WIN_MARGIN = 0.005  # target: default >= LAMP + 0.5 points at 0.95 and 0.9885
UNIFORM_MARGIN = 0.10  # target: default >= uniform + 10 points at 0.98


class Rerank(mnist_allocation.Rerank):
    """The MNIST benchmark's gradual re-ranking, ranked for the wrapper's *next* call, so the ramp's last step lands on the target.

    (The MNIST version ranks for the step already taken and reaches the target one step after ``end_step``, i.e. only when
    training goes on past the ramp.)
    """

    def on_train_batch_begin(self, batch, logs=None):
        from tfprune.masks.schedule import polynomial_sparsity

        layers = tp.prunable_layers(self.model)
        step = int(layers[0].layer.pruning_step.numpy()) + 1  # the step of the call this batch makes
        if step > self.end_step or (step % self.frequency and step != self.end_step):
            return
        s = polynomial_sparsity(step, 0.0, self.sparsity, 0, self.end_step, self.power)
        alloc = tp.allocation.allocate_sparsity(layers, s, allocation=self.allocation, **self.options)
        for p in layers:
            t = alloc.targets[p.name]
            p.schedule.set(target_sparsity=t, initial_sparsity=t, begin_step=step, end_step=step, frequency=1)


def grid(sparsities: list[float], allocations: list[str], seeds: int) -> list[tuple[int, float, str]]:
    """(seed, sparsity, allocation) in run order: seed 0 everywhere, then further seeds at 0.95 and 0.9885."""
    out = [(0, s, a) for s in sparsities for a in allocations]
    for seed in range(1, seeds):
        out += [(seed, s, a) for s in sparsities if s in SEEDED_SPARSITIES for a in allocations]
    return out


def make_plan(dense: keras.Model, allocation: str, sparsity: float, calib: tuple[np.ndarray, np.ndarray]) -> tp.Plan:
    """The plan each allocation gives on the dense weights (what `tfprune.Pruning` then ramps to); ``calib``: (images, labels)."""
    if allocation == DEFAULT_ALLOCATION:
        return tp.plan(dense, sparsity)  # exactly what a user gets by default
    if allocation == "uniform_plus":
        names = tp.prunable_layers(dense).names
        return tp.plan(dense, sparsity, allocation="uniform", exclude=[names[0]], max_sparsity={names[-1]: 0.8})
    if allocation == "output_error":
        from tfprune.obs.hessian import layer_hessians

        hessians = layer_hessians(dense, tp.prunable_layers(dense).names, calib[0], progress=False)
        return tp.plan(dense, sparsity, allocation="output_error", allocation_kwargs={"hessians": hessians})
    if allocation in ("importance_sensitivity", "importance_sensitivity_sqrt"):
        gamma = 0.5 if allocation.endswith("_sqrt") else 1.0
        return tp.plan(dense, sparsity, importance="sensitivity", data=calib, allocation="importance",
                       importance_kwargs={"sparsity": sparsity, "progress": False}, allocation_kwargs={"gamma": gamma})
    return tp.plan(dense, sparsity, allocation=allocation.removesuffix("_gradual"))


def run_one(dense, allocation: str, sparsity: float, seed: int, args, data) -> dict:
    (xt, yt), (xs, ys), calib = data
    t0, c0 = time.time(), time.process_time()
    plan = make_plan(dense, allocation, sparsity, calib)
    plan_seconds = time.time() - t0
    steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
    epochs = args.ramp_epochs + args.finetune_epochs
    end = max(1, args.ramp_epochs * steps)
    keras.utils.set_random_seed(1000 + seed)
    model = compile_finetune(tp.wrap(dense), args.lr, epochs * steps)
    callbacks = [tp.Pruning(plan, begin_step=0, end_step=end, verbose=0)]
    if allocation.endswith("_gradual"):
        callbacks.append(Rerank(sparsity, allocation.removesuffix("_gradual"), {}, end, max(1, end // 20)))
    train = tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=seed)
    model.fit(train, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    acc = accuracy_on(model, xs, ys)
    inv = tp.prunable_layers(model)
    return {
        "allocation": allocation, "sparsity": sparsity, "seed": seed, "acc": acc,
        "achieved_sparsity": float(inv.total_sparsity()),
        "layer_sparsity": {p.name: round(float(p.sparsity()), 5) for p in inv},
        "planned_layer_sparsity": {k: round(float(v), 5) for k, v in plan.targets.items()},
        "plan_seconds": round(plan_seconds, 2),
        "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
    }


def summarize(data: dict) -> None:
    """Aggregate ``runs`` into each model's ``results`` (mean/std over seeds)."""
    for tag, entry in data["models"].items():
        runs = [r for r in data["runs"] if r["model"] == tag]
        cells: dict[tuple[str, float], list[dict]] = {}
        for r in runs:
            cells.setdefault((r["allocation"], r["sparsity"]), []).append(r)
        order = {a: i for i, a in enumerate(ALLOCATIONS)}
        entry["results"] = [
            {"allocation": a, "sparsity": s, "acc_mean": float(np.mean([r["acc"] for r in rs])),
             "acc_std": float(np.std([r["acc"] for r in rs])), "n_seeds": len(rs), "seeds": sorted(r["seed"] for r in rs),
             "achieved_sparsity": float(np.mean([r["achieved_sparsity"] for r in rs])),
             "layer_sparsity": rs[0]["layer_sparsity"], "minutes_mean": float(np.mean([r["seconds"] for r in rs]) / 60)}
            for (a, s), rs in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1]))
        ]


def cell(entry: dict, allocation: str, sparsity: float) -> dict | None:
    return next((r for r in entry["results"] if r["allocation"] == allocation and r["sparsity"] == sparsity), None)


def targets_lines(data: dict) -> list[str]:
    lines = ["#### Targets (means over the same seeds; points of test accuracy)", "",
             "| model | sparsity | default (`importance`) | LAMP | uniform | best allocation | default - LAMP | default - uniform | target met |",
             "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for tag, entry in data["models"].items():
        for s in (0.95, 0.9885, 0.98):
            d, lamp, uni = cell(entry, DEFAULT_ALLOCATION, s), cell(entry, "lamp", s), cell(entry, "uniform", s)
            rows = [r for r in entry["results"] if r["sparsity"] == s]
            if d is None or not rows:
                continue
            best = max(rows, key=lambda r: r["acc_mean"])
            fmt = lambda r: "" if r is None else f"{100 * r['acc_mean']:.2f} (n={r['n_seeds']})"  # noqa: E731
            dl = None if lamp is None else d["acc_mean"] - lamp["acc_mean"]
            du = None if uni is None else d["acc_mean"] - uni["acc_mean"]
            if s == 0.98:
                met = "" if du is None else ("yes" if du >= UNIFORM_MARGIN else "no") + " (>= uniform + 10)"
            else:
                met = "" if dl is None else ("yes" if dl >= WIN_MARGIN else "no") + " (>= LAMP + 0.5)"
                if met and min(d["n_seeds"], lamp["n_seeds"]) < 2:
                    met += ", provisional: the target is a mean over 2 seeds"
            lines.append(f"| {tag} | {s:g} | {fmt(d)} | {fmt(lamp)} | {fmt(uni)} | {best['allocation']} {100 * best['acc_mean']:.2f} | "
                         f"{'' if dl is None else f'{100 * dl:+.2f}'} | {'' if du is None else f'{100 * du:+.2f}'} | {met} |")
    return lines


def write_outputs(data: dict, path: str) -> None:
    summarize(data)
    base = os.path.splitext(path)[0]
    cfg = data["config"]
    lines = []
    for tag, entry in data["models"].items():
        sps = sorted({r["sparsity"] for r in entry["results"]})
        lines += [f"### {tag}: dense {100 * entry['dense_acc']:.2f}% (`{entry['checkpoint']}`), default allocation `{entry['default_allocation']}`", "",
                  "| allocation | " + " | ".join(f"{s:g}" for s in sps) + " | min per run |", "|---|" + "---:|" * (len(sps) + 1)]
        for a in dict.fromkeys(r["allocation"] for r in entry["results"]):
            cells, mins = [], []
            for s in sps:
                r = cell(entry, a, s)
                cells.append("" if r is None else f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} (n={r['n_seeds']})")
                if r is not None:
                    mins.append(r["minutes_mean"])
            lines.append(f"| {a} | " + " | ".join(cells) + f" | {np.mean(mins):.1f} |")
        lines.append("")
    lines += targets_lines(data)
    b = cfg["budget"]
    lines += ["", f"Budget (every allocation alike): {b['ramp_epochs']} epoch(s) of polynomial ramp (power 3) + {b['finetune_epochs']} at the "
              f"targets, SGD momentum 0.9 Nesterov, lr {b['lr']} cosine to 0, batch {b['batch_size']}, augmented CIFAR-10 "
              f"({b['n_train']:,} train / {b['n_test']:,} test images), from the committed dense checkpoint. Accuracy: test %, mean ± std "
              f"over seeds (n). CPU time so far: {cfg['cpu_minutes']:.1f} min ({cfg['wall_minutes']:.1f} min wall) on {cfg['machine']}.",
              "", "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(cfg["commands"]))]
    with atomic_write(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(data["models"].items())
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, (tag, entry) in zip(axes[0], models):
        for a in dict.fromkeys(r["allocation"] for r in entry["results"]):
            rs = sorted((r for r in entry["results"] if r["allocation"] == a), key=lambda r: r["sparsity"])
            ax.errorbar([1 - r["sparsity"] for r in rs], [100 * r["acc_mean"] for r in rs], yerr=[100 * r["acc_std"] for r in rs],
                        marker="o", capsize=2, label=a, lw=2.5 if a == DEFAULT_ALLOCATION else 1.2)
        ax.axhline(100 * entry["dense_acc"], color="k", ls=":", lw=1, label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density (fraction of weights kept, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CIFAR-10 {tag}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, base + ".png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_w0.25,resnet20", help="checkpoint tags, comma-separated")
    ap.add_argument("--allocations", default=",".join(ALLOCATIONS))
    ap.add_argument("--sparsities", default=",".join(f"{s:g}" for s in SPARSITIES), help="fractions of prunable weights removed")
    ap.add_argument("--seeds", type=int, default=2, help="seeds at 0.95 and 0.9885 (1 elsewhere)")
    ap.add_argument("--ramp-epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--summarize", action="store_true", help="only rewrite the markdown and plot from --out")
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.summarize:
        import json

        with open(args.out) as f:
            data = json.load(f)
        write_outputs(data, args.out)
        print(open(os.path.splitext(args.out)[0] + ".md").read())
        return 0
    allocations = args.allocations.split(",")
    unknown = sorted(set(allocations) - set(ALLOCATIONS))
    if unknown:
        ap.error(f"--allocations: unknown {unknown}; choose from {', '.join(ALLOCATIONS)}")
    sparsities = [float(s) for s in args.sparsities.split(",")]
    if args.ramp_epochs < 1 or args.finetune_epochs < 0 or args.seeds < 1 or args.lr <= 0:
        ap.error("--ramp-epochs and --seeds must be >= 1, --finetune-epochs >= 0, --lr > 0")
    check_subset(ap, args, DEFAULT_OUT)
    (xt, yt), (xs, ys) = load_data(args.data, args.subset)
    budget = {"ramp_epochs": args.ramp_epochs, "finetune_epochs": args.finetune_epochs, "lr": args.lr, "batch_size": args.batch_size,
              "n_train": len(xt), "n_test": len(xs), "calibration_images": CALIBRATION_IMAGES}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "allocation", "sparsity", "seed"))
    data = ledger.data
    calib = (xt[:CALIBRATION_IMAGES].astype(np.float32), yt[:CALIBRATION_IMAGES])
    deadline = Deadline(args.max_minutes)
    last = 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, (xs, ys))
        entry["default_allocation"] = DEFAULT_ALLOCATION
        for seed, sparsity, allocation in grid(sparsities, allocations, args.seeds):
            if ledger.done(model=tag, allocation=allocation, sparsity=sparsity, seed=seed):
                continue
            if not deadline.allows(1.1 * last):
                print(f"[allocation_cifar] --max-minutes {args.max_minutes}: stopping; run the same command with --resume", flush=True)
                ledger.save()
                write_outputs(data, args.out)
                return 0
            run = run_one(dense, allocation, sparsity, seed, args, ((xt, yt), (xs, ys), calib))
            last = run["seconds"]
            run["model"] = tag
            ledger.add(run)
            ledger.save()
            write_outputs(data, args.out)
            print(f"[allocation_cifar] {tag} seed {seed} {allocation:<13} s={sparsity:<6g} acc={100 * run['acc']:.2f}% "
                  f"achieved={run['achieved_sparsity']:.4f} ({run['seconds'] / 60:.1f} min, CPU {run['cpu_seconds'] / 60:.1f} min)", flush=True)
    ledger.save()
    write_outputs(data, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
