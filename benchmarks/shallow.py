"""Shallowing benchmark: probes, layers removed, FLOPs, accuracy with and without distillation, TFLite latency.

    python benchmarks/shallow.py                          # plain CNN (8 conv) and ResNet-20, 28x28 MNIST
    python benchmarks/shallow.py --quick --out /tmp/s.json   # plain CNN, one tau, 1 seed (< 6 min)

For each model: train dense; fit linear probes on 10,000 training images
(half train, half held out); for each target FLOPs reduction pick the
smallest tau that meets it, remove those units, then fine-tune copies of
the student from the same start for the same number of epochs with
distillation (T=4, alpha=0.9) and with plain cross-entropy, over
``--seeds`` seeds each (Adam 1e-3 with cosine decay, as for the dense model). TFLite latency: float
.tflite, ai-edge-litert, 1 thread, batch 1, median of ``--runs`` invocations.
Writes benchmarks/results/shallow.json, .md and a probe-curve plot per model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.export import make_interpreter  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 128
MODELS = {"plain_cnn": lambda: tp.models.plain_cnn((28, 28, 1)), "resnet20": lambda: tp.models.resnet_cifar(20, (28, 28, 1))}


def latency_ms(model, runs: int) -> float:
    import tensorflow as tf

    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interp, _ = make_interpreter(content, num_threads=1)
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).random(inp["shape"]).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    for _ in range(10):
        interp.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def acc(model, xs, ys) -> float:
    tp.models.compile_classifier(model)
    return float(model.evaluate(xs, ys, verbose=0)[1])


def decay_steps(n_samples: int, epochs: int) -> int:
    """Optimizer steps in ``epochs`` epochs of ``n_samples`` at batch BATCH (the cosine decay length)."""
    return epochs * -(-n_samples // BATCH)


def finetune(student_path: str, teacher, mode: str, data, epochs: int, seed: int, temperature: float, alpha: float):
    """Fine-tune a fresh copy of the saved student with KD or plain CE (Adam 1e-3, cosine decay, batch 128)."""
    xt, yt = data
    keras.utils.set_random_seed(seed)
    student = tp.load_model(student_path, compile=False)
    if mode == "kd":
        trainer = tp.Distiller(teacher, student, temperature=temperature, alpha=alpha)
        trainer.compile(optimizer=tp.finetune.adam_cosine(1e-3, decay_steps(len(xt), epochs)))
    else:
        trainer = tp.models.compile_classifier(student, 1e-3, decay_steps(len(xt), epochs))
    trainer.fit(xt, yt, epochs=epochs, batch_size=BATCH, verbose=0)
    return student


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "shallow.json"))
    ap.add_argument("--targets", default="0.3,0.5", help="FLOPs fractions to remove (each gives one tau)")
    ap.add_argument("--dense-epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds per student and mode (KD, CE)")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--models", default="plain_cnn,resnet20")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.targets, args.dense_epochs, args.finetune_epochs, args.seeds, args.runs = "plain_cnn", "0.3", 4, 2, 1, 100
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    results: dict = {"budget": f"dense {args.dense_epochs} epochs; students fine-tuned {args.finetune_epochs} epochs; both Adam 1e-3 with cosine decay, "
                               f"batch {BATCH}; KD T={args.temperature:g} alpha={args.alpha:g}; {args.seeds} fine-tuning seed(s), mean reported",
                     "models": {}}
    t0 = time.time()
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        dense = tp.models.compile_classifier(MODELS[name](), 1e-3, decay_steps(len(xt), args.dense_epochs))
        dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=BATCH, verbose=0)
        prof = tp.profile(dense)
        entry = {"dense_acc": acc(dense, xs, ys), "dense_flops": prof.macs, "dense_params": prof.params,
                 "dense_latency_ms": latency_ms(dense, args.runs), "results": []}
        results["models"][name] = entry
        probes = tp.shallow.probe_layers(dense, (xt[:10000], yt[:10000]), progress=False)
        entry["probes"] = probes.to_dict()
        print(f"[{time.time() - t0:5.0f}s] {name}: dense acc {entry['dense_acc']:.4f}, {prof.macs} MACs, {entry['dense_latency_ms']:.3f} ms")
        print(probes.table(), flush=True)
        removed_any: set = set()
        for target in [float(t) for t in args.targets.split(",")]:
            try:
                student0, res = tp.shallow.shallow(dense, (xt[:10000], yt[:10000]), probes=probes, target_flops_reduction=target)
            except ValueError as err:
                print(f"target {target}: {err}")
                continue
            removed_any |= set(res.removed)
            row = {"target_flops_reduction": target, "tau": res.tau, "removed": res.removed, "params": res.params_after, "flops": res.macs_after,
                   "flops_reduction": res.macs_reduction, "acc_no_finetune": acc(student0, xs, ys)}
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "s.keras")
                student0.save(path)
                for mode in ("kd", "ce"):
                    runs = []
                    for seed in range(1, args.seeds + 1):
                        student = finetune(path, dense, mode, (xt, yt), args.finetune_epochs, seed, args.temperature, args.alpha)
                        runs.append(acc(student, xs, ys))
                    row[f"acc_{mode}"] = float(np.mean(runs))
                    row[f"acc_{mode}_runs"] = runs
            row["acc_loss_kd"] = entry["dense_acc"] - row["acc_kd"]
            row["latency_ms"] = latency_ms(student, args.runs)
            row["latency_ratio"] = row["latency_ms"] / entry["dense_latency_ms"]
            row["flops_ratio"] = res.macs_after / prof.macs
            entry["results"].append(row)
            print(f"[{time.time() - t0:5.0f}s] {name} target {target}: tau {res.tau:.4f}, removed {res.removed}, FLOPs -{100 * res.macs_reduction:.1f}%, "
                  f"acc KD {row['acc_kd_runs']} CE {row['acc_ce_runs']}, latency x{row['latency_ratio']:.2f} (FLOPs x{row['flops_ratio']:.2f})", flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
        probes.plot(os.path.splitext(args.out)[0] + f"_{name}_probes.png", removed_any)
    lines = []
    for name, e in results["models"].items():
        lines.append(f"### {name}: dense accuracy {100 * e['dense_acc']:.2f}%, {e['dense_flops'] / 1e6:.2f} M MACs, "
                     f"{e['dense_params']} params, TFLite {e['dense_latency_ms']:.3f} ms\n")
        lines.append(
            "| FLOPs target | tau | units removed | params | MACs (M) | FLOPs removed | acc, no fine-tune | acc KD (runs) | acc CE (runs) "
            "| loss after KD (points) | latency ms (ratio) | FLOPs ratio |"
        )
        lines.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in e["results"]:
            kd = " / ".join(f"{100 * a:.2f}" for a in r["acc_kd_runs"])
            ce = " / ".join(f"{100 * a:.2f}" for a in r["acc_ce_runs"])
            lines.append(f"| {r['target_flops_reduction']} | {r['tau']:.4f} | {len(r['removed'])}: {', '.join(r['removed'])} | {r['params']} | "
                         f"{r['flops'] / 1e6:.2f} | {100 * r['flops_reduction']:.1f}% | {100 * r['acc_no_finetune']:.2f} | "
                         f"**{100 * r['acc_kd']:.2f}** ({kd}) | **{100 * r['acc_ce']:.2f}** ({ce}) | {100 * r['acc_loss_kd']:+.2f} | "
                         f"{r['latency_ms']:.3f} ({r['latency_ratio']:.2f}) | {r['flops_ratio']:.2f} |")
        lines.append("")
    lines.append(f"Budget: {results['budget']}. Latency: float TFLite, 1 thread, batch 1, median of {args.runs} runs. "
                 "Loss after KD: dense accuracy minus mean KD accuracy (positive = worse than dense).")
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
