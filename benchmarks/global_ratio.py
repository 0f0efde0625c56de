"""Global removal ratio study: cross-layer normalisations, removal modes, per-layer removal pattern.

    python benchmarks/global_ratio.py            # patterns (LeNet-5, ResNet-20) + the accuracy table
    python benchmarks/global_ratio.py --table-only

One removal ratio for the whole model means one threshold on a score every
weight of every layer is put on (`tfprune.allocation.global_ratio`). This
script

1. trains LeNet-5 (3 epochs, as benchmarks/allocation.py's seed 0) and ResNet-20
   (``--resnet-epochs`` on ``--resnet-images`` MNIST images) and records, for
   every normalisation and total sparsity, the share of each layer removed
   (the per-layer removal pattern, against depth) -> global_ratio.png;
2. collects the accuracies of the normalisations and removal modes from
   benchmarks/results/allocation.json (produced by
   ``python benchmarks/allocation.py --merge --sparsities 0.95,0.988 --finetune-epochs 1
   --methods ...``; this script trains no pruned model) -> global_ratio.md.

Writes benchmarks/results/global_ratio.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz")
# label -> global_ratio normalisation (the allocators `global` and `lamp` rank as "raw" and "lamp")
NORMS = {"raw (= global)": "raw", "rms": "rms", "std": "std", "energy": "energy", "lamp (= lamp)": "lamp"}
# accuracy table: normalisation row -> {mode: method label in allocation.json}
STUDY = {
    "raw (= global)": {"ramp": "global", "oneshot": "global_oneshot", "gradual": "global_gradual"},
    "rms (previous default)": {"ramp": "global_ratio_rms"},
    "std": {"ramp": "global_ratio_std", "gradual": "global_ratio_std_gradual"},
    "energy": {"ramp": "global_ratio_energy"},
    "lamp (= lamp)": {"ramp": "lamp", "oneshot": "lamp_oneshot", "gradual": "lamp_gradual"},
}
MODES = ("ramp", "oneshot", "gradual")


def patterns(model, sparsities) -> dict:
    inv = tp.prunable_layers(model)
    out = {"layers": inv.names, "n_params": [p.n_params for p in inv], "by_sparsity": {}}
    for s in sparsities:
        rows = {}
        for label, norm in NORMS.items():
            a = tp.allocation.allocate_sparsity(model, s, allocation="global_ratio", normalization=norm)
            rows[label] = [a.targets[n] for n in inv.names]
        out["by_sparsity"][str(s)] = rows
    return out


def train_models(args) -> dict:
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    res = {}
    keras.utils.set_random_seed(0)
    t0 = time.time()
    m = tp.models.compile_classifier(tp.models.lenet5())
    m.fit(xt, yt, epochs=3, batch_size=128, verbose=0)
    res["lenet5"] = {"acc": float(m.evaluate(xs, ys, verbose=0)[1]), "train": "3 epochs, 22,699 images, Adam 1e-3, batch 128, seed 0",
                     "seconds": time.time() - t0, **patterns(m, args.sparsities)}
    print(f"lenet5 dense {res['lenet5']['acc']:.4f}", flush=True)
    keras.utils.set_random_seed(0)
    t0 = time.time()
    r = tp.models.compile_classifier(tp.models.resnet20(input_shape=(28, 28, 1), num_classes=10))
    n = min(args.resnet_images, len(xt))
    r.fit(xt[:n], yt[:n], epochs=args.resnet_epochs, batch_size=128, verbose=0)
    res["resnet20"] = {"acc": float(r.evaluate(xs, ys, verbose=0)[1]),
                       "train": f"{args.resnet_epochs} epoch(s), {n:,} images, Adam 1e-3, batch 128, seed 0",
                       "seconds": time.time() - t0, **patterns(r, args.sparsities)}
    print(f"resnet20 dense {res['resnet20']['acc']:.4f}", flush=True)
    return res


def accuracy_table(alloc: dict) -> dict:
    out = {}
    for model_name, m in alloc["models"].items():
        rows = {}
        for label, modes in STUDY.items():
            cells = {}
            for mode, meth in modes.items():
                for r in m["results"]:
                    if r["method"] == meth and r["sparsity"] in (0.95, 0.988):
                        cells.setdefault(mode, {})[str(r["sparsity"])] = {"acc_mean": r["acc_mean"], "acc_std": r["acc_std"], "n_seeds": r["n_seeds"],
                                                                          "method": meth, "layer_sparsity": r["layer_sparsity"]}
            rows[label] = cells
        out[model_name] = {"dense_acc": m["dense_acc"], "rows": rows}
    return out


def write(results: dict, out: str) -> None:
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    base = os.path.splitext(out)[0]
    lines = ["#### Global removal ratio: normalisations x removal modes (test %, mean ± std over seeds)", ""]
    for model_name, m in results["accuracy"].items():
        lines.append(f"{model_name} (dense {100 * m['dense_acc']:.2f}%)")
        lines.append("")
        head = [f"{mode} {s}" for mode in MODES for s in ("0.95", "0.988")]
        lines.append("| normalisation | " + " | ".join(head) + " |")
        lines.append("|---|" + "---:|" * len(head))
        for label, cells in m["rows"].items():
            row = []
            for mode in MODES:
                for s in ("0.95", "0.988"):
                    c = cells.get(mode, {}).get(s)
                    if c is None:
                        row.append("")
                        continue
                    seeds = "" if c["n_seeds"] == 3 else f" ({c['n_seeds']} seeds)"
                    row.append(f"{100 * c['acc_mean']:.2f} ± {100 * c['acc_std']:.2f}{seeds}")
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append(
        "Modes: `ramp` = the allocation from the dense weights reached by the polynomial ramp (benchmarks/allocation.py's recipe); "
        "`oneshot` = the same allocation at step 1, then the same epochs at the targets; `gradual` = one global ranking redone on the "
        "current weights at every mask update of the ramp, at the ramp's current total (`Rerank`). Same budget for all: "
        f"{results.get('budget', '')}. Empty cells were not run (CPU time)."
    )
    lines.append("")
    lines.append("#### Per-layer removal pattern after training, by mode (share of each layer removed at 0.988; last seed)")
    for model_name, m in results["accuracy"].items():
        shown = [(f"{label}, {mode}", by_s["0.988"]["layer_sparsity"]) for label, cells in m["rows"].items()
                 for mode, by_s in cells.items() if "0.988" in by_s and label.startswith(("raw", "lamp"))]
        if not shown:
            continue
        names = list(shown[0][1])
        lines += ["", f"{model_name}: | normalisation, mode | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {label} | " + " | ".join(f"{ls[n]:.4f}" for n in names) + " |" for label, ls in shown]
    if results.get("patterns"):
        lines.append("")
        lines.append("#### Per-layer removal pattern (share of each layer removed, from the dense weights)")
        for model_name, p in results["patterns"].items():
            lines.append("")
            lines.append(f"{model_name} (dense {100 * p['acc']:.2f}%, trained {p['train']}); layers in depth order")
            if len(p["layers"]) > 8:  # a deep net's rows are too wide for a table: the plot and the JSON have them
                lines.append(f"({len(p['layers'])} layers: see global_ratio.png and `patterns` in global_ratio.json)")
                continue
            for s, rows in p["by_sparsity"].items():
                lines.append("")
                lines.append(f"total {s}: | normalisation | " + " | ".join(p["layers"]) + " |")
                lines.append("|---|" + "---:|" * len(p["layers"]))
                lines.append("| params | " + " | ".join(str(n) for n in p["n_params"]) + " |")
                for label, vals in rows.items():
                    lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    if not results.get("patterns"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pats = results["patterns"]
    sps = list(next(iter(pats.values()))["by_sparsity"])
    fig, axes = plt.subplots(len(pats), len(sps), figsize=(5.5 * len(sps), 3.8 * len(pats)), squeeze=False)
    for i, (model_name, p) in enumerate(pats.items()):
        for j, s in enumerate(sps):
            ax = axes[i][j]
            x = np.arange(len(p["layers"]))
            for label, vals in p["by_sparsity"][s].items():
                ax.plot(x, vals, marker="o", ms=3, label=label)
            ax.axhline(float(s), color="gray", lw=0.8, ls=":")
            ax.set_title(f"{model_name}, total {s} removed")
            ax.set_xlabel("layer (depth order)")
            ax.set_ylabel("share of the layer removed")
            ax.set_ylim(-0.02, 1.02)
            if len(x) <= 6:
                ax.set_xticks(x, p["layers"], fontsize=7)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(base + ".png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or DEFAULT_DATA)
    ap.add_argument("--allocation", default=os.path.join(HERE, "results", "allocation.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "global_ratio.json"))
    ap.add_argument("--sparsities", type=lambda s: [float(v) for v in s.split(",")], default=[0.9, 0.988])
    ap.add_argument("--resnet-epochs", type=int, default=1)
    ap.add_argument("--resnet-images", type=int, default=22699)
    ap.add_argument("--table-only", action="store_true", help="keep the patterns already in --out, rebuild the accuracy table")
    args = ap.parse_args(argv)
    with open(args.allocation) as f:
        alloc = json.load(f)
    results = {"budget": alloc.get("budget"), "accuracy": accuracy_table(alloc)}
    if args.table_only:
        if not os.path.exists(args.out):
            raise SystemExit(f"--table-only: {args.out} does not exist yet; run without --table-only first")
        with open(args.out) as f:
            results["patterns"] = json.load(f).get("patterns")
    else:
        results["patterns"] = train_models(args)
    write(results, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
