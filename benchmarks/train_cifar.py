"""Dense CIFAR-10 baselines (ResNet-20, ResNet-56, a CIFAR VGG, a CIFAR MobileNetV2), resumable, for the CIFAR benchmarks to start from.

    python benchmarks/train_cifar.py --model resnet20 --epochs 60 --max-minutes 115
    python benchmarks/train_cifar.py --model resnet20 --epochs 60 --max-minutes 115 --resume   # again until done
    python benchmarks/train_cifar.py --model resnet56 --epochs 30 --max-minutes 115 --resume   # (first run too; 4.4 min/epoch alone)
    python benchmarks/train_cifar.py --model vgg16 --width 0.25 --epochs 60 --max-minutes 115 --resume
    python benchmarks/train_cifar.py --model mobilenetv2 --width 0.5 --epochs 15 --max-minutes 110 --resume

Recipe (the same for every model; each value is an option): SGD, momentum 0.9,
Nesterov; batch 128; learning rate 0.1, 1 epoch of linear warm-up from 0
then cosine decay to 0 at the last epoch (per step); weight decay 5e-4 as L2
on every conv and dense kernel (PyTorch's convention: gradient ``wd * w``;
BN parameters and biases undecayed); no label smoothing; augmentation = zero
padding by 4, random 32x32 crop, horizontal flip (`tfprune.datasets.cifar10_pipeline`,
stateless and seeded by ``(seed, epoch)``); the models normalise inside
(a ``Normalization`` first layer with the CIFAR-10 mean and std), so every
input is raw pixels 0-255. Model initialisation: ``keras.utils.set_random_seed(seed)``.

Resuming: after every epoch the model and optimizer (momentum, step
counter: the learning-rate schedule continues exactly) are saved to
``<checkpoint-dir>/<model>.resume.keras`` and the results JSON is written;
``--resume`` continues from there with the same data order and
augmentation an uninterrupted run would have seen (up to the float
non-determinism of multi-threaded CPU kernels). ``--max-minutes`` stops at
the first epoch boundary after which one more epoch (as long as the last
one) would pass the limit; run the same command with ``--resume`` later.
Without ``--resume`` an existing unfinished run is an error (nothing is
overwritten). When the last epoch is done, ``<checkpoint-dir>/<model>.keras``
is written (the weights of a model built without regularizers, no optimizer;
it takes raw pixels) and the resume file is removed.

Writes (atomically, after every epoch) ``benchmarks/results/cifar_baselines.json``:
``{"models": {"resnet20": {"epochs": E, "epochs_done": k, "test_acc": [...],
"train_acc": [...], "train_loss": [...], "lr": [...], "epoch_seconds": [...],
"epoch_cpu_seconds": [...], "wall_seconds": ..., "cpu_seconds": ...,
"params": ..., "macs": ..., "recipe": {...}, "commands": [...], "segments": [...],
"checkpoint": ..., "checkpoint_bytes": ...}}, "config": {"command": ..., "cpu_minutes": ...}}``
(accuracies as fractions; CPU seconds from ``time.process_time``, every
thread of the process), and the markdown table and accuracy plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.files import atomic_write, save_figure, save_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "cifar_baselines.json")
DEFAULT_CHECKPOINTS = os.path.join(HERE, "checkpoints")
MODELS = ("resnet20", "resnet56", "vgg11", "vgg16", "mobilenetv2")
DEFAULT_WIDTH = 0.25  # the VGGs' width multiplier (tfprune.models.vgg_cifar's default)


def has_width(model: str) -> bool:
    return model.startswith("vgg") or model == "mobilenetv2"


def model_tag(args) -> str:
    return f"{args.model}_w{args.width:g}" if has_width(args.model) else args.model


def build(args, weight_decay: float) -> keras.Model:
    if args.model.startswith("resnet"):
        return tp.models.resnet_cifar(int(args.model[6:]), weight_decay=weight_decay)
    if args.model == "mobilenetv2":
        return tp.models.mobilenet_v2_cifar(args.width, weight_decay=weight_decay)
    return tp.models.vgg_cifar(int(args.model[3:]), args.width, weight_decay=weight_decay)


def recipe(args, n_train: int, n_test: int) -> dict:
    return {
        "model": args.model, "width": args.width if has_width(args.model) else None, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": "SGD momentum 0.9 nesterov", "lr": args.lr, "warmup_epochs": args.warmup_epochs,
        "schedule": "linear warm-up, then cosine to 0 (per step)", "weight_decay": args.weight_decay,
        "weight_decay_form": "L2 on conv/dense kernels, gradient wd*w", "label_smoothing": 0.0,
        "augmentation": "zero-pad 4, random crop 32, horizontal flip", "normalization": "in the model (CIFAR-10 mean/std)",
        "seed": args.seed, "n_train": n_train, "n_test": n_test,
    }


def compile_model(model: keras.Model, args, steps: int) -> None:
    warm = int(round(args.warmup_epochs * steps))
    total = args.epochs * steps
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warm else args.lr, max(1, total - warm), alpha=0.0, warmup_target=args.lr if warm else None, warmup_steps=warm)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def repo_path(path: str) -> str:
    """``path`` relative to the checkout when inside it (what the JSON stores), else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def load_results(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"models": {}, "config": {}}


def write_results(results: dict, path: str) -> None:
    results["config"]["cpu_minutes"] = round(sum(m.get("cpu_seconds", 0.0) for m in results["models"].values()) / 60, 2)
    with atomic_write(path, "w") as f:
        json.dump(results, f, indent=2)
    base = os.path.splitext(path)[0]
    lines = ["#### Dense CIFAR-10 baselines (test accuracy on the CIFAR-10 test set)", "",
             "| model | params | MACs | epochs | final test % | best test % | wall min | CPU min | min/epoch (train + test) | checkpoint |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for tag, m in results["models"].items():
        acc = m["test_acc"]
        done = m["epochs_done"]
        per = sum(m["epoch_seconds"]) / 60 / done if done else float("nan")
        ck = f"`{m['checkpoint']}` ({m['checkpoint_bytes'] / 1e6:.2f} MB)" if m.get("checkpoint") else "(not finished)"
        accs = f"{100 * acc[-1]:.2f} | {100 * max(acc):.2f}" if acc else " | "
        lines.append(f"| {tag} | {m['params']:,} | {m['macs'] / 1e6:.1f} M | {done}/{m['epochs']} | {accs} | "
                     f"{m['wall_seconds'] / 60:.1f} | {m['cpu_seconds'] / 60:.1f} | {per:.2f} | {ck} |")
    lines += ["", "Recipe and commands (each model's `commands` in the JSON lists every resumed segment):", ""]
    for tag, m in results["models"].items():
        r = m["recipe"]
        lines.append(f"- {tag}: {r['epochs']} epochs, batch {r['batch_size']}, {r['optimizer']}, lr {r['lr']} ({r['schedule']}, "
                     f"{r['warmup_epochs']} warm-up epoch(s)), weight decay {r['weight_decay']} ({r['weight_decay_form']}), "
                     f"no label smoothing, {r['augmentation']}, seed {r['seed']}, {r['n_train']:,} train / {r['n_test']:,} test images; "
                     f"`{m['commands'][-1]}`")
    lines += ["", f"Total CPU time: {results['config']['cpu_minutes']:.1f} min. {results['config'].get('machine', '')}"]
    with atomic_write(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for tag, m in results["models"].items():
        if m["test_acc"]:
            ax.plot(np.arange(1, len(m["test_acc"]) + 1), 100 * np.asarray(m["test_acc"]), marker="o", ms=2, label=tag)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Dense CIFAR-10 baselines")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, base + ".png", dpi=100)
    plt.close(fig)


def account(entry: dict, start: tuple[float, float]) -> None:
    """Update this segment's wall/CPU seconds (from ``start`` = (time, process_time)) and the model's totals over its segments."""
    seg = entry["segments"][-1]
    seg["wall_seconds"] = round(time.time() - start[0], 1)
    seg["cpu_seconds"] = round(time.process_time() - start[1], 1)
    entry["wall_seconds"] = round(sum(s.get("wall_seconds", 0.0) for s in entry["segments"]), 1)
    entry["cpu_seconds"] = round(sum(s.get("cpu_seconds", 0.0) for s in entry["segments"]), 1)


class EpochEnd(keras.callbacks.Callback):
    """After every epoch: record, save the resume state, write the JSON; stop before the time limit."""

    def __init__(self, entry: dict, results: dict, args, resume_path: str, deadline: float | None, start: tuple[float, float]):
        super().__init__()
        self.entry, self.results, self.args, self.resume_path, self.deadline = entry, results, args, resume_path, deadline
        self.start = start

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.c0 = time.time(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        wall, cpu = time.time() - self.t0, time.process_time() - self.c0
        e = self.entry
        e["test_acc"].append(float(logs["val_accuracy"]))
        e["test_loss"].append(float(logs["val_loss"]))
        e["train_acc"].append(float(logs["accuracy"]))
        e["train_loss"].append(float(logs["loss"]))
        e["lr"].append(float(self.model.optimizer.learning_rate))
        e["epoch_seconds"].append(round(wall, 2))
        e["epoch_cpu_seconds"].append(round(cpu, 2))
        e["epochs_done"] = epoch + 1
        e["segments"][-1]["epochs"][1] = epoch + 1
        account(e, self.start)
        save_model(self.model, self.resume_path)  # model + optimizer state: the schedule resumes at the same step
        write_results(self.results, self.args.out)
        print(f"[train_cifar] {model_tag(self.args)} epoch {epoch + 1}/{e['epochs']}: test {100 * e['test_acc'][-1]:.2f}%, "
              f"train loss {e['train_loss'][-1]:.4f}, {wall / 60:.2f} min (CPU {cpu / 60:.2f} min)", flush=True)
        if self.deadline is not None and epoch + 1 < e["epochs"] and time.time() + 1.05 * wall > self.deadline:
            print(f"[train_cifar] --max-minutes {self.args.max_minutes}: stopping after epoch {epoch + 1}; "
                  "continue with the same command and --resume", flush=True)
            self.model.stop_training = True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--width", type=float, default=DEFAULT_WIDTH, help=f"VGG / MobileNetV2 width multiplier (default {DEFAULT_WIDTH}; ignored for ResNets)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate (after warm-up)")
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue an unfinished run of this model (or start one)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop at an epoch boundary before this many minutes")
    ap.add_argument("--data", default=None, help="CIFAR-10 source for tfprune.datasets.cifar10 (default: its search order)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINTS)
    ap.add_argument("--subset", type=int, default=None, help=argparse.SUPPRESS)  # tests: first N train / N // 5 test images
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.weight_decay < 0 or args.width <= 0:
        ap.error("--epochs and --batch-size must be >= 1, --lr and --width > 0, --weight-decay >= 0")
    if args.subset and (os.path.abspath(args.out) == DEFAULT_OUT or os.path.abspath(args.checkpoint_dir) == DEFAULT_CHECKPOINTS):
        ap.error("--subset runs are tests: give --out and --checkpoint-dir outside benchmarks/ (the baselines stay as they are)")
    start, cpu_start = time.time(), time.process_time()
    deadline = None if args.max_minutes is None else start + 60 * args.max_minutes
    command = "python " + " ".join(shlex.quote(a) for a in [repo_path(__file__),
                                                           *(sys.argv[1:] if argv is None else argv)])

    (xt, yt), (xs, ys) = tp.datasets.cifar10(args.data)
    if args.subset:
        xt, yt, xs, ys = xt[:args.subset], yt[:args.subset], xs[:max(1, args.subset // 5)], ys[:max(1, args.subset // 5)]
    steps = tp.datasets.cifar10_steps(len(xt), args.batch_size)
    tag = model_tag(args)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    resume_path = os.path.join(args.checkpoint_dir, f"{tag}.resume.keras")
    final_path = os.path.join(args.checkpoint_dir, f"{tag}.keras")
    results = load_results(args.out)
    results["config"]["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (timings indicative)"
    rec = recipe(args, len(xt), len(xs))
    old = results["models"].get(tag)

    if os.path.exists(resume_path) and not args.resume:
        ap.error(f"{resume_path} holds an unfinished run of {tag}: pass --resume to continue it (or delete it to start over)")
    if args.resume and os.path.exists(resume_path):
        if old is None or old["recipe"] != rec:
            ap.error(f"--resume: the recipe of the saved {tag} run differs from this command's "
                     f"(saved: {None if old is None else old['recipe']}; now: {rec}). Use the same options, or delete {resume_path}")
        model = tp.load_model(resume_path)
        done = int(model.optimizer.iterations.numpy()) // steps
        for k in ("test_acc", "test_loss", "train_acc", "train_loss", "lr", "epoch_seconds", "epoch_cpu_seconds"):
            del old[k][done:]  # the state file wins if the JSON was written for a later epoch than it
        entry = old
        print(f"[train_cifar] resuming {tag} after epoch {done} of {args.epochs} from {resume_path}", flush=True)
    elif args.resume and old is not None and old.get("checkpoint") and old["recipe"] == rec and os.path.exists(os.path.join(ROOT, old["checkpoint"])):
        print(f"[train_cifar] {tag} is finished ({old['epochs_done']} epochs): {old['checkpoint']}", flush=True)
        return 0
    else:
        keras.utils.set_random_seed(args.seed)
        model = build(args, args.weight_decay)
        compile_model(model, args, steps)
        done = 0
        prof = tp.profile(build(args, 0.0))
        entry = {"epochs": args.epochs, "epochs_done": 0, "test_acc": [], "test_loss": [], "train_acc": [], "train_loss": [], "lr": [],
                 "epoch_seconds": [], "epoch_cpu_seconds": [], "wall_seconds": 0.0, "cpu_seconds": 0.0, "params": prof.params,
                 "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)), "macs": prof.macs,
                 "recipe": rec, "commands": [], "segments": [], "checkpoint": None, "checkpoint_bytes": None}
    results["models"][tag] = entry
    entry["commands"].append(command)
    entry["segments"].append({"command": command, "epochs": [done, done], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "load_average_at_start": [round(v, 2) for v in os.getloadavg()]})
    results["config"]["command"] = command

    if done < args.epochs:
        train = tp.datasets.cifar10_pipeline(xt, yt, args.batch_size, seed=args.seed, first_epoch=done)
        test = tp.datasets.cifar10_pipeline(xs, ys, 500, train=False)
        cb = EpochEnd(entry, results, args, resume_path, deadline, (start, cpu_start))
        model.fit(train, epochs=args.epochs, initial_epoch=done, steps_per_epoch=steps, validation_data=test, callbacks=[cb], verbose=2)
    if entry["epochs_done"] >= args.epochs:
        plain = build(args, 0.0)  # the committed model: same weights, no regularizers, no optimizer
        plain.set_weights(model.get_weights())
        save_model(plain, final_path)  # not compiled: no optimizer in the file
        check = tp.load_model(final_path)
        check.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        acc = float(check.evaluate(tp.datasets.cifar10_pipeline(xs, ys, 500, train=False), verbose=0)[1])
        entry.update(checkpoint=repo_path(final_path), checkpoint_bytes=os.path.getsize(final_path), checkpoint_test_acc=acc)
        if os.path.exists(resume_path):
            os.remove(resume_path)
        print(f"[train_cifar] {tag} done: test {100 * acc:.2f}% (reloaded {final_path}, {os.path.getsize(final_path) / 1e6:.2f} MB)", flush=True)
    account(entry, (start, cpu_start))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
