"""The Keras 3 path against the tf-keras path: the same plan and budget, accuracy side by side, and the step time pruning adds to fit.

    python benchmarks/keras3.py                       # LeNet-5 / MNIST and ResNet-20 / CIFAR-10, 2 seeds
    python benchmarks/keras3.py --models lenet5 --out /tmp/k.json

For each model: one dense tf-keras model (LeNet-5: trained here, ``--dense-epochs``;
ResNet-20: the committed checkpoint ``benchmarks/checkpoints/resnet20.keras``)
and its Keras 3 twin (`tfprune.models` with ``keras3=True``, the same weights
copied with ``set_weights``); one plan (`tfprune.plan(dense, --sparsity)`, the
default importance and allocation) given to both. Per path and seed: wrap,
compile (the same optimizer and loss), ``fit`` with `tfprune.Pruning(plan)`
for ``--ramp-epochs`` (the ramp) + ``--finetune-epochs``, test accuracy.

Step time (TensorFlow backend, one process, the two paths alternated): the
median wall time between consecutive training batches over ``--timing-steps``
steps after a warm-up, for the dense model's plain ``fit`` and for the wrapped
model's ``fit`` with the callback (mid-ramp, masks updating every
``--timing-frequency`` steps); the ratio callback / plain per path.

Writes ``benchmarks/results/keras3.{json,md}`` (JSON after every run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import keras as keras3  # noqa: E402
import numpy as np  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras as tf_keras  # noqa: E402
from tfprune.files import atomic_write  # noqa: E402

PATHS = ("tf_keras", "keras3")


class BatchClock(tf_keras.callbacks.Callback):
    """Wall time between consecutive ``on_train_batch_begin`` calls (works in tf-keras and Keras 3 fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._last = None

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def api(path: str):
    return tf_keras if path == "tf_keras" else keras3


def compile_model(model, path: str, lr: float, total_steps: int):
    k = api(path)
    schedule = k.optimizers.schedules.CosineDecay(lr, max(1, total_steps), alpha=0.0)
    model.compile(optimizer=k.optimizers.SGD(schedule, momentum=0.9, nesterov=True) if lr > 0.005 else k.optimizers.Adam(schedule),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def setup(name: str, args):
    """(dense tf-keras model, its Keras 3 twin, train data, test data, steps per epoch, learning rate)."""
    if name == "lenet5":
        (xt, yt), (xs, ys) = tp.datasets.mnist(args.mnist)
        tf_keras.utils.set_random_seed(0)
        dense = tp.models.compile_classifier(tp.models.lenet5())
        dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=args.batch_size, verbose=0)
        twin = tp.models.lenet5(keras3=True)
        train, steps, lr = (xt, yt), -(-len(xt) // args.batch_size), 1e-3
    else:
        (xt, yt), (xs, ys) = tp.datasets.cifar10(args.cifar10)
        dense = tp.load_model(os.path.join(HERE, "checkpoints", "resnet20.keras"))
        twin = tp.models.resnet_cifar(20, keras3=True)
        steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
        train, lr = (xt, yt), 0.01
    twin.set_weights(dense.get_weights())
    return dense, twin, train, (xs, ys), steps, lr


def fit_data(name: str, train, args, seed: int, epochs: int | None = None):
    x, y = train
    if name == "lenet5":
        return {"x": x, "y": y, "batch_size": args.batch_size, "shuffle": True}
    return {"x": tp.datasets.cifar10_pipeline(x, y, args.batch_size, seed=seed), "steps_per_epoch": tp.datasets.cifar10_steps(len(x), args.batch_size)}


def accuracy(model, test) -> float:
    xs, ys = test
    logits = np.asarray(model.predict(xs, batch_size=500, verbose=0))
    return float(np.mean(np.argmax(logits, -1) == np.asarray(ys).reshape(-1)))


def run_accuracy(name, path, base, plan, train, test, steps, lr, seed, args) -> float:
    api(path).utils.set_random_seed(1000 + seed)
    model = compile_model(tp.wrap(base), path, lr, (args.ramp_epochs + args.finetune_epochs) * steps)
    cb = tp.Pruning(plan, begin_step=0, end_step=args.ramp_epochs * steps)
    model.fit(epochs=args.ramp_epochs + args.finetune_epochs, callbacks=[cb], verbose=0, **fit_data(name, train, args, seed))
    return accuracy(model, test)


def step_times(name, bases, plan, train, steps, lr, args) -> dict:
    """Median seconds per training step: plain fit and fit with the callback, for each path, alternated twice."""
    x, y = train
    n = args.timing_steps * args.batch_size
    data = {"x": x[:n], "y": y[:n], "batch_size": args.batch_size, "shuffle": False}
    out: dict = {p: {"plain": [], "pruning": []} for p in bases}
    for _ in range(2):
        for path, base in bases.items():
            for kind in ("plain", "pruning"):
                model = compile_model(tp.wrap(base) if kind == "pruning" else api(path).models.clone_model(base), path, lr, 10 * steps)
                if kind == "plain":
                    model.set_weights(base.get_weights())
                cbs = [tp.Pruning(plan, begin_step=0, end_step=10 * args.timing_steps, frequency=args.timing_frequency)] if kind == "pruning" else []
                model.fit(epochs=1, verbose=0, callbacks=cbs, **{**data, "x": x[:4 * args.batch_size], "y": y[:4 * args.batch_size]})  # warm-up
                clock = BatchClock()
                model.fit(epochs=1, verbose=0, callbacks=[*cbs, clock], **data)
                out[path][kind].append(float(np.median(clock.times)))
    return {p: {"plain_ms": 1000 * min(v["plain"]), "pruning_ms": 1000 * min(v["pruning"]),
                "ratio": min(v["pruning"]) / min(v["plain"])} for p, v in out.items()}


def write(results: dict, out: str) -> None:
    with atomic_write(out, "w") as f:
        json.dump(results, f, indent=2)
    lines = []
    for name, m in results["models"].items():
        lines += [f"### {name}: dense {100 * m['dense_acc']:.2f}%, plan total {m['plan_sparsity']:.4f} ({m['plan_allocation']}), "
                  f"{m['n_train']:,} train / {m['n_test']:,} test images", "",
                  "| path | accuracy % (seeds) | mean | step ms, plain fit | step ms, fit + Pruning | ratio |", "|---|---|---:|---:|---:|---:|"]
        for path in PATHS:
            accs = m["acc"].get(path, [])
            t = m.get("step_time", {}).get(path, {})
            lines.append(f"| {path} | {' / '.join(f'{100 * a:.2f}' for a in accs)} | {100 * np.mean(accs) if accs else float('nan'):.2f} | "
                         f"{t.get('plain_ms', float('nan')):.2f} | {t.get('pruning_ms', float('nan')):.2f} | {t.get('ratio', float('nan')):.3f} |")
        lines.append("")
        if m.get("command"):
            lines += [f"Budget: {m.get('budget', '')}. CPU time: {m.get('cpu_minutes') or 0:.1f} min. Command: `{m['command']}`", ""]
    c = results["config"]
    lines += [f"Budget: {c['budget']}. Step time: TensorFlow backend, median seconds between batches over {c['timing_steps']} steps "
              f"(the better of two alternated rounds), masks updated every {c['timing_frequency']} steps. CPU time: {c.get('cpu_minutes', 0):.1f} min.",
              "", f"Command: `{c['command']}`"]
    with atomic_write(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5,resnet20")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--dense-epochs", type=int, default=3)
    ap.add_argument("--ramp-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--timing-steps", type=int, default=60)
    ap.add_argument("--timing-frequency", type=int, default=10)
    ap.add_argument("--mnist", default=os.environ.get("TFPRUNE_MNIST") or os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--cifar10", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "keras3.json"))
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    command = "python benchmarks/keras3.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"models": {}, "config": {"command": command, "timing_steps": args.timing_steps, "timing_frequency": args.timing_frequency,
                                        "budget": f"plan {args.sparsity} from the dense tf-keras weights, given to both paths; "
                                                  f"{args.ramp_epochs} ramp + {args.finetune_epochs} fine-tuning epoch(s), batch {args.batch_size}; "
                                                  f"seeds {args.seeds}"}}
    if os.path.exists(args.out):  # models of an earlier run that this one does not redo are kept, each with its own command
        with open(args.out) as f:
            earlier = json.load(f)
        for name, entry in earlier.get("models", {}).items():
            if name not in args.models.split(","):
                entry.setdefault("command", earlier.get("config", {}).get("command"))
                entry.setdefault("cpu_minutes", earlier.get("config", {}).get("cpu_minutes"))
                entry.setdefault("budget", earlier.get("config", {}).get("budget"))
                results["models"][name] = entry
    for name in args.models.split(","):
        c_model = time.process_time()
        dense, twin, train, test, steps, lr = setup(name, args)
        plan = tp.plan(dense, args.sparsity)
        entry = {"dense_acc": accuracy(dense, test), "dense_acc_keras3": accuracy(twin, test), "plan_sparsity": plan.achieved,
                 "n_train": len(train[0]), "n_test": len(test[0]),
                 "plan_allocation": plan.allocator, "acc": {p: [] for p in PATHS}, "command": command, "budget": results["config"]["budget"]}
        results["models"][name] = entry
        for seed in range(args.seeds):
            for path, base in (("tf_keras", dense), ("keras3", twin)):
                entry["acc"][path].append(run_accuracy(name, path, base, plan, train, test, steps, lr, seed, args))
                results["config"]["cpu_minutes"] = (time.process_time() - c0) / 60
                entry["cpu_minutes"] = (time.process_time() - c_model) / 60
                write(results, args.out)
                print(f"[keras3] {name} {path} seed {seed}: {100 * entry['acc'][path][-1]:.2f}% ({time.time() - t0:.0f} s)", flush=True)
        entry["step_time"] = step_times(name, {"tf_keras": dense, "keras3": twin}, plan, train, steps, lr, args)
        results["config"]["cpu_minutes"] = (time.process_time() - c0) / 60
        entry["cpu_minutes"] = (time.process_time() - c_model) / 60
        write(results, args.out)
        print(f"[keras3] {name} step times: {entry['step_time']}", flush=True)
    print(open(os.path.splitext(args.out)[0] + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
