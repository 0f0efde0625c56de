"""L-OBS benchmark: one-shot error and light retraining at the paper's per-layer ratios.

    python benchmarks/lobs.py                          # LeNet-300-100 and Caffe LeNet-5
    python benchmarks/lobs.py --quick --out /tmp/l.json   # LeNet-300-100 only (< 4 min)

For lobs (the paper's procedure), exact (greedy with inverse-Hessian
downdates) and magnitude pruning at the same per-layer ratios: test error
before retraining and after 100 and 510 retraining iterations (Adam 1e-4,
batch 128, zeros kept exactly), and seconds per layer. Calibration: 10,000
training images. Writes benchmarks/results/lobs.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SETUPS = {
    "lenet300": (tp.models.lenet_300_100, {"fc1": 0.05, "fc2": 0.2, "fc3": 0.7}, 10),
    "lenet5": (tp.models.lenet5, {"conv1": 0.6, "conv2": 0.6, "fc1": 0.05, "fc2": 0.3}, 4),
}
PAPER = {
    "lenet300": "paper (Dong et al. 2017, full MNIST): dense 1.76%, CR 7% (5/20/70% kept): L-OBS 3.10% before retraining, 1.82% after 510 iterations",
    "lenet5": "paper: CR 7% (about 60/60/5/30% kept): about 1.3% after about 740 retraining iterations",
}


def err(model, xs, ys) -> float:
    tp.models.compile_classifier(model)
    return 1.0 - float(model.evaluate(xs, ys, verbose=0)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="LeNet-300-100 only")
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "lobs.json"))
    ap.add_argument("--methods", default="lobs,exact,magnitude")
    ap.add_argument("--n-calib", type=int, default=10000)
    args = ap.parse_args(argv)
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    models = ["lenet300"] if args.quick else list(SETUPS)
    results: dict = {}
    t0 = time.time()
    for name in models:
        build, keep, epochs = SETUPS[name]
        keras.utils.set_random_seed(0)
        dense = tp.models.compile_classifier(build())
        dense.fit(xt, yt, epochs=epochs, batch_size=128, verbose=0)
        entry = {"dense_err": err(dense, xs, ys), "keep": keep, "methods": {}}
        results[name] = entry
        targets = {k: 1.0 - v for k, v in keep.items()}
        for method in args.methods.split(","):
            pruned, report = tp.obs.prune(dense, (xt, yt), targets=targets, solver=method, n_samples=args.n_calib, progress=False)
            row = {"err_0": err(pruned, xs, ys)}
            for steps in (100, 510):
                keras.utils.set_random_seed(1)
                row[f"err_{steps}"] = err(tp.obs.retrain(pruned, xt, yt, steps), xs, ys)
            row["seconds"] = report.seconds
            row["hessian_seconds"] = report.hessian_seconds
            row["seconds_per_layer"] = {r.name: r.seconds for r in report.layers}
            row["delta_e"] = {r.name: r.delta_e for r in report.layers}
            row["bound"] = report.bound
            row["achieved_sparsity"] = report.total_sparsity
            entry["methods"][method] = row
            print(f"[{time.time() - t0:5.0f}s] {name} {method:<9} err0={row['err_0']:.4f} err100={row['err_100']:.4f} "
                  f"err510={row['err_510']:.4f} pass={report.seconds:.1f}s", flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
    lines = []
    for name, entry in results.items():
        lines.append(f"### {name}: dense error {100 * entry['dense_err']:.2f}%, kept per layer {entry['keep']}\n")
        lines.append("| method | error before retraining | after 100 it. | after 510 it. | OBS pass (s) | seconds per layer |")
        lines.append("|---|---:|---:|---:|---:|---|")
        for method, r in entry["methods"].items():
            per = ", ".join(f"{k} {v:.2f}" for k, v in r["seconds_per_layer"].items())
            lines.append(f"| {method} | {100 * r['err_0']:.2f}% | {100 * r['err_100']:.2f}% | {100 * r['err_510']:.2f}% | {r['seconds']:.1f} | {per} |")
        lines.append(f"\n{PAPER[name]}\n")
    lines.append("Ours: MNIST from ../shared (22,699 training images), calibration on 10,000 of them, retraining Adam 1e-4, batch 128.")
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
