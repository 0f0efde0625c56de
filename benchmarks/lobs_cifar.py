"""L-OBS on CIFAR-10: one-shot accuracy of second-order pruning against magnitude, then BN re-estimation, then a short retraining.

    python benchmarks/lobs_cifar.py --models vgg16_w0.25 --resume
    python benchmarks/lobs_cifar.py --models resnet20 --resume

For each per-layer budget (the same fraction of every Conv/Dense kernel
removed, ``--budgets``) and each solver (``magnitude``, ``lobs``, ``exact``;
`tfprune.obs.prune` with ``targets=``), starting from the committed dense
checkpoint, the test accuracy:

  one_shot     right after pruning (BatchNorm statistics of the dense model)
  bn           after `tfprune.training.finetune.reestimate_batchnorm` on 4,096 training images
  retrained    after ``--retrain-epochs`` of fine-tuning from the ``bn`` model with
               every zero kept (`freeze_zeros`), augmented data, SGD momentum 0.9
               Nesterov, lr ``--lr`` cosine to 0

Calibration: the first ``--n-calib`` training images (raw pixels; the
models normalise inside). The JSON is written after every configuration
and ``--resume`` skips the finished ones. Writes
``benchmarks/results/lobs_cifar.{json,md}``.
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
from tfprune.files import atomic_write  # noqa: E402
from tfprune.training.finetune import freeze_zeros, reestimate_batchnorm  # noqa: E402

SOLVERS = ("magnitude", "lobs", "exact")
BUDGETS = (0.5, 0.7, 0.85)
DEFAULT_OUT = os.path.join(RESULTS, "lobs_cifar.json")
BN_IMAGES = 4096


def run_one(dense, tag: str, budget: float, solver: str, args, data) -> dict:
    (xt, yt), (xs, ys) = data
    t0, c0 = time.time(), time.process_time()
    targets = {name: budget for name in tp.prunable_layers(dense).names}
    pruned, report = tp.obs.prune(dense, xt[:args.n_calib].astype(np.float32), targets=targets, solver=solver,
                                  n_samples=args.n_calib, progress=False)
    prune_seconds = time.time() - t0
    one_shot = accuracy_on(pruned, xs, ys)
    reestimate_batchnorm(pruned, xt[:BN_IMAGES].astype(np.float32), n_samples=BN_IMAGES)
    bn = accuracy_on(pruned, xs, ys)
    retrained = None
    if args.retrain_epochs:
        steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
        keras.utils.set_random_seed(1000)
        model = compile_finetune(freeze_zeros(pruned), args.lr, args.retrain_epochs * steps)
        model.fit(tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=0), epochs=args.retrain_epochs, steps_per_epoch=steps, verbose=0)
        retrained = accuracy_on(model, xs, ys)
    return {"model": tag, "budget": budget, "solver": solver, "acc_one_shot": one_shot, "acc_bn": bn, "acc_retrained": retrained,
            "achieved_sparsity": float(report.total_sparsity), "prune_seconds": round(prune_seconds, 1),
            "hessian_seconds": round(float(report.hessian_seconds), 1),
            "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def dense_with_bn_reestimated(dense, xt: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> float:
    """Test accuracy of a copy of ``dense`` whose BatchNorm statistics are re-estimated as in `run_one` (``dense`` is left as it is)."""
    copy = keras.models.clone_model(dense)
    copy.set_weights(dense.get_weights())
    reestimate_batchnorm(copy, xt[:BN_IMAGES].astype(np.float32), n_samples=BN_IMAGES)
    return accuracy_on(copy, xs, ys)


def write_outputs(data: dict, path: str) -> None:
    cfg, b = data["config"], data["config"]["budget"]
    lines = []
    for tag, entry in data["models"].items():
        runs = [r for r in data["runs"] if r["model"] == tag]
        control = "" if "dense_acc_bn" not in entry else f"; {100 * entry['dense_acc_bn']:.2f}% with its BN statistics re-estimated the same way"
        lines += [f"### {tag}: dense {100 * entry['dense_acc']:.2f}%{control} (`{entry['checkpoint']}`)", "",
                  "| per-layer sparsity | solver | one-shot % | + BN re-estimated % | + retrained % | pruning s (Hessians s) |",
                  "|---:|---|---:|---:|---:|---:|"]
        for r in sorted(runs, key=lambda r: (r["budget"], SOLVERS.index(r["solver"]) if r["solver"] in SOLVERS else 9)):
            rt = "" if r["acc_retrained"] is None else f"{100 * r['acc_retrained']:.2f}"
            lines.append(f"| {r['budget']:g} | {r['solver']} | {100 * r['acc_one_shot']:.2f} | {100 * r['acc_bn']:.2f} | {rt} | "
                         f"{r['prune_seconds']:.0f} ({r['hessian_seconds']:.0f}) |")
        lines.append("")
    lines += [f"Every Conv/Dense kernel loses the same fraction; calibration: the first {b['n_calib']:,} training images; BN re-estimated on "
              f"{BN_IMAGES:,} training images; retraining: {b['retrain_epochs']} epoch(s) from the BN-re-estimated model, zeros kept, "
              f"augmented data, SGD momentum 0.9 Nesterov, lr {b['lr']} cosine to 0, batch {b['batch_size']}; one seed. Test accuracy on "
              f"{b['n_test']:,} images. CPU time so far: {cfg['cpu_minutes']:.1f} min ({cfg['wall_minutes']:.1f} min wall) on {cfg['machine']}.",
              "", "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(cfg["commands"]))]
    with atomic_write(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_w0.25")
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS), help="per-layer fractions removed")
    ap.add_argument("--n-calib", type=int, default=2000)
    ap.add_argument("--retrain-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    solvers = args.solvers.split(",")
    if set(solvers) - set(SOLVERS):
        ap.error(f"--solvers: choose from {', '.join(SOLVERS)}")
    check_subset(ap, args, DEFAULT_OUT)
    (xt, yt), (xs, ys) = load_data(args.data, args.subset)
    budget = {"n_calib": args.n_calib, "retrain_epochs": args.retrain_epochs, "lr": args.lr, "batch_size": args.batch_size,
              "n_train": len(xt), "n_test": len(xs)}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "budget", "solver"))
    deadline, last = Deadline(args.max_minutes), 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, (xs, ys))
        if "dense_acc_bn" not in entry:  # the control: what re-estimating alone does to the unpruned model
            entry["dense_acc_bn"] = dense_with_bn_reestimated(dense, xt, xs, ys)
        for budget_ in (float(b) for b in args.budgets.split(",")):
            for solver in solvers:
                if ledger.done(model=tag, budget=budget_, solver=solver):
                    continue
                if not deadline.allows(1.1 * last):
                    print(f"[lobs_cifar] --max-minutes {args.max_minutes}: stopping; run the same command with --resume", flush=True)
                    ledger.save()
                    write_outputs(ledger.data, args.out)
                    return 0
                run = run_one(dense, tag, budget_, solver, args, ((xt, yt), (xs, ys)))
                last = run["seconds"]
                ledger.add(run)
                ledger.save()
                write_outputs(ledger.data, args.out)
                print(f"[lobs_cifar] {tag} {budget_:g} {solver:<9} one-shot {100 * run['acc_one_shot']:.2f}% bn {100 * run['acc_bn']:.2f}% "
                      f"retrained {run['acc_retrained']} ({run['seconds']:.0f} s)", flush=True)
    ledger.save()
    write_outputs(ledger.data, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
