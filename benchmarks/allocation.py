"""Allocation benchmark: per-layer sparsity from each allocator, same training budget for all.

    python benchmarks/allocation.py                      # full: LeNet-5 + LeNet-300-100, 6 sparsities, 3 seeds
    python benchmarks/allocation.py --quick --out /tmp/a.json   # 1 seed, 0.9/0.95/0.988, LeNet-5 (< 6 min)
    python benchmarks/allocation.py --merge --sparsities 0.95,0.988 --methods lamp,output_error   # add/replace rows

Removal modes (the method's 4th field): ``ramp`` (default: the allocation from the
dense weights, reached by the polynomial ramp), ``oneshot`` (the same allocation
applied at step 0, then the same epochs at the targets) and ``gradual`` (one
global ranking redone on the current weights at every mask update of the ramp,
at the ramp's current total sparsity: `Rerank`).

For each seed: train the dense model once; then for every (method, sparsity):
copy it, wrap, and fit ``ramp_epochs`` (polynomial ramp to the targets) +
``finetune_epochs`` at the targets with `Pruning`, the allocation
computed up front from the dense weights. Writes JSON (after every run), a
markdown table and a plot next to it.
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
from tfprune.importance.base import resolve as resolve_importance  # noqa: E402

# Placeholder option value: replaced by the layers' input Hessians on the calibration images.
CALIB_HESSIANS = "<calibration hessians>"
# method label -> (allocator, importance scorer or None, allocator options[, mode])
METHODS = {
    "uniform": ("uniform", None, {}),
    "global": ("global", None, {}),
    "global_ratio": ("global_ratio", None, {}),
    "lamp": ("lamp", None, {}),
    "erk": ("erk", None, {}),
    "capacity_spectral": ("importance", "capacity_spectral", {}),
    "capacity_energy": ("importance", "capacity_energy", {}),
    "sensitivity": ("importance", "sensitivity", {}),
    # global removal ratio study (benchmarks/global_ratio.py): normalisations and removal modes
    "global_ratio_rms": ("global_ratio", None, {"normalization": "rms"}),
    "global_ratio_std": ("global_ratio", None, {"normalization": "std"}),
    "global_ratio_energy": ("global_ratio", None, {"normalization": "energy"}),
    "global_oneshot": ("global", None, {}, "oneshot"),
    "lamp_oneshot": ("lamp", None, {}, "oneshot"),
    "global_gradual": ("global", None, {}, "gradual"),
    "global_ratio_std_gradual": ("global_ratio", None, {"normalization": "std"}, "gradual"),
    "lamp_gradual": ("lamp", None, {}, "gradual"),
    # candidates to beat LAMP (issue 13 item 5)
    "output_error": ("output_error", None, {"hessians": CALIB_HESSIANS}),
    "output_error_sum": ("output_error", None, {"hessians": CALIB_HESSIANS, "objective": "sum"}),
}
MODES = ("ramp", "oneshot", "gradual")
MODELS = {"lenet5": tp.models.lenet5, "lenet300": tp.models.lenet_300_100}
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist", "mnist.npz")


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def method_mode(method: str) -> str:
    spec = METHODS[method]
    return spec[3] if len(spec) > 3 else "ramp"


def resolve_options(model, options: dict, calib) -> dict:
    """Replace `CALIB_HESSIANS` by the layers' input Hessians on the calibration images."""
    if CALIB_HESSIANS not in options.values():
        return dict(options)
    from tfprune.obs.hessian import layer_hessians

    names = tp.prunable_layers(model).names
    H = layer_hessians(model, names, calib[0], progress=False)
    return {k: (H if v == CALIB_HESSIANS else v) for k, v in options.items()}


class Rerank(keras.callbacks.Callback):
    """Gradual removal with one global ranking (benchmark helper).

    At every ``frequency``-th pruning step up to ``end_step`` (and at
    ``end_step``), the allocator splits the ramp's current total sparsity
    (polynomial, power 3, from 0) over the *current* masked weights, and every
    layer is pruned to its share at that step (its schedule is set to a jump at
    this step). Weights removed earlier stay at zero, so they rank lowest; a
    layer whose share falls gets zero-valued weights back, which training may
    regrow. Put it after `Pruning` in the callbacks.
    """

    def __init__(self, sparsity: float, allocation: str, options: dict, end_step: int, frequency: int, power: float = 3.0):
        super().__init__()
        self.sparsity, self.allocation, self.options = float(sparsity), allocation, dict(options)
        self.end_step, self.frequency, self.power = int(end_step), max(1, int(frequency)), float(power)

    def on_train_batch_begin(self, batch, logs=None):
        from tfprune.masks.schedule import polynomial_sparsity

        layers = tp.prunable_layers(self.model)
        step = int(layers[0].layer.pruning_step.numpy())
        if step > self.end_step or (step % self.frequency and step != self.end_step):
            return
        s = polynomial_sparsity(step, 0.0, self.sparsity, 0, self.end_step, self.power)
        alloc = tp.allocation.allocate_sparsity(layers, s, allocation=self.allocation, **self.options)
        for p in layers:
            t = alloc.targets[p.name]
            p.schedule.set(target_sparsity=t, initial_sparsity=t, begin_step=step, end_step=step + 1, frequency=1)


def allocate(model, method: str, sparsity: float, calib) -> tuple[tp.allocation.Allocation, float]:
    allocator, scorer, options = METHODS[method][:3]
    t0 = time.perf_counter()
    options = resolve_options(model, options, calib)
    scores = None
    if scorer is not None:
        kw = {"sparsity": sparsity, "progress": False} if scorer == "sensitivity" else {}
        scores = tp.score_layers(model, scorer, data=calib if scorer == "sensitivity" else None, **kw).scores
    alloc = tp.allocation.allocate_sparsity(model, sparsity, allocation=allocator, scores=scores, **options)
    return alloc, time.perf_counter() - t0


CAPACITY_VARIANTS = ("capacity_spectral", "capacity_energy")


def pick_default(entry: dict) -> str:
    """The capacity variant with the best mean accuracy at 0.95 and 0.988; ties (< 0.1 point) go to the faster one."""
    scored = []
    for meth in CAPACITY_VARIANTS:
        rs = [r for r in entry["results"] if r["method"] == meth and r["sparsity"] in (0.95, 0.988)]
        if rs:
            scored.append((float(np.mean([r["acc_mean"] for r in rs])), -float(np.mean([r["importance_seconds"] for r in rs])), meth))
    if not scored:
        return entry.get("default_method", "capacity_spectral")
    best = max(s[0] for s in scored)
    close = [s for s in scored if best - s[0] < 0.001]
    return max(close, key=lambda s: s[1])[2]


# candidates to beat LAMP (issue 13 item 5): the default `importance` allocator changes only if one wins
CANDIDATES = ("capacity_energy", "output_error", "output_error_sum", "lamp_gradual")
WIN_MARGIN = 0.005  # at least LAMP + 0.5 points (mean over seeds) at 0.95 and 0.988 on every model


def candidates_table(results: dict) -> list[str]:
    """Markdown: each candidate's mean accuracy minus LAMP's at 0.95 and 0.988, per model, and whether it wins."""
    cells = [(name, s) for name in results["models"] for s in (0.95, 0.988)]

    def acc(name, meth, s):
        r = next((r for r in results["models"][name]["results"] if r["method"] == meth and r["sparsity"] == s), None)
        return None if r is None else r["acc_mean"]

    rows = []
    for meth in CANDIDATES:
        diffs = []
        for name, s in cells:
            a, b = acc(name, meth, s), acc(name, "lamp", s)
            diffs.append(None if a is None or b is None else a - b)
        if all(d is None for d in diffs):
            continue
        done = [d for d in diffs if d is not None]
        wins = len(done) == len(cells) and min(done) >= WIN_MARGIN
        rows.append(f"| {meth} | " + " | ".join("" if d is None else f"{100 * d:+.2f}" for d in diffs)
                    + f" | {100 * np.mean(done):+.2f} | {'yes' if wins else 'no'} |")
    if not rows:
        return []
    head = ["", "#### Candidates against LAMP (accuracy points, candidate minus `lamp`, means over the same seeds)", "",
            "| method | " + " | ".join(f"{n} {s:g}" for n, s in cells) + " | mean | wins (>= +0.5 everywhere) |",
            "|---|" + "---:|" * (len(cells) + 1) + "---|"]
    return head + rows


def write_outputs(results: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    base = os.path.splitext(out)[0]
    lines = []
    for name, m in results["models"].items():
        sps = sorted({r["sparsity"] for r in m["results"]})
        methods = list(dict.fromkeys(r["method"] for r in m["results"]))
        lines.append(
            f"### {name}: dense accuracy {m['dense_acc']:.4f}, one epoch {m['epoch_seconds']:.2f} s (latest run), default method `{m['default_method']}`\n"
        )
        secs_col = "importance s (% of an epoch)"
        lines.append("| method | " + " | ".join(f"{s:g}" for s in sps) + f" | {secs_col} |")
        lines.append("|---|" + "---:|" * (len(sps) + 1))
        for meth in methods:
            cells, secs = [], []
            epochs = []
            for s in sps:
                r = next((r for r in m["results"] if r["method"] == meth and r["sparsity"] == s), None)
                cells.append("" if r is None else f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}")
                if r is not None:
                    secs.append(r["importance_seconds"])
                    epochs.append(r.get("epoch_seconds", m["epoch_seconds"]))  # the epoch of the run that made the row
            lines.append(f"| {meth} | " + " | ".join(cells) + f" | {np.mean(secs):.3f} ({100 * np.mean(secs) / np.mean(epochs):.1f}%) |")
        lines.append("")
    lines.append(
        f"Budget: {results['budget']}. Accuracy: test %, mean ± std over seeds. importance s: scoring + allocation, "
        "from the dense weights, against the median training epoch of the same run. Default method: the capacity "
        "variant with the best mean accuracy at 0.95 and 0.988 (ties within 0.1 point go to the faster). "
        "`global_ratio_rms`: the earlier `global_ratio` default (|w| / rms); `global_ratio_std`, `global_ratio_energy`: other "
        "normalisations (benchmarks/global_ratio.md); `*_oneshot`: the allocation applied at step 1, then the same epochs; "
        "`*_gradual`: one global ranking redone on the current weights at every mask update of the ramp; `output_error`: "
        "per-layer output-error curves from the layers' input Hessians on the 1,000 calibration images, the budget split "
        "to maximise the product of kept output-energy fractions (`_sum`: minimise the summed relative errors)."
    )
    lines += candidates_table(results)
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results["models"]), figsize=(6 * len(results["models"]), 4.5), squeeze=False)
        for ax, (name, m) in zip(axes[0], results["models"].items()):
            for meth in dict.fromkeys(r["method"] for r in m["results"]):
                rs = sorted((r for r in m["results"] if r["method"] == meth), key=lambda r: r["sparsity"])
                if len(rs) < 3:  # the two-sparsity studies are in the tables only
                    continue
                dens = [1 - r["sparsity"] for r in rs]
                ax.errorbar(dens, [100 * r["acc_mean"] for r in rs], yerr=[100 * r["acc_std"] for r in rs], marker="o", label=meth, capsize=2)
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("density (fraction kept, log)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{name} (dense {100 * m['dense_acc']:.2f}%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(base + ".png", dpi=100)
        plt.close(fig)
    except Exception as err:  # noqa: BLE001
        print(f"plot failed: {err}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, sparsities 0.9/0.95/0.988, LeNet-5 only, a 1-epoch ramp and no fine-tuning, batch 512")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "allocation.json"))
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sparsities", default="0.5,0.8,0.9,0.95,0.98,0.988")
    ap.add_argument("--models", default="lenet5,lenet300")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--summarize", action="store_true", help="only rewrite the table, plot and default_method from --out")
    ap.add_argument("--merge", action="store_true", help="keep the other methods' results already in --out (same budget and seeds)")
    ap.add_argument("--dense-epochs", type=int, default=3)
    ap.add_argument("--ramp-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args(argv)
    if args.summarize:
        with open(args.out) as f:
            results = json.load(f)
        for entry in results["models"].values():
            entry["default_method"] = pick_default(entry)
        write_outputs(results, args.out)
        print(open(os.path.splitext(args.out)[0] + ".md").read())
        return 0
    if args.quick:
        args.seeds, args.sparsities, args.models, args.finetune_epochs, args.batch_size = 1, "0.9,0.95,0.988", "lenet5", 0, 512
    sparsities = [float(s) for s in args.sparsities.split(",")]
    methods = args.methods.split(",")
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    calib = (xt[:1000], yt[:1000])
    steps = int(np.ceil(len(xt) / args.batch_size))
    budget = (
        f"dense {args.dense_epochs} epochs (Adam 1e-3); pruning: {args.ramp_epochs} epoch polynomial ramp (power 3, "
        f"mask update every {max(1, args.ramp_epochs * steps // 20)} steps) + {args.finetune_epochs} epochs at target (Adam 5e-4); "
        f"batch {args.batch_size}; {len(xt)} training images; seeds {args.seeds}"
    )
    results = {"budget": budget, "quick": bool(args.quick), "models": {}}
    previous = {}
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        if old.get("budget") != budget:
            raise SystemExit(f"--merge: {args.out} was made with another budget:\n  {old.get('budget')}\nvs\n  {budget}")
        previous = old["models"]
    t_start = time.time()
    for model_name in args.models.split(","):
        raw: dict[tuple[str, float], list] = {}
        dense_accs, epoch_secs = [], []
        entry = {"dense_acc": None, "epoch_seconds": None, "default_method": resolve_importance("capacity"), "results": []}
        results["models"][model_name] = entry
        kept = [r for r in previous.get(model_name, {}).get("results", []) if r["method"] not in methods or r["sparsity"] not in sparsities]
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            dense = tp.models.compile_classifier(MODELS[model_name]())
            timer = EpochTimer()
            dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=args.batch_size, verbose=0, callbacks=[timer])
            dense_accs.append(float(dense.evaluate(xs, ys, verbose=0)[1]))
            epoch_secs.append(float(np.median(timer.times[1:] if len(timer.times) > 1 else timer.times)))
            for sparsity in sparsities:
                for meth in methods:
                    alloc, imp_s = allocate(dense, meth, sparsity, calib)
                    keras.utils.set_random_seed(1000 + seed)
                    w = tp.models.compile_classifier(tp.wrap(dense), learning_rate=5e-4)
                    mode = method_mode(meth)
                    end = 1 if mode == "oneshot" else args.ramp_epochs * steps  # the wrapper sees step 1 first
                    cbs = [tp.Pruning(alloc, begin_step=0, end_step=end, verbose=0)]
                    if mode == "gradual":
                        options = resolve_options(dense, METHODS[meth][2], calib)
                        cbs.append(Rerank(sparsity, METHODS[meth][0], options, end, max(1, end // 20)))
                    w.fit(xt, yt, epochs=args.ramp_epochs + args.finetune_epochs, batch_size=args.batch_size, verbose=0, callbacks=cbs)
                    acc = float(w.evaluate(xs, ys, verbose=0)[1])
                    inv = tp.prunable_layers(w)
                    achieved = inv.total_sparsity()
                    layer_sp = {p.name: float(p.sparsity()) for p in inv} if mode == "gradual" else alloc.targets
                    raw.setdefault((meth, sparsity), []).append((acc, achieved, imp_s, layer_sp))
                    stamp = f"[{time.time() - t_start:6.0f}s] {model_name} seed {seed} {meth:<18} s={sparsity:<6}"
                    print(f"{stamp} acc={acc:.4f} achieved={achieved:.4f} importance={imp_s:.3f}s", flush=True)
                    entry["dense_acc"] = float(np.mean(dense_accs))
                    entry["epoch_seconds"] = float(np.mean(epoch_secs))
                    entry["results"] = [
                        {
                            "method": m_,
                            "sparsity": s_,
                            "acc_mean": float(np.mean([v[0] for v in vals])),
                            "acc_std": float(np.std([v[0] for v in vals])),
                            "n_seeds": len(vals),
                            "achieved_sparsity": float(np.mean([v[1] for v in vals])),
                            "importance_seconds": float(np.mean([v[2] for v in vals])),
                            "layer_sparsity": vals[-1][3],
                            "mode": method_mode(m_),
                            "epoch_seconds": float(np.mean(epoch_secs)),
                        }
                        for (m_, s_), vals in raw.items()
                    ] + kept
                    write_outputs(results, args.out)
    results["seconds"] = time.time() - t_start
    for entry in results["models"].values():
        entry["default_method"] = pick_default(entry)
    write_outputs(results, args.out)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
