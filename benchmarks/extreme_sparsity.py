"""LeNet-5 at 98.8% of its weights removed: the global-removal-ratio paper's headline, as a recipe.

    python benchmarks/extreme_sparsity.py                       # 3 seeds -> benchmarks/results/extreme_sparsity.{json,md}
    python benchmarks/extreme_sparsity.py --seeds 1 --out /tmp/x.json

The recipe (every number is a command-line option; the defaults are the documented recipe):

1. dense: Caffe LeNet-5 (`tfprune.models.lenet5`, 430,500 kernel weights), ``--dense-epochs``
   epochs of Adam 1e-3 with cosine decay, batch 128;
2. gradual pruning: `tfprune.Pruning(0.988)` with the library's default importance
   and ``--allocation``, over *all* kernels (the logits layer too, as in the paper), a
   polynomial ramp (power 3) over ``--ramp-epochs`` epochs, masks updated ``--updates``
   times along the ramp; Adam ``--prune-lr`` constant during the ramp;
3. fine-tuning at the target: ``--finetune-epochs`` more epochs with the masks held, the
   learning rate decaying (cosine) from ``--prune-lr`` to 0 (one optimizer for 2 + 3);
4. `tfprune.strip`, then `tfprune.export_tflite(mode="sparse")`: the file size is reported,
   and the test accuracy is measured on the .tflite file itself (ai-edge-litert), not only in Keras.

Writes ``{"sparsity": 0.988, "achieved_sparsity": ..., "dense_acc": ..., "acc": [one per seed],
"tflite_bytes": ..., "minutes": ...}`` plus per-seed details and a markdown table beside it.
Test accuracy on ../shared/data/mnist (22,699 training images, the full 10,000 test images).
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

import tfprune as tp  # noqa: E402
from benchmarks._common import write_markdown  # noqa: E402
from tfprune._keras import keras  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist", "mnist.npz")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "extreme_sparsity.json")


def cosine_adam(lr: float, steps: int, constant_steps: int = 0) -> keras.optimizers.Optimizer:
    """Adam at ``lr`` for ``constant_steps`` optimizer steps, then cosine decay to 0 over ``steps - constant_steps``."""
    decay = keras.optimizers.schedules.CosineDecay(lr, max(1, steps - constant_steps))

    class Hold(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            import tensorflow as tf

            s = tf.cast(step, tf.float32)
            return tf.where(s < constant_steps, tf.constant(lr, tf.float32), decay(tf.maximum(s - constant_steps, 0.0)))

        def get_config(self):
            return {"lr": lr, "steps": steps, "constant_steps": constant_steps}

    return keras.optimizers.Adam(Hold() if constant_steps else decay)


def compile_logits(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def tflite_accuracy(path: str, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite file over (x, y), one image at a time (ai-edge-litert)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    correct = 0
    for k in range(len(x)):
        it.set_tensor(i_in, x[k : k + 1])
        it.invoke()
        correct += int(np.argmax(it.get_tensor(i_out)[0]) == y[k])
    return correct / len(x)


def run_seed(seed: int, data, args) -> dict:
    (xt, yt), (xs, ys) = data
    steps = int(np.ceil(len(xt) / args.batch_size))
    t0 = time.time()
    keras.utils.set_random_seed(seed)
    dense = compile_logits(tp.models.lenet5(), cosine_adam(1e-3, args.dense_epochs * steps))
    dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=args.batch_size, verbose=0)
    dense_acc = float(dense.evaluate(xs, ys, verbose=0)[1])
    t_dense = time.time() - t0

    keras.utils.set_random_seed(1000 + seed)
    wrapped = tp.wrap(dense)
    ramp, total = args.ramp_epochs * steps, (args.ramp_epochs + args.finetune_epochs) * steps
    compile_logits(wrapped, cosine_adam(args.prune_lr, total, constant_steps=ramp))
    cb = tp.Pruning(
        args.sparsity,
        allocation=args.allocation,
        begin_step=0,
        end_step=ramp,
        frequency=max(1, ramp // args.updates),
        ramp_fraction=1.0,
    )
    wrapped.fit(xt, yt, epochs=args.ramp_epochs + args.finetune_epochs, batch_size=args.batch_size, verbose=0, callbacks=[cb])
    keras_acc = float(wrapped.evaluate(xs, ys, verbose=0)[1])
    achieved = tp.prunable_layers(wrapped).total_sparsity()
    layer_sparsity = {p.name: float(np.mean(p.kernel() == 0)) for p in tp.prunable_layers(wrapped).prunable}
    stripped = tp.strip(wrapped)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lenet5_sparse.tflite")
        report = tp.export_tflite(stripped, path, mode="sparse", sample_inputs=xs[:64])
        size = os.path.getsize(path)
        lite_acc = tflite_accuracy(path, xs, ys)
    minutes = (time.time() - t0) / 60
    row = {
        "seed": seed,
        "dense_acc": dense_acc,
        "acc": lite_acc,
        "keras_acc": keras_acc,
        "achieved_sparsity": achieved,
        "layer_sparsity": layer_sparsity,
        "tflite_bytes": size,
        "parity_max_abs_diff": float(report.max_abs_diff),
        "dense_minutes": t_dense / 60,
        "minutes": minutes,
    }
    print(
        f"seed {seed}: dense {dense_acc:.4f}  pruned {keras_acc:.4f} (tflite {lite_acc:.4f})  achieved {achieved:.5f}  "
        f"{size} B  {minutes:.1f} min  layers {', '.join(f'{k} {v:.4f}' for k, v in layer_sparsity.items())}",
        flush=True,
    )
    return row


def write(results: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    rows = results["per_seed"]
    lines = [
        f"### LeNet-5 at sparsity {results['sparsity']} (`python benchmarks/extreme_sparsity.py`)",
        "",
        "| seed | dense acc | pruned acc (.tflite) | pruned acc (Keras) | achieved sparsity | kept weights | sparse .tflite bytes | minutes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kept = round((1 - r["achieved_sparsity"]) * results["n_weights"])
        lines.append(
            f"| {r['seed']} | {100 * r['dense_acc']:.2f}% | {100 * r['acc']:.2f}% | {100 * r['keras_acc']:.2f}% | "
            f"{r['achieved_sparsity']:.4f} | {kept} | {r['tflite_bytes']:,} | {r['minutes']:.1f} |"
        )
    if rows:
        acc = np.array([r["acc"] for r in rows])
        lines += [
            "",
            f"Mean over {len(rows)} seed(s): {100 * acc.mean():.2f}% ± {100 * acc.std():.2f} (dense {100 * results['dense_acc']:.2f}%); "
            f"target ≥ 98.0%: {'met' if acc.mean() >= 0.98 else 'missed'} (worst seed {100 * acc.min():.2f}%).",
            "",
            "Per-layer sparsity (last seed): " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1]["layer_sparsity"].items()) + ".",
        ]
    lines += ["", f"Budget: {results['budget']}"]
    write_markdown(out, lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--data", default=DEFAULT_DATA, help="MNIST .npz (keras layout); default ../shared/data/mnist/mnist.npz")
    ap.add_argument("--sparsity", type=float, default=0.988)
    ap.add_argument("--allocation", default="importance")
    ap.add_argument("--dense-epochs", type=int, default=8)
    ap.add_argument("--ramp-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--updates", type=int, default=100, help="mask updates along the ramp")
    ap.add_argument("--prune-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args(argv)

    data = tp.datasets.mnist(args.data if os.path.isfile(args.data) else None)
    n_weights = tp.prunable_layers(tp.models.lenet5()).n_params
    budget = (
        f"dense {args.dense_epochs} epochs (Adam 1e-3, cosine decay); pruning with Pruning({args.sparsity}, "
        f"allocation={args.allocation!r}) over all {n_weights:,} kernel weights: {args.ramp_epochs}-epoch polynomial ramp "
        f"(power 3, {args.updates} mask updates) at Adam {args.prune_lr:g}, then {args.finetune_epochs} epochs at the target "
        f"with cosine decay to 0; batch {args.batch_size}; {len(data[0][0])} training images, {len(data[1][0])} test images; "
        f"accuracy measured on the sparse .tflite (ai-edge-litert)"
    )
    results = {"sparsity": args.sparsity, "n_weights": n_weights, "budget": budget, "per_seed": []}
    for seed in range(args.seeds):
        results["per_seed"].append(run_seed(seed, data, args))
        rows = results["per_seed"]
        results.update(
            achieved_sparsity=float(np.mean([r["achieved_sparsity"] for r in rows])),
            dense_acc=float(np.mean([r["dense_acc"] for r in rows])),
            acc=[r["acc"] for r in rows],
            tflite_bytes=int(np.mean([r["tflite_bytes"] for r in rows])),
            minutes=float(np.mean([r["minutes"] for r in rows])),
        )
        write(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
