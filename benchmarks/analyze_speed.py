"""`tfprune.analyze` speed: the old path (a clone and `predict` per layer and grid point) against the new one.

    python benchmarks/analyze_speed.py            # full grid (13 sparsities)
    python benchmarks/analyze_speed.py --quick    # grid (0.5, 0.9, 0.99)

Model: ``tf_keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3),
weights=None, classes=10)`` (36 prunable layers), seed 0, 128 samples with labels.
Two cases:

* ``untrained``: the reviewer's case (softmax head): random weights, 128 standard-normal
  inputs, random labels. A randomly initialised MobileNetV2 predicts one class
  for every input, so every drop is 0 and every layer passes at the top of
  the grid: the early stop of the new path has nothing to search.
* ``trained``: the same network (BatchNorm momentum 0.9) trained for a few
  epochs on 4,096 real MNIST digits resized to 96x96x3 (needs the MNIST file),
  analysed on 128 test digits: drops are non-zero and differ per layer.

For each case, in one process and back to back: `analyze_reference` (old, below),
``analyze`` (new: one traced forward pass, grid searched from the top with an
early stop) and ``analyze(curves=True)`` (new, every grid point evaluated: the
speed-up without the early stop). The reports are checked to be equal.
Writes benchmarks/results/analyze_speed.json and .md (``--quick``:
analyze_speed_quick.*). Timings are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.analysis import DEFAULT_GRID  # noqa: E402
from tfprune.importance.sensitivity import layer_losses  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK_GRID = (0.5, 0.9, 0.99)
SHAPE = (96, 96, 3)


def mobilenet(bn_momentum: float | None = None, classifier_activation: str | None = "softmax") -> keras.Model:
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(alpha=0.35, input_shape=SHAPE, weights=None, classes=10, classifier_activation=classifier_activation)
    if bn_momentum is not None:
        for layer in m.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return m


def untrained_case(n: int) -> tuple[keras.Model, tuple[np.ndarray, np.ndarray], str]:
    model = mobilenet()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return model, (x, y), f"random weights (seed 0), {n} standard-normal inputs, random labels"


def _resize(x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    x = tf.image.resize(x[..., None].astype(np.float32) / 255.0, SHAPE[:2]).numpy()
    return np.repeat(x, 3, axis=-1)


def trained_case(path: str, n: int, epochs: int) -> tuple[keras.Model, tuple[np.ndarray, np.ndarray], str]:
    d = np.load(path)
    xt, yt = _resize(d["x_train"][:4096]), d["y_train"][:4096].astype(np.int64)
    xs, ys = _resize(d["x_test"][:n]), d["y_test"][:n].astype(np.int64)
    model = mobilenet(bn_momentum=0.9, classifier_activation=None)  # logits, as compile_classifier expects
    tfprune.models.compile_classifier(model, 1e-3)
    t = time.perf_counter()
    model.fit(xt, yt, epochs=epochs, batch_size=128, verbose=0)
    desc = f"trained {epochs} epochs on 4,096 MNIST digits resized to 96x96x3 ({time.perf_counter() - t:.0f} s), {n} test digits"
    return model, (xs, ys), desc


@dataclass
class ReferenceLayer:
    name: str
    params: int
    one_shot_acc_drop: float = 0.0
    max_sparsity_within_delta: float = 0.0


@dataclass
class ReferenceReport:
    dense_acc: float = float("nan")
    most_compact: str | None = None
    evaluations: int = 0
    layers: list[ReferenceLayer] = field(default_factory=list)


def analyze_reference(model: keras.Model, data: tuple, sparsity: float = 0.9, grid: tuple = DEFAULT_GRID, delta: float = 0.01,
                      importance: str = "capacity", allocation: str = "importance", progress: bool = False) -> ReferenceReport:
    """The original `tfprune.analyze` (accuracy columns only): a clone and ``predict`` per layer and grid point, the whole grid.

    The same plan as `analyze` (`tfprune.score_layers` then `tfprune.plan`; the defaults are
    analyze's), then `layer_losses` for each layer at its allocated sparsity and for all layers at every
    grid point (each call re-measures the dense model).
    """
    x, y = data
    scores = tfprune.score_layers(model, importance, data=data, progress=progress)
    p = tfprune.plan(model, sparsity, importance=scores, allocation=allocation, data=data)
    report = ReferenceReport(layers=[ReferenceLayer(q.name, q.n_params) for q in tfprune.prunable_layers(model)])
    names = [r.name for r in report.layers]
    for r in report.layers:
        _, _, report.dense_acc, (acc,) = layer_losses(model, x, y, [r.name], p.targets[r.name], progress=False)
        r.one_shot_acc_drop = float(report.dense_acc - acc)
        report.evaluations += 2
    curves: dict[str, list[tuple[float, float]]] = {}
    for s in grid:
        _, _, report.dense_acc, accs = layer_losses(model, x, y, names, s, progress=False)
        report.evaluations += 1 + len(names)
        for name, a in zip(names, accs):
            curves.setdefault(name, []).append((s, report.dense_acc - a))
    for r in report.layers:
        r.max_sparsity_within_delta = max([s for s, drop in curves[r.name] if drop <= delta], default=0.0)
    report.most_compact = max(report.layers, key=lambda r: (r.max_sparsity_within_delta, r.params)).name
    return report


def compare(old, new) -> dict:
    """Differences between two reports (accuracy columns)."""
    drops = [abs(a.one_shot_acc_drop - b.one_shot_acc_drop) for a, b in zip(old.layers, new.layers)]
    return {
        "dense_acc_old": old.dense_acc,
        "dense_acc_new": new.dense_acc,
        "max_abs_diff_one_shot_drop": float(max(drops)),
        "max_sparsity_within_delta_equal": all(a.max_sparsity_within_delta == b.max_sparsity_within_delta for a, b in zip(old.layers, new.layers)),
        "most_compact_old": old.most_compact,
        "most_compact_new": new.most_compact,
        "equal": bool(
            old.most_compact == new.most_compact
            and abs(old.dense_acc - new.dense_acc) < 1e-9
            and max(drops) < 1e-9
            and all(a.max_sparsity_within_delta == b.max_sparsity_within_delta for a, b in zip(old.layers, new.layers))
        ),
    }


def run_case(name: str, model: keras.Model, data: tuple, desc: str, grid: tuple) -> dict:
    kw = dict(sparsity=0.9, grid=grid, delta=0.01, progress=False)
    out: dict = {"case": name, "data": desc, "n_samples": len(data[1]), "prunable_layers": len(tfprune.prunable_layers(model))}
    runs = {}
    for label, fn in (("old", lambda: analyze_reference(model, data, **kw)), ("new", lambda: tfprune.analyze(model, data, **kw)),
                      ("new_whole_grid", lambda: tfprune.analyze(model, data, curves=True, **kw))):
        t = time.perf_counter()
        rep = fn()
        sec = time.perf_counter() - t
        runs[label] = rep
        out[label] = {"seconds": sec, "evaluations": rep.evaluations}
        print(f"[{name}] {label}: {sec:.1f} s, {rep.evaluations} evaluations", flush=True)
    out["speedup"] = out["old"]["seconds"] / out["new"]["seconds"]
    out["speedup_whole_grid"] = out["old"]["seconds"] / out["new_whole_grid"]["seconds"]
    out["check"] = compare(runs["old"], runs["new"])
    out["check_whole_grid"] = compare(runs["old"], runs["new_whole_grid"])
    out["report"] = runs["new"].to_dict()
    print(runs["new"].table(), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID} instead of the 13-point default")
    ap.add_argument("--cases", default="untrained,trained", help="comma-separated: untrained, trained")
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the trained case")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    grid = QUICK_GRID if args.quick else DEFAULT_GRID
    out_path = args.out or os.path.join(HERE, "results", "analyze_speed_quick.json" if args.quick else "analyze_speed.json")
    result: dict = {"grid": list(grid), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)", "cases": []}
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case == "untrained":
            model, data, desc = untrained_case(args.samples)
        elif case == "trained":
            if not os.path.isfile(args.data):
                print(f"skipping the trained case: no MNIST file at {args.data} (pass --data)", flush=True)
                continue
            model, data, desc = trained_case(args.data, args.samples, args.epochs)
        else:
            raise SystemExit(f"unknown case {case!r}; use untrained, trained")
        result["cases"].append(run_case(case, model, data, desc, grid))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        "# analyze speed: MobileNetV2 (alpha 0.35, 96x96x3, 10 classes)",
        "",
        f"Grid {list(grid)}, delta 0.01, total sparsity 0.9, importance capacity; {result['machine']}. "
        "Old and new run back to back in one process; other jobs shared the cores, so absolute seconds may be inflated.",
        "",
        "| case | samples | old s (evals) | new s (evals) | speed-up | new, whole grid s (evals) | speed-up | same result |",
        "|:---|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for c in result["cases"]:
        same = "yes" if c["check"]["equal"] and c["check_whole_grid"]["equal"] else f"no (max drop diff {c['check']['max_abs_diff_one_shot_drop']:.3g})"
        lines.append(
            f"| {c['case']} | {c['n_samples']} | {c['old']['seconds']:.1f} ({c['old']['evaluations']}) | {c['new']['seconds']:.1f} ({c['new']['evaluations']}) "
            f"| {c['speedup']:.1f}x | {c['new_whole_grid']['seconds']:.1f} ({c['new_whole_grid']['evaluations']}) | {c['speedup_whole_grid']:.1f}x | {same} |"
        )
    lines += ["", "Cases:"] + [f"- {c['case']}: {c['data']}; dense accuracy {c['check']['dense_acc_new']:.4f}" for c in result["cases"]]
    lines += [
        "",
        "An evaluation is one forward pass over the samples. The old path clones the model and re-traces `predict` for every layer's "
        "allocated sparsity and every grid point, and evaluates the whole grid; the new one traces one forward pass, assigns kernels "
        "in place, and searches the grid from the top, stopping at the first sparsity within delta (same answer). "
        "'whole grid' evaluates every grid point (`analyze(curves=True)`).",
    ]
    write_markdown(out_path, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
