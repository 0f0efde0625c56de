"""Structured (channel) pruning benchmark: TFLite latency of shrunk models, and accuracy by allocation.

    python benchmarks/structured.py                              # full (long): 3 latency models, 3 MNIST models, 3 allocations, 2 seeds
    python benchmarks/structured.py --quick --out /tmp/s.json    # MobileNetV2 latency at 0.5, ResNet-20 at 0.5, 1 seed (< 8 min)

Latency: tf_keras.applications models (weights=None: random weights; latency
does not depend on the values), 224x224, batch 1. For each fraction of MACs
removed and each latency allocation, `tfprune.structured.plan_and_shrink`
removes channels (MACs read from `tfprune.profile` of the shrunk model); the
dense and shrunk models are converted to float .tflite and run with the
ai-edge-litert interpreter (`tfprune.export.make_interpreter`, XNNPack) at 1
and 2 threads. All variants of a model are timed **in one run, interleaved**:
rounds of ``--block`` invocations of each variant in turn, so a load change on
the machine hits them alike; the median of all invocations is reported.

Accuracy: ResNet-20 / ResNet-56 / the VGG-style CNN (`tfprune.models`) at
28x28 on MNIST (--data, default ../shared/data/mnist/mnist.npz): trained
dense (Adam 1e-3, cosine decay, batch 128) per seed, then
`tfprune.structured.prune_channels` at each fraction of MACs removed with
each allocation (importance, uniform, global_ratio: the channel "global" of the committed results), the same fine-tuning budget
(``--finetune-epochs``, Adam 1e-3 cosine decay) from the same dense model;
test accuracy on the 10,000 test images; mean and std over seeds.

Writes JSON (schema of issue 11), markdown beside it and a plot (.png).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# Fine-tuning some shrunk ResNet-20s (odd channel counts such as 5) crashed inside fit() with oneDNN's custom ops on
# ("double free or corruption", then a segfault; not reproducible on every plan); without them it ran. Off unless set.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
faulthandler.enable()

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.export import make_interpreter  # noqa: E402
from tfprune.inventory.profiling import profile  # noqa: E402
from tfprune.structured.plan import plan_and_shrink  # noqa: E402
from tfprune.structured.prune import prune_channels, top1_accuracy  # noqa: E402
from tfprune.training.finetune import reestimate_batchnorm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 128
LATENCY_MODELS = {
    "mobilenetv2": lambda: keras.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3), weights=None),
    "resnet50": lambda: keras.applications.ResNet50(input_shape=(224, 224, 3), weights=None),
    "efficientnetb0": lambda: keras.applications.EfficientNetB0(input_shape=(224, 224, 3), weights=None),
}
ACC_MODELS = {
    "resnet20": lambda: tp.models.resnet_cifar(20, (28, 28, 1)),
    "resnet56": lambda: tp.models.resnet_cifar(56, (28, 28, 1)),
    "vgg_small": lambda: tp.models.vgg_small((28, 28, 1)),
}

# accuracy methods other than a bare allocation name: the prune_channels arguments they stand for
METHODS = {"importance_activation": {"allocation": "importance", "layer_importance": "capacity_activation"}}


# ------------------------------------------------------------------ latency
def to_tflite(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def interleaved_latency(contents: dict[str, bytes], threads: int, rounds: int, block: int, warmup: int = 5) -> dict[str, float]:
    """Median ms per invocation of each .tflite, timed in interleaved blocks (same machine state for all)."""
    interps = {}
    rng = np.random.default_rng(0)
    for name, content in contents.items():
        interp, runtime = make_interpreter(content, num_threads=threads)
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], rng.random(inp["shape"]).astype(np.float32))
        for _ in range(warmup):
            interp.invoke()
        interps[name] = (interp, runtime)
    times: dict[str, list[float]] = {n: [] for n in contents}
    for _ in range(rounds):
        for name, (interp, _) in interps.items():
            for _ in range(block):
                t = time.perf_counter()
                interp.invoke()
                times[name].append(time.perf_counter() - t)
    return {n: float(np.median(v) * 1000) for n, v in times.items()}


def latency_section(names: list[str], fractions: list[float], allocations: list[str], rounds: int, block: int, min_channels: int) -> dict:
    out = {}
    for name in names:
        t0 = time.perf_counter()
        keras.utils.set_random_seed(0)
        dense = LATENCY_MODELS[name]()
        prof = profile(dense)
        contents = {"dense": to_tflite(dense)}
        entries = []
        for frac in fractions:
            for alloc in allocations:
                plan, small, rep = plan_and_shrink(dense, macs=frac, allocation=alloc, min_channels=min_channels)
                key = f"{alloc}@{frac}"
                contents[key] = to_tflite(small)
                entries.append({"macs_removed": frac, "allocation": alloc, "achieved_macs_removed": plan.achieved, "macs": plan.macs_after,
                                "params": plan.params_after, "max_abs_diff": rep.max_abs_diff, "_key": key})
                print(f"{name} {key}: achieved {plan.achieved:.4f}, MACs {plan.macs_after:,}, params {plan.params_after:,}", flush=True)
        by_threads = {t: interleaved_latency(contents, t, rounds, block) for t in (1, 2)}
        for e in entries:
            key = e.pop("_key")
            e["latency_ms"] = by_threads[1][key]
            e["latency_ms_2threads"] = by_threads[2][key]
            e["ratio_vs_dense"] = by_threads[1][key] / by_threads[1]["dense"]
            e["ratio_vs_dense_2threads"] = by_threads[2][key] / by_threads[2]["dense"]
        out[name] = {"dense_ms": by_threads[1]["dense"], "dense_ms_2threads": by_threads[2]["dense"], "dense_macs": prof.macs,
                     "dense_params": prof.params, "invocations_per_variant": rounds * block, "results": entries,
                     "seconds": time.perf_counter() - t0}
        print(f"{name}: dense {by_threads[1]['dense']:.2f} ms (1 thread), {by_threads[2]['dense']:.2f} ms (2 threads)", flush=True)
    return out


# ------------------------------------------------------------------ accuracy
def train_dense(name: str, data, epochs: int, seed: int, cache_dir: str | None, train_images: int | None):
    """The dense model of ``seed``, trained (then its BN statistics re-estimated on the training images), or read back
    from ``cache_dir`` when this (model, seed, epochs, images) was trained before (resuming a stopped run)."""
    (xt, yt), _ = data
    path = os.path.join(cache_dir, f"{name}_seed{seed}_e{epochs}_n{train_images or 'all'}.keras") if cache_dir else None
    if path and os.path.exists(path):
        model = keras.models.load_model(path, compile=False)
        tp.models.compile_classifier(model, 1e-3)
        return model, True
    keras.utils.set_random_seed(seed)
    model = ACC_MODELS[name]()
    tp.models.compile_classifier(model, 1e-3, decay_steps=epochs * -(-len(xt) // BATCH))
    model.fit(xt, yt, epochs=epochs, batch_size=BATCH, verbose=0)
    reestimate_batchnorm(model, xt, n_samples=2048)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        model.save(path)
    return model, False


def summarise_accuracy(name: str, entry: dict) -> None:
    """Recompute ``entry``'s summary (dense_acc, results: mean/std over seeds) from its raw per-seed ``runs``."""
    dense = [r["acc"] for r in entry["dense_runs"]]
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in entry["runs"]:
        groups.setdefault((r["method"], r["macs_removed"]), []).append(r)
    results = []
    for (method, frac), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a = np.array([r["acc"] for r in rs])
        results.append({"method": method, "macs_removed": frac, "acc_mean": float(a.mean()), "acc_std": float(a.std()), "n_seeds": len(rs),
                        "acc_one_shot_mean": float(np.mean([r["acc_one_shot"] for r in rs])),
                        "achieved_macs_removed": float(np.mean([r["achieved"] for r in rs])), "macs": rs[0]["macs"], "params": rs[0]["params"],
                        "seeds": sorted(r["seed"] for r in rs)})
    entry.update({"dense_acc": float(np.mean(dense)) if dense else float("nan"), "dense_acc_std": float(np.std(dense)) if dense else float("nan"),
                  "dense_n_seeds": len(dense), "results": results})


def accuracy_section(names: list[str], fractions: list[float], methods: list[str], seeds: int, data, train_epochs: int,
                     finetune_epochs: int, min_channels: int, out: dict, save, cache_dir: str | None = None,
                     train_images: int | None = None) -> dict:
    """Fill ``out[name]`` configuration by configuration, calling ``save()`` after each one (a stopped run keeps its rows;
    ``--resume`` skips the rows already there)."""
    (xt, yt), (xs, ys) = data
    for name in names:
        prof = profile(ACC_MODELS[name]())
        entry = out.setdefault(name, {"dense_runs": [], "runs": []})
        entry.update({"dense_macs": prof.macs, "dense_params": prof.params})
        t0 = time.perf_counter()
        for seed in range(seeds):
            todo = [(f, m) for f in fractions for m in methods
                    if not any(r["seed"] == seed and r["method"] == m and r["macs_removed"] == f for r in entry["runs"])]
            if not todo and any(r["seed"] == seed for r in entry["dense_runs"]):
                continue
            dense, cached = train_dense(name, data, train_epochs, seed, cache_dir, train_images)
            if not any(r["seed"] == seed for r in entry["dense_runs"]):
                entry["dense_runs"].append({"seed": seed, "acc": top1_accuracy(ys, dense.predict(xs, batch_size=512, verbose=0))})
                summarise_accuracy(name, entry)
                save()
            acc = next(r["acc"] for r in entry["dense_runs"] if r["seed"] == seed)
            print(f"{name} seed {seed}: dense {acc:.4f} ({'cached' if cached else 'trained'}, {time.perf_counter() - t0:.0f}s)", flush=True)
            for frac, method in todo:
                t1 = time.perf_counter()
                _, rep = prune_channels(dense, macs=frac, data=(xt, yt), eval_data=(xs, ys), finetune_epochs=finetune_epochs,
                                        batch_size=BATCH, min_channels=min_channels, seed=seed, **METHODS.get(method, {"allocation": method}))
                entry["runs"].append({"seed": seed, "method": method, "macs_removed": frac,
                                      "acc": rep.acc_after if finetune_epochs else rep.acc_shrunk, "acc_one_shot": rep.acc_shrunk,
                                      "achieved": rep.plan.achieved, "macs": rep.plan.macs_after, "params": rep.plan.params_after,
                                      "bn_recalibrated": rep.bn_recalibrated, "seconds": time.perf_counter() - t1})
                summarise_accuracy(name, entry)
                save()
                print(f"  {method}@{frac}: achieved {rep.plan.achieved:.4f}, one-shot {rep.acc_shrunk:.4f}, "
                      f"fine-tuned {rep.acc_after if rep.acc_after is not None else float('nan'):.4f} ({time.perf_counter() - t0:.0f}s)",
                      flush=True)
        entry["seconds"] = entry.get("seconds", 0.0) + time.perf_counter() - t0
        summarise_accuracy(name, entry)
        save()
    return out


# ------------------------------------------------------------------ output
def markdown(res: dict) -> list[str]:
    cfg = res["config"]
    lines = ["# Structured channel pruning (tfprune.structured)", "",
             f"Command: `{cfg['command']}`; {cfg['machine']}. {cfg['note']}", ""]
    if res["latency"]:
        lines += ["## TFLite float latency (ai-edge-litert, XNNPack, batch 1, median; dense and pruned interleaved in one run)", "",
                  "| model | allocation | MACs removed (requested / achieved) | MACs | params | 1 thread ms | ratio | 2 threads ms | ratio |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in res["latency"].items():
            lines.append(f"| {name} | dense | 0 | {r['dense_macs']:,} | {r['dense_params']:,} | {r['dense_ms']:.2f} | 1.00 | "
                         f"{r['dense_ms_2threads']:.2f} | 1.00 |")
            for e in r["results"]:
                lines.append(f"| {name} | {e['allocation']} | {e['macs_removed']:.2f} / {e['achieved_macs_removed']:.3f} | {e['macs']:,} | "
                             f"{e['params']:,} | {e['latency_ms']:.2f} | {e['ratio_vs_dense']:.2f} | {e['latency_ms_2threads']:.2f} | "
                             f"{e['ratio_vs_dense_2threads']:.2f} |")
        lines.append("")
    if res["accuracy"]:
        lines += [f"## MNIST test accuracy (10,000 images) after {cfg['finetune_epochs']} fine-tuning epoch(s); dense trained "
                  f"{cfg['train_epochs']} epochs; training images: {cfg.get('train_images') or 'all'}", "",
                  "| model | method | MACs removed (requested / achieved) | params | one-shot acc | fine-tuned acc (mean ± std) | seeds |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for name, r in res["accuracy"].items():
            lines.append(f"| {name} | dense | 0 | {r['dense_params']:,} | | {r['dense_acc']:.4f} ± {r['dense_acc_std']:.4f} | |")
            for e in sorted(r["results"], key=lambda e: (e["macs_removed"], e["method"])):
                lines.append(f"| {name} | {e['method']} | {e['macs_removed']:.2f} / {e['achieved_macs_removed']:.3f} | {e['params']:,} | "
                             f"{e['acc_one_shot_mean']:.4f} | {e['acc_mean']:.4f} ± {e['acc_std']:.4f} | {e['n_seeds']} |")
        lines.append("")
    return lines


def plot(res: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    labels, vals1, vals2 = [], [], []
    for name, r in res["latency"].items():
        for e in r["results"]:
            labels.append(f"{name} {e['allocation']}@{e['macs_removed']}")
            vals1.append(e["ratio_vs_dense"])
            vals2.append(e["ratio_vs_dense_2threads"])
    x = np.arange(len(labels))
    ax.bar(x - 0.2, vals1, 0.4, label="1 thread")
    ax.bar(x + 0.2, vals2, 0.4, label="2 threads")
    ax.axhline(0.6, color="k", ls="--", lw=0.8, label="target 0.6x")
    ax.set_xticks(x, labels, fontsize=6, rotation=60, ha="right")
    ax.set_ylabel("TFLite latency / dense")
    ax.set_title("latency of shrunk models")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, r in res["accuracy"].items():
        methods = sorted({e["method"] for e in r["results"]})
        for m in methods:
            es = sorted((e for e in r["results"] if e["method"] == m), key=lambda e: e["macs_removed"])
            ax.errorbar([e["macs_removed"] for e in es], [e["acc_mean"] for e in es], [e["acc_std"] for e in es], marker="o", label=f"{name} {m}")
        ax.axhline(r["dense_acc"], ls=":", lw=0.8, color="gray")
    ax.set_xlabel("fraction of MACs removed")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("accuracy after fine-tuning (dotted: dense)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_in_child(argv: list[str], out: str) -> dict:
    """The latency section in a fresh process (the litert interpreters and later TensorFlow training in one process crashed
    with 'double free or corruption' here), read back from a JSON file."""
    import subprocess

    tmp = os.path.splitext(os.path.abspath(out))[0] + ".latency.tmp.json"
    subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--skip-accuracy", "--latency-only", tmp], check=True)
    with open(tmp) as f:
        lat = json.load(f)
    os.remove(tmp)
    return lat


def merge(paths: list[str], out: str) -> dict:
    """One result file from several (e.g. one per model, run side by side): accuracy and latency sections joined by
    model (a model in two files is refused), the commands and settings of each file kept."""
    res: dict = {"accuracy": {}, "latency": {}, "parts": []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        for section in ("accuracy", "latency"):
            for name, entry in part.get(section, {}).items():
                if name in res[section]:
                    raise SystemExit(f"--merge: {section} of {name!r} is in two files (the second: {path}); merge files with different models")
                res[section][name] = entry
        res["parts"].append({"file": os.path.relpath(path, os.path.dirname(os.path.abspath(out))), "config": part["config"],
                             "seconds": part.get("seconds")})
    first = res["parts"][0]["config"]
    res["config"] = dict(first, command=" ; ".join(p["config"]["command"] for p in res["parts"]),
                         note=first["note"] + " Merged from " + ", ".join(p["file"] for p in res["parts"]) + " (see 'parts').")
    res["seconds"] = sum(p["seconds"] or 0.0 for p in res["parts"])
    for key in ("train_epochs", "finetune_epochs", "train_images", "min_channels"):
        if len({json.dumps(p["config"].get(key)) for p in res["parts"] if p["config"].get("command") and "--skip-latency" in p["config"]["command"]}) > 1:
            res["config"]["note"] += f" Parts differ in {key}: see 'parts'."
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="MobileNetV2 latency at 0.5, ResNet-20 accuracy at 0.5 (importance, uniform), 1 seed")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default: 1 quick, 2 full)")
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "structured.json"))
    ap.add_argument("--train-epochs", type=int, default=None, help="dense training epochs (default: 1 quick, 6 full)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="fine-tuning epochs after pruning (default: 1 quick, 3 full)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images for dense training and fine-tuning (default: 8000 quick, all full); the test set is always all")
    ap.add_argument("--models", default=None, help="accuracy models, comma-separated (default: resnet20 quick; resnet20,resnet56,vgg_small full)")
    ap.add_argument("--fractions", default=None, help="accuracy: fractions of MACs removed (default: 0.5 quick; 0.3,0.5,0.7 full)")
    ap.add_argument("--methods", default=None, help="accuracy: allocations (default: importance,uniform quick; + global_ratio full); "
                    "importance_activation = importance with layer_importance='capacity_activation'")
    ap.add_argument("--latency-models", default=None, help="latency models (default: mobilenetv2 quick; all three full)")
    ap.add_argument("--latency-allocations", default=None, help="latency: allocations (default: uniform,importance quick; + global_ratio full)")
    ap.add_argument("--rounds", type=int, default=None, help="latency: interleaved rounds (default 10 quick, 20 full)")
    ap.add_argument("--block", type=int, default=10, help="latency: invocations per variant per round")
    ap.add_argument("--min-channels", type=int, default=4, help="channels every group keeps")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --out (written after every configuration) and run only the missing ones")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "tfprune_structured_dense"),
                    help="trained dense models are saved here and reused by --resume ('' to turn off)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="only join these result files (e.g. one per model, run side by side) into --out, with markdown and plot")
    ap.add_argument("--latency-only", default=None, help=argparse.SUPPRESS)  # internal: the latency section, in a child process
    args = ap.parse_args(argv)
    if args.merge:
        res = merge(args.merge, args.out)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        write_markdown(args.out, markdown(res))
        png = plot(res, os.path.splitext(args.out)[0] + ".png")
        print(f"wrote {args.out}" + (f", {png}" if png else ""))
        return 0
    q = args.quick
    seeds = args.seeds or (1 if q else 2)
    train_epochs = args.train_epochs or (1 if q else 6)
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else (1 if q else 3)
    rounds = args.rounds or (10 if q else 20)
    t0 = time.perf_counter()
    lat_models = [] if args.skip_latency else (args.latency_models.split(",") if args.latency_models else (["mobilenetv2"] if q else list(LATENCY_MODELS)))
    lat_fracs = [0.5] if q else [0.3, 0.5]
    lat_default = ["uniform", "importance"] if q else ["uniform", "importance", "global_ratio"]
    lat_allocs = args.latency_allocations.split(",") if args.latency_allocations else lat_default
    acc_models = [] if args.skip_accuracy else (args.models.split(",") if args.models else (["resnet20"] if q else list(ACC_MODELS)))
    acc_fracs = [float(f) for f in args.fractions.split(",")] if args.fractions else ([0.5] if q else [0.3, 0.5, 0.7])
    methods = args.methods.split(",") if args.methods else (["importance", "uniform"] if q else ["importance", "uniform", "global_ratio"])
    train_images = args.train_images or (8000 if q else None)
    res = {"config": {"command": "python benchmarks/structured.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                      "quick": q, "seeds": seeds, "train_epochs": train_epochs, "finetune_epochs": ft_epochs, "train_images": train_images,
                      "latency_rounds": rounds,
                      "latency_block": args.block, "min_channels": args.min_channels,
                      "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible",
                      "note": "The 2 CPU cores are shared with other sessions working at the same time: absolute times vary; "
                              "dense and pruned variants are timed interleaved in one run, so their ratio is the comparable number. "
                              "Latency models have random weights (weights=None)."}}
    if args.latency_only:
        with open(args.latency_only, "w") as f:
            json.dump(latency_section(lat_models, lat_fracs, lat_allocs, rounds, args.block, args.min_channels), f)
        return 0
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    res["accuracy"], res["latency"] = {}, {}
    if args.resume and os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        keys = ("train_epochs", "finetune_epochs", "train_images", "min_channels")
        diff = {k: (old["config"].get(k), res["config"][k]) for k in keys if old["config"].get(k) != res["config"][k]}
        if diff:
            raise SystemExit(f"--resume: {out} was written with other settings {diff} (old, new): use another --out or the same settings")
        res["accuracy"], res["latency"] = old.get("accuracy", {}), old.get("latency", {})
        res["config"]["command"] = old["config"]["command"] + " ; then " + res["config"]["command"]
        print(f"resuming {out}: " + ", ".join(f"{n}: {len(e.get('runs', []))} rows" for n, e in res["accuracy"].items()), flush=True)

    def save() -> None:
        res["seconds"] = res.get("seconds_before", 0.0) + time.perf_counter() - t0
        with open(out, "w") as f:
            json.dump(res, f, indent=2)
        write_markdown(out, markdown(res))

    res["seconds_before"] = (old.get("seconds", 0.0) if args.resume and os.path.exists(out) else 0.0)
    data = tp.datasets.mnist(args.data) if acc_models else None
    if data is not None and train_images:
        (xt, yt), test = data
        data = (xt[:train_images], yt[:train_images]), test
    if acc_models:
        accuracy_section(acc_models, acc_fracs, methods, seeds, data, train_epochs, ft_epochs, args.min_channels, res["accuracy"], save,
                         args.cache_dir, train_images)
    if lat_models:
        res["latency"] = latency_in_child(argv if argv is not None else sys.argv[1:], args.out)
    save()
    png = plot(res, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out}" + (f", {png}" if png else "") + f" in {res['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
