"""Channel removal on CIFAR-10: whole channel groups pruned during fit by the one `Pruning` callback, shrunk, fine-tuned.

    python benchmarks/structured_cifar.py --models resnet56 --max-minutes 110 --resume
    python benchmarks/structured_cifar.py --models resnet20 --resume

For each fraction of MACs removed (``--macs``) and group allocation
(``uniform``, ``global``, ``importance``; channel scorer ``l2``), from the
committed dense checkpoint: the model is wrapped with
``granularity="channel"`` and trained ``--ramp-epochs`` with
``tfprune.Pruning(macs=..., granularity="channel", allocation=...)`` (the ramp
ends with the last of those epochs), then ``Pruning.finalize`` removes the
channels (`tfprune.shrink`) and the small model is fine-tuned
``--finetune-epochs``. Both phases: augmented CIFAR-10, SGD momentum 0.9
Nesterov, lr ``--lr`` cosine to 0 within each phase, batch 128. Test accuracy
after the ramp (shrunk) and after fine-tuning; MACs and parameters of the
small model (`tfprune.profile`); the TFLite latency ratio small / dense
(float, 1 thread, batch 1, interleaved blocks in the same process); each run's
output channels per layer (``out_channels``), and the dense model's once per model.

Writes ``benchmarks/results/structured_cifar.{json,md,png}`` (the plot: test accuracy
vs measured latency ratio per allocation, and the share of each layer's output
channels kept at the largest MACs cut whose runs recorded them; ``--summarize``
rewrites the markdown and plot from the JSON):
``{"models": {"resnet56": {"dense_acc": ..., "dense_macs": ..., "results": [{"allocation": "uniform",
"macs_removed": 0.5, "acc_mean": ..., "latency_ratio": ...}]}}, "runs": [...], "config": {...}}``.
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
    tflite_latency_ms,
)

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.files import atomic_write  # noqa: E402

ALLOCATIONS = ("uniform", "global", "importance")
MACS = (0.5, 0.3, 0.7)
DEFAULT_OUT = os.path.join(RESULTS, "structured_cifar.json")
TARGET_POINTS = 0.01  # target: within 1 point of dense at 50% of MACs


def out_channels(model) -> dict[str, int]:
    """Output channels (convolutions: ``filters``, dense layers: ``units``) of every such layer, by name: what a plan kept."""
    return {layer.name: int(getattr(layer, "filters", None) or layer.units) for layer in model.layers
            if getattr(layer, "filters", None) or getattr(layer, "units", None)}


def run_one(dense, tag: str, macs: float, allocation: str, seed: int, args, data) -> dict:
    (xt, yt), (xs, ys) = data
    t0, c0 = time.time(), time.process_time()
    steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
    keras.utils.set_random_seed(1000 + seed)
    model = compile_finetune(tp.wrap(dense, granularity="channel"), args.lr, args.ramp_epochs * steps)
    cb = tp.Pruning(macs=macs, granularity="channel", allocation=allocation, begin_step=0, end_step=args.ramp_epochs * steps)
    model.fit(tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=seed), epochs=args.ramp_epochs, steps_per_epoch=steps,
              callbacks=[cb], verbose=0)
    small = cb.finalize(x=xs[:8].astype(np.float32))
    acc_shrunk = accuracy_on(small, xs, ys)
    acc = acc_shrunk
    if args.finetune_epochs:
        compile_finetune(small, args.lr, args.finetune_epochs * steps)
        small.fit(tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=seed, first_epoch=args.ramp_epochs), epochs=args.finetune_epochs,
                  steps_per_epoch=steps, verbose=0)
        acc = accuracy_on(small, xs, ys)
    train_seconds = time.time() - t0
    prof = tp.profile(small)
    lat = tflite_latency_ms({"dense": dense, "small": small}, rounds=args.latency_rounds)
    return {"model": tag, "allocation": allocation, "macs_removed": macs, "seed": seed, "acc": acc, "acc_shrunk": acc_shrunk,
            "macs": int(prof.macs), "params": int(prof.params), "macs_removed_achieved": 1.0 - prof.macs / float(tp.profile(dense).macs),
            "latency_ms": lat["small"], "dense_latency_ms": lat["dense"], "latency_ratio": lat["small"] / lat["dense"],
            "out_channels": out_channels(small),
            "train_seconds": round(train_seconds, 1), "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def summarize(data: dict) -> None:
    for tag, entry in data["models"].items():
        cells: dict[tuple[str, float], list[dict]] = {}
        for r in data["runs"]:
            if r["model"] == tag:
                cells.setdefault((r["allocation"], r["macs_removed"]), []).append(r)
        entry["results"] = [
            {"allocation": a, "macs_removed": m, "acc_mean": float(np.mean([r["acc"] for r in rs])), "acc_std": float(np.std([r["acc"] for r in rs])),
             "n_seeds": len(rs), "acc_shrunk_mean": float(np.mean([r["acc_shrunk"] for r in rs])),
             "macs_removed_achieved": float(np.mean([r["macs_removed_achieved"] for r in rs])), "params": rs[0]["params"],
             "latency_ratio": float(np.mean([r["latency_ratio"] for r in rs]))}
            for (a, m), rs in sorted(cells.items(), key=lambda kv: (kv[0][1], ALLOCATIONS.index(kv[0][0]) if kv[0][0] in ALLOCATIONS else 9))
        ]


def write_outputs(data: dict, path: str) -> None:
    summarize(data)
    cfg, b = data["config"], data["config"]["budget"]
    lines = []
    for tag, e in data["models"].items():
        lines += [f"### {tag}: dense {100 * e['dense_acc']:.2f}%, {e['dense_macs'] / 1e6:.1f} M MACs, {e['dense_params']:,} params (`{e['checkpoint']}`)", "",
                  "| MACs removed (target / achieved) | allocation | after ramp, shrunk % | after fine-tuning % | minus dense (points) | params "
                  "| TFLite latency ratio |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in e["results"]:
            d = 100 * (r["acc_mean"] - e["dense_acc"])
            lines.append(f"| {r['macs_removed']:g} / {r['macs_removed_achieved']:.3f} | {r['allocation']} | {100 * r['acc_shrunk_mean']:.2f} | "
                         f"{100 * r['acc_mean']:.2f} (n={r['n_seeds']}) | {d:+.2f} | {r['params']:,} | {r['latency_ratio']:.2f} |")
        best = [r for r in e["results"] if r["macs_removed"] == 0.5]
        if best:
            top = max(best, key=lambda r: r["acc_mean"])
            gap = e["dense_acc"] - top["acc_mean"]
            lines += ["", f"Target (50% of MACs within 1 point of dense): best `{top['allocation']}` {100 * top['acc_mean']:.2f}% vs dense "
                      f"{100 * e['dense_acc']:.2f}%: {'met' if gap <= TARGET_POINTS else f'missed by {100 * (gap - TARGET_POINTS):.2f} points'}."]
        lines.append("")
    lines += [f"Budget: {b['ramp_epochs']} epoch(s) of fit with `Pruning` over channel groups (ramp to the last step), shrink, then "
              f"{b['finetune_epochs']} epoch(s) of fine-tuning of the small model; augmented CIFAR-10, SGD momentum 0.9 Nesterov, lr {b['lr']} "
              f"cosine to 0 in each phase, batch {b['batch_size']}; channel scorer `l2`. Latency ratio: float TFLite, 1 thread, batch 1, "
              f"small / dense medians in interleaved blocks. CPU time so far: {cfg['cpu_minutes']:.1f} min ({cfg['wall_minutes']:.1f} min wall) "
              f"on {cfg['machine']}.", "", "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(cfg["commands"]))]
    with atomic_write(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_outputs(data, os.path.splitext(path)[0] + ".png")


def kept_pattern(data: dict, tag: str) -> tuple[float | None, dict[str, list[float]], list[str]]:
    """Share of each layer's output channels kept (kept / dense, in layer order), per allocation, at the largest MACs cut where
    every allocation that ran has a run with ``out_channels``: ``(macs_removed, {allocation: shares}, layer names)``."""
    dense = data["models"][tag].get("dense_out_channels") or {}
    names = list(dense)
    by_cut: dict[float, dict[str, dict]] = {}
    for r in data["runs"]:
        if r["model"] == tag and r.get("out_channels") and r.get("seed", 0) == 0:
            by_cut.setdefault(r["macs_removed"], {})[r["allocation"]] = r["out_channels"]
    ran = {r["allocation"] for r in data["runs"] if r["model"] == tag}
    full = [m for m, runs in by_cut.items() if set(runs) == ran] or list(by_cut)
    if not names or not full:
        return None, {}, names
    cut = max(full)
    return cut, {a: [oc[n] / dense[n] for n in names] for a, oc in sorted(by_cut[cut].items(), key=lambda kv: ALLOCATIONS.index(kv[0])
                                                                                if kv[0] in ALLOCATIONS else 9)}, names


def plot_outputs(data: dict, path: str) -> None:
    """Per model: accuracy after fine-tuning vs measured TFLite latency ratio (a line per allocation, points labelled with the
    MACs removed), and the share of output channels kept per layer at the largest cut with recorded channels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfprune.files import atomic_path

    models = list(data["models"].items())
    if not models:
        return
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.5 * len(models)), squeeze=False)
    for (ax_acc, ax_kept), (tag, e) in zip(axes, models):
        order = list(dict.fromkeys(r["allocation"] for r in e["results"]))  # one colour per allocation in both panels
        for i, a in enumerate(order):
            rs = sorted((r for r in e["results"] if r["allocation"] == a), key=lambda r: r["macs_removed"])
            xs, ys = [1.0] + [r["latency_ratio"] for r in rs], [100 * e["dense_acc"]] + [100 * r["acc_mean"] for r in rs]
            ax_acc.plot(xs, ys, "o-", color=f"C{i}", label=a)
            for r in rs:
                ax_acc.annotate(f"-{r['macs_removed']:g}", (r["latency_ratio"], 100 * r["acc_mean"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points", color=f"C{i}")
        ax_acc.axhline(100 * e["dense_acc"] - 100 * TARGET_POINTS, color="grey", ls=":", lw=1, label="dense - 1 point")
        ax_acc.invert_xaxis()
        ax_acc.set_xlabel("TFLite latency / dense (float, 1 thread, measured)")
        ax_acc.set_ylabel("test accuracy after fine-tuning (%)")
        ax_acc.set_title(f"CIFAR-10 {tag}: accuracy vs measured latency (labels: MACs removed)")
        ax_acc.grid(alpha=0.3)
        ax_acc.legend(fontsize=8)
        cut, shares, names = kept_pattern(data, tag)
        for a, v in shares.items():
            ax_kept.plot(range(len(v)), v, ".-", color=f"C{order.index(a)}", lw=1, label=a)
        ax_kept.set_ylim(0, 1.05)
        ax_kept.set_xlabel(f"layer (input to output; {len(names)} layers)")
        ax_kept.set_ylabel("output channels kept / dense")
        ax_kept.set_title(f"channels kept per layer at {cut:g} of MACs removed" if cut is not None else "no run recorded its channels")
        ax_kept.grid(alpha=0.3)
        if shares:
            ax_kept.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56")
    ap.add_argument("--allocations", default=",".join(ALLOCATIONS))
    ap.add_argument("--macs", default=",".join(f"{m:g}" for m in MACS), help="fractions of MACs removed (0.5 first: the target names it)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--ramp-epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--latency-rounds", type=int, default=20)
    ap.add_argument("--summarize", action="store_true", help="only rewrite the markdown and plot from --out")
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.summarize:
        import json

        with open(args.out) as f:
            data = json.load(f)
        write_outputs(data, args.out)
        return 0
    allocations = args.allocations.split(",")
    if set(allocations) - set(ALLOCATIONS):
        ap.error(f"--allocations: choose from {', '.join(ALLOCATIONS)}")
    if args.ramp_epochs < 1 or args.finetune_epochs < 0:
        ap.error("--ramp-epochs must be >= 1 and --finetune-epochs >= 0")
    check_subset(ap, args, DEFAULT_OUT)
    (xt, yt), (xs, ys) = load_data(args.data, args.subset)
    budget = {"ramp_epochs": args.ramp_epochs, "finetune_epochs": args.finetune_epochs, "lr": args.lr, "batch_size": args.batch_size,
              "n_train": len(xt), "n_test": len(xs)}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "allocation", "macs_removed", "seed"))
    deadline, last = Deadline(args.max_minutes), 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, (xs, ys))
        entry["dense_out_channels"] = out_channels(dense)
        for seed in range(args.seeds):
            for macs in (float(m) for m in args.macs.split(",")):
                for allocation in allocations:
                    if ledger.done(model=tag, allocation=allocation, macs_removed=macs, seed=seed):
                        continue
                    if not deadline.allows(1.1 * last):
                        print(f"[structured_cifar] --max-minutes {args.max_minutes}: stopping; run the same command with --resume", flush=True)
                        ledger.save()
                        write_outputs(ledger.data, args.out)
                        return 0
                    run = run_one(dense, tag, macs, allocation, seed, args, ((xt, yt), (xs, ys)))
                    last = run["seconds"]
                    ledger.add(run)
                    ledger.save()
                    write_outputs(ledger.data, args.out)
                    print(f"[structured_cifar] {tag} {allocation:<10} macs -{macs:g}: shrunk {100 * run['acc_shrunk']:.2f}% -> "
                          f"{100 * run['acc']:.2f}%, latency x{run['latency_ratio']:.2f} ({run['seconds'] / 60:.1f} min)", flush=True)
    ledger.save()
    write_outputs(ledger.data, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
