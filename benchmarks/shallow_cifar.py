"""Shallowing on CIFAR-10 ResNet-56: linear probes, residual blocks removed, distillation vs plain fine-tuning, TFLite latency.

    python benchmarks/shallow_cifar.py --models resnet56 --max-minutes 110 --resume
    python benchmarks/shallow_cifar.py --models resnet20 --resume

From the committed dense checkpoint: linear probes on every unit's output
(`tfprune.shallow.probe_layers`, the first ``--probe-images`` training
images, half fit / half held out); for each target fraction of MACs removed
(``--targets``) the smallest probe-gain threshold tau that meets it
(`tfprune.shallow.shallow`, BatchNorm re-estimated); then the student is
fine-tuned ``--finetune-epochs`` twice from the same start: with
distillation from the dense model (``kd``: `tfprune.Distiller`, T 4, alpha
0.9) and with plain cross-entropy (``ce``). Augmented CIFAR-10, SGD momentum
0.9 Nesterov, lr ``--lr`` cosine to 0, batch 128. TFLite latency: float, 1
thread, batch 1, student and dense in interleaved blocks.

Writes ``benchmarks/results/shallow_cifar.{json,md}`` and the probe plot:
``{"resnet56": {"dense_acc": ..., "dense_macs": ..., "results": [{"variant": "kd", "macs": ..., "acc": ...}]}, ...}``
(the top level also holds ``runs`` and ``config``).
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

TARGETS = (0.3, 0.45)
VARIANTS = ("kd", "ce")
DEFAULT_OUT = os.path.join(RESULTS, "shallow_cifar.json")
TARGET_POINTS = 0.01  # target: >= 30% fewer MACs within 1 point of dense


def finetune(student, teacher, variant: str, args, xt, yt) -> keras.Model:
    steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
    keras.utils.set_random_seed(1000)
    train = tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=0)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, max(1, args.finetune_epochs * steps), alpha=0.0)
    if variant == "kd":
        trainer = tp.Distiller(teacher, student, temperature=args.temperature, alpha=args.alpha)
        trainer.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True))
    else:
        trainer = compile_finetune(student, args.lr, args.finetune_epochs * steps)
    trainer.fit(train, epochs=args.finetune_epochs, steps_per_epoch=steps, verbose=0)
    return student


def write_outputs(data: dict, path: str) -> None:
    cfg, b = data["config"], data["config"]["budget"]
    lines = []
    for tag, e in data["models"].items():
        runs = [r for r in data["runs"] if r["model"] == tag]
        e["results"] = [{k: r[k] for k in ("variant", "target", "macs", "params", "acc", "acc_no_finetune", "latency_ratio", "removed")} for r in runs]
        data[tag] = {k: e[k] for k in ("dense_acc", "dense_macs", "dense_params", "results")}  # the top-level layout
        lines += [f"### {tag}: dense {100 * e['dense_acc']:.2f}%, {e['dense_macs'] / 1e6:.1f} M MACs, {e['dense_params']:,} params (`{e['checkpoint']}`)", "",
                  "| MACs target | tau | units removed | MACs (removed) | params (removed) | no fine-tuning % | variant | fine-tuned % "
                  "| minus dense | TFLite latency ratio |",
                  "|---:|---:|---|---:|---:|---:|---|---:|---:|---:|"]
        for r in sorted(runs, key=lambda r: (r["target"], r["variant"])):
            macs_cut = 100 * (1 - r["macs"] / e["dense_macs"])
            lines.append(f"| {r['target']:g} | {r['tau']:.4f} | {len(r['removed'])} | {r['macs'] / 1e6:.1f} M ({macs_cut:.1f}%) | "
                         f"{r['params']:,} ({100 * (1 - r['params'] / e['dense_params']):.1f}%) | {100 * r['acc_no_finetune']:.2f} | {r['variant']} | "
                         f"{100 * r['acc']:.2f} | {100 * (r['acc'] - e['dense_acc']):+.2f} | {r['latency_ratio']:.2f} |")
        ok = [r for r in runs if 1 - r["macs"] / e["dense_macs"] >= 0.3 and e["dense_acc"] - r["acc"] <= TARGET_POINTS]
        lines += ["", "Target (>= 30% fewer MACs within 1 point of dense): " + (
            f"met by {', '.join(sorted({r['variant'] + ' at ' + format(r['target'], 'g') for r in ok}))}." if ok else "not met by any run yet."), ""]
    lines += [f"Probes: {b['probe_images']:,} training images (half fit, half held out). Fine-tuning: {b['finetune_epochs']} epoch(s), augmented "
              f"CIFAR-10, SGD momentum 0.9 Nesterov, lr {b['lr']} cosine to 0, batch {b['batch_size']}; kd: T {b['temperature']:g}, alpha "
              f"{b['alpha']:g}; one seed. Latency ratio: float TFLite, 1 thread, batch 1. CPU time so far: {cfg['cpu_minutes']:.1f} min "
              f"({cfg['wall_minutes']:.1f} min wall) on {cfg['machine']}.", "", "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(cfg["commands"]))]
    with atomic_write(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56")
    ap.add_argument("--targets", default=",".join(f"{t:g}" for t in TARGETS), help="fractions of MACs removed")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--probe-images", type=int, default=10000)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--latency-rounds", type=int, default=20)
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS) or args.finetune_epochs < 1:
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}; --finetune-epochs >= 1")
    check_subset(ap, args, DEFAULT_OUT)
    (xt, yt), (xs, ys) = load_data(args.data, args.subset)
    budget = {"probe_images": min(args.probe_images, len(xt)), "finetune_epochs": args.finetune_epochs, "lr": args.lr,
              "temperature": args.temperature, "alpha": args.alpha, "batch_size": args.batch_size, "n_train": len(xt), "n_test": len(xs)}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "target", "variant"))
    deadline, last = Deadline(args.max_minutes), 0.0
    probe_data = (xt[:budget["probe_images"]].astype(np.float32), yt[:budget["probe_images"]])
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, (xs, ys))
        probes = None
        for target in (float(t) for t in args.targets.split(",")):
            todo = [v for v in variants if not ledger.done(model=tag, target=target, variant=v)]
            if not todo:
                continue
            if probes is None:
                t0 = time.time()
                probes = tp.shallow.probe_layers(dense, probe_data, progress=False)
                entry["probes"] = probes.to_dict()
                entry["probe_seconds"] = round(time.time() - t0, 1)
                probes.plot(os.path.splitext(args.out)[0] + f"_{tag}_probes.png")
            student0, res = tp.shallow.shallow(dense, probe_data, probes=probes, target_flops_reduction=target)
            acc0 = accuracy_on(student0, xs, ys)
            with_weights = student0.get_weights()
            for variant in todo:
                if not deadline.allows(1.1 * last):
                    print(f"[shallow_cifar] --max-minutes {args.max_minutes}: stopping; run the same command with --resume", flush=True)
                    ledger.save()
                    write_outputs(ledger.data, args.out)
                    return 0
                t0, c0 = time.time(), time.process_time()
                student = keras.models.clone_model(student0)
                student.set_weights(with_weights)
                finetune(student, dense, variant, args, xt, yt)
                acc = accuracy_on(student, xs, ys)
                lat = tflite_latency_ms({"dense": dense, "student": student}, rounds=args.latency_rounds)
                after = tp.profile(student)
                run = {"model": tag, "target": target, "variant": variant, "tau": float(res.tau), "removed": list(res.removed),
                       "macs": int(after.macs), "params": int(after.params), "acc_no_finetune": acc0, "acc": acc,
                       "latency_ms": lat["student"], "dense_latency_ms": lat["dense"], "latency_ratio": lat["student"] / lat["dense"],
                       "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
                last = run["seconds"]
                ledger.add(run)
                ledger.save()
                write_outputs(ledger.data, args.out)
                ledger.save()
                print(f"[shallow_cifar] {tag} target {target:g} {variant}: removed {len(res.removed)} units, MACs -{100 * res.macs_reduction:.1f}%, "
                      f"{100 * acc0:.2f}% -> {100 * acc:.2f}%, latency x{run['latency_ratio']:.2f} ({run['seconds'] / 60:.1f} min)", flush=True)
    write_outputs(ledger.data, args.out)
    ledger.save()
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
