"""The demo behind the README's main command.

Trains Caffe LeNet-5 on MNIST (offline without the full set: the 8,000 / 2,000
image MNIST subset bundled with tfprune, announced), prunes it to
a total sparsity with the best allocator available, fine-tunes, exports
TFLite (sparse float and int8), verifies the exports, prints a table and
saves a plot and a JSON record.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from tfprune import datasets, models
from tfprune.allocation import list_allocators
from tfprune.export import export_tflite
from tfprune.files import atomic_write, save_figure
from tfprune.inventory.layers import prunable_layers
from tfprune.masks.wrapping import wrap
from tfprune.training.callbacks import Pruning

#: Best first; the demo uses the first allocator that is registered.
ALLOCATOR_PREFERENCE = ("importance", "lamp", "global_ratio", "global", "erk", "uniform")


def best_allocator() -> str:
    available = set(list_allocators())
    return next(a for a in ALLOCATOR_PREFERENCE if a in available)


def run_demo(
    data_path: str | None = None,
    out_dir: str = "out",
    sparsity: float = 0.9,
    epochs: int = 3,
    prune_epochs: int = 3,
    batch_size: int = 128,
    allocation: str | None = None,
    seed: int = 0,
    plot: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns the record it also writes to ``out_dir/demo.json``."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    t0 = time.time()
    ((x_train, y_train), (x_test, y_test)), source = datasets.load_mnist_or_digits(data_path)
    print(f"data: {source}")
    allocation = allocation or best_allocator()

    dense = models.compile_classifier(models.lenet5(x_train.shape[1:]))
    dense.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, validation_split=0.1, verbose=2)
    dense_acc = float(dense.evaluate(x_test, y_test, verbose=0)[1])

    pruned = models.compile_classifier(wrap(dense), learning_rate=5e-4)
    callback = Pruning(sparsity, importance="capacity", allocation=allocation, ramp_fraction=0.6)
    pruned.fit(x_train, y_train, epochs=prune_epochs, batch_size=batch_size, callbacks=[callback], verbose=2)
    pruned_acc = float(pruned.evaluate(x_test, y_test, verbose=0)[1])

    os.makedirs(out_dir, exist_ok=True)
    sample = (x_test, y_test)
    reports = {
        "float": export_tflite(dense, os.path.join(out_dir, "lenet5_dense.tflite"), mode="float", sample_inputs=sample, n_samples=len(x_test)),
        "sparse": export_tflite(pruned, os.path.join(out_dir, "lenet5_sparse.tflite"), mode="sparse", sample_inputs=sample, n_samples=len(x_test)),
        # int8 with dense encoding and int8 I/O: what TensorFlow Lite Micro runs (no DENSIFY, no sparse tensors),
        # checked with TFLM's interpreter when tflite-micro is installed
        "int8": export_tflite(
            pruned,
            os.path.join(out_dir, "lenet5_int8.tflite"),
            mode="micro",
            sample_inputs=sample,
            representative_data=x_train[:500],
            n_samples=len(x_test),
            c_header=os.path.join(out_dir, "lenet5_int8.h"),
        ),
    }
    layers = prunable_layers(pruned)
    record: dict[str, Any] = {
        "data": source,
        "allocation": allocation,
        "importance": callback.scores_.method,
        "importance_seconds": callback.importance_seconds_,
        "requested_sparsity": sparsity,
        "achieved_sparsity": layers.total_sparsity(),
        "layers": [
            {"name": p.name, "params": p.n_params, "target": callback.targets_[p.name], "achieved": p.sparsity()} for p in layers
        ],
        "accuracy": {
            "dense_keras": dense_acc,
            "pruned_keras": pruned_acc,
            "dense_tflite": reports["float"].tflite_accuracy,
            "sparse_tflite": reports["sparse"].tflite_accuracy,
            "int8_tflite": reports["int8"].tflite_accuracy,
        },
        "tflite": {
            k: {"bytes": r.bytes, "gzip_bytes": r.gzip_bytes, "max_abs_diff": r.max_abs_diff, "top1_agreement": r.top1_agreement, "runtime": r.runtime}
            for k, r in reports.items()
        },
        "seconds": time.time() - t0,
    }
    micro = reports["int8"].micro
    if micro is not None:
        record["tflm"] = {"runtime": micro.runtime, "flash_bytes": micro.flash_bytes, "arena_bytes": micro.arena_bytes,
                          "max_abs_diff": micro.max_abs_diff, "top1_agreement": micro.top1_agreement}
    with atomic_write(os.path.join(out_dir, "demo.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(format_table(record))
    if plot:
        record["plot"] = save_plot(record, os.path.join(out_dir, "demo.png"))
        print(f"plot: {record['plot']}")
    return record


def format_table(r: dict[str, Any]) -> str:
    a, t = r["accuracy"], r["tflite"]
    lines = [
        "",
        f"LeNet-5 on {r['data']}: allocation '{r['allocation']}' (importance '{r['importance']}', "
        f"{r['importance_seconds']:.3f} s), requested sparsity {r['requested_sparsity']:.3f}, "
        f"achieved {r['achieved_sparsity']:.4f}",
        "",
        "| layer | weights | target sparsity | achieved sparsity |",
        "|---|---:|---:|---:|",
    ]
    for row in r["layers"]:
        lines.append(f"| {row['name']} | {row['params']} | {row['target']:.4f} | {row['achieved']:.4f} |")
    lines += [
        "",
        "| model | test accuracy | .tflite bytes | gzip bytes | max abs diff vs Keras | top-1 agreement |",
        "|---|---:|---:|---:|---:|---:|",
        f"| dense Keras | {a['dense_keras']:.4f} | | | | |",
        f"| pruned Keras | {a['pruned_keras']:.4f} | | | | |",
    ]
    for key, label in (("float", "dense TFLite (float)"), ("sparse", "pruned TFLite (sparse float)"), ("int8", "pruned TFLite (int8, dense, for TFLM)")):
        acc = a[{"float": "dense_tflite", "sparse": "sparse_tflite", "int8": "int8_tflite"}[key]]
        lines.append(f"| {label} | {acc:.4f} | {t[key]['bytes']} | {t[key]['gzip_bytes']} | {t[key]['max_abs_diff']:.3g} | {t[key]['top1_agreement']:.4f} |")
    if "tflm" in r:
        m = r["tflm"]
        lines.append(f"\nlenet5_int8.h on TensorFlow Lite Micro ({m['runtime']}): flash {m['flash_bytes']} bytes, "
                     f"arena {m['arena_bytes']} bytes, max abs diff vs Keras {m['max_abs_diff']:.3g}, top-1 agreement {m['top1_agreement']:.4f}")
    lines.append(f"\ntotal time {r['seconds']:.0f} s")
    return "\n".join(lines)


def save_plot(r: dict[str, Any], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [row["name"] for row in r["layers"]]
    xs = np.arange(len(names))
    ax1.bar(xs - 0.2, [row["target"] for row in r["layers"]], 0.4, label="target")
    ax1.bar(xs + 0.2, [row["achieved"] for row in r["layers"]], 0.4, label="achieved")
    ax1.set_xticks(xs, names)
    ax1.set_ylabel("sparsity (fraction removed)")
    ax1.set_ylim(0, 1)
    ax1.set_title(f"per-layer sparsity ({r['allocation']}, total {r['achieved_sparsity']:.3f})")
    ax1.legend()
    labels = ["float", "sparse", "int8"]
    kb = [r["tflite"][k]["bytes"] / 1024 for k in labels]
    ax2.bar(labels, kb, color=["gray", "tab:blue", "tab:green"])
    for i, k in enumerate(labels):
        acc = r["accuracy"][{"float": "dense_tflite", "sparse": "sparse_tflite", "int8": "int8_tflite"}[k]]
        ax2.text(i, kb[i], f"acc {acc:.4f}", ha="center", va="bottom")
    ax2.set_ylabel(".tflite size (KiB)")
    ax2.set_title("TFLite exports")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
