"""What the CIFAR-10 benchmark scripts share: the dense checkpoints, the fine-tuning recipe, and a resumable run ledger.

Every CIFAR benchmark starts from a committed dense checkpoint
(``benchmarks/checkpoints/<tag>.keras``, written by ``train_cifar.py``),
fine-tunes with one recipe (`compile_finetune`) on the augmented pipeline
(`tfprune.datasets.cifar10_pipeline`), and records one *run* per
configuration in a JSON `Ledger`, written atomically after every run, so a
stopped command continues where it stopped (``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from typing import Any

import numpy as np

import tfprune as tp
from tfprune._keras import keras
from tfprune.files import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHECKPOINTS = os.path.join(HERE, "checkpoints")
RESULTS = os.path.join(HERE, "results")


def repo_path(path: str) -> str:
    """``path`` relative to the checkout when inside it (what the JSON stores), else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def command_line(script: str, argv: list[str] | None) -> str:
    return "python " + " ".join(shlex.quote(a) for a in [repo_path(script), *(sys.argv[1:] if argv is None else argv)])


def load_data(path: str | None, subset: int | None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 (raw pixels, the keras layout); ``subset``: the first N train / N // 5 test images (tests only)."""
    (xt, yt), (xs, ys) = tp.datasets.cifar10(path)
    if subset:
        xt, yt, xs, ys = xt[:subset], yt[:subset], xs[:max(1, subset // 5)], ys[:max(1, subset // 5)]
    return (xt, yt), (xs, ys)


def load_dense(tag: str, checkpoint_dir: str) -> keras.Model:
    path = os.path.join(checkpoint_dir, f"{tag}.keras")
    if not os.path.isfile(path):
        raise SystemExit(f"no dense checkpoint {path}: train it first with "
                         f"`python benchmarks/train_cifar.py --model {tag.split('_w')[0]} --resume` (see benchmarks/checkpoints/README.md)")
    return tp.load_model(path)


def compile_finetune(model: keras.Model, lr: float, total_steps: int) -> keras.Model:
    """SGD, momentum 0.9, Nesterov; ``lr`` decayed to 0 by a cosine over ``total_steps``; logits loss; no weight decay."""
    schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, int(total_steps)), alpha=0.0)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def accuracy_on(model: keras.Model, xs: np.ndarray, ys: np.ndarray) -> float:
    """Top-1 accuracy (fraction) on the test images (the model may be uncompiled)."""
    logits = model.predict(tp.datasets.cifar10_pipeline(xs, ys, 500, train=False).map(lambda x, y: x), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(ys).reshape(-1)))


def common_arguments(ap: argparse.ArgumentParser, default_out: str) -> None:
    """The options every CIFAR pruning benchmark takes: batch, resume, time limit, data, output, checkpoints (and the tests' subset)."""
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--resume", action="store_true", help="continue the runs already in --out")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop before a configuration would pass this many minutes")
    ap.add_argument("--data", default=None, help="CIFAR-10 source for tfprune.datasets.cifar10 (default: its search order)")
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--checkpoint-dir", default=CHECKPOINTS)
    ap.add_argument("--subset", type=int, default=None, help=argparse.SUPPRESS)  # tests: first N train / N // 5 test images


def check_subset(ap: argparse.ArgumentParser, args: argparse.Namespace, default_out: str) -> None:
    """``--subset`` (tests) never writes the committed results."""
    if args.subset and os.path.abspath(args.out) == os.path.abspath(default_out):
        ap.error("--subset runs are tests: give --out outside benchmarks/results")


def dense_entry(ledger: Ledger, tag: str, args: argparse.Namespace, test: tuple[np.ndarray, np.ndarray]) -> tuple[keras.Model, dict]:
    """The dense checkpoint of ``tag`` and its entry in the ledger's ``models`` (dense accuracy, MACs, params, checkpoint path)."""
    xs, ys = test
    dense = load_dense(tag, args.checkpoint_dir)
    entry = ledger.data["models"].setdefault(tag, {})
    if entry.get("n_test") != len(xs) or "dense_acc" not in entry:
        entry.update(dense_acc=accuracy_on(dense, xs, ys), n_test=len(xs))
    prof = tp.profile(dense)
    entry.update(dense_macs=int(prof.macs), dense_params=int(prof.params), checkpoint=repo_path(os.path.join(args.checkpoint_dir, f"{tag}.keras")))
    return dense, entry


class Ledger:
    """A benchmark's JSON: ``{"models": {...}, "runs": [...], "config": {...}}``, resumable.

    ``runs`` holds one record per finished configuration, identified by
    `key` fields; ``config["budget"]`` must match between segments (a resumed
    command with another budget is refused); ``config["segments"]`` records
    each command's wall and CPU seconds (``time.process_time``: all threads of
    the process), and ``config["cpu_minutes"]`` their total.
    """

    def __init__(self, path: str, budget: dict, command: str, resume: bool, key_fields: tuple[str, ...]) -> None:
        self.path, self.key_fields = path, key_fields
        self.start = (time.time(), time.process_time())
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if data.get("runs") and not resume:
                raise SystemExit(f"{path} already holds {len(data['runs'])} runs: pass --resume to continue them, "
                                 "or --out another file to start afresh")
            if data.get("runs") and data["config"].get("budget") != budget:
                raise SystemExit(f"--resume: {path} was made with another budget:\n  {data['config'].get('budget')}\nvs now\n  {budget}\n"
                                 "Use the same options, or --out another file")
        else:
            data = {"models": {}, "runs": [], "config": {}}
        data.setdefault("runs", [])
        cfg = data.setdefault("config", {})
        cfg["budget"] = budget
        cfg["command"] = command
        cfg.setdefault("commands", []).append(command)
        cfg["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores"
        cfg.setdefault("segments", []).append({"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                "load_average_at_start": [round(v, 2) for v in os.getloadavg()]})
        self.data = data

    def key(self, run: dict) -> tuple:
        return tuple(run[k] for k in self.key_fields)

    def done(self, **fields: Any) -> bool:
        want = tuple(fields[k] for k in self.key_fields)
        return any(self.key(r) == want for r in self.data["runs"])

    def add(self, run: dict) -> None:
        self.data["runs"] = [r for r in self.data["runs"] if self.key(r) != self.key(run)] + [run]

    def save(self) -> None:
        cfg = self.data["config"]
        seg = cfg["segments"][-1]
        seg["wall_seconds"] = round(time.time() - self.start[0], 1)
        seg["cpu_seconds"] = round(time.process_time() - self.start[1], 1)
        cfg["cpu_minutes"] = round(sum(s.get("cpu_seconds", 0.0) for s in cfg["segments"]) / 60, 2)
        cfg["wall_minutes"] = round(sum(s.get("wall_seconds", 0.0) for s in cfg["segments"]) / 60, 2)
        with atomic_write(self.path, "w") as f:
            json.dump(self.data, f, indent=2)


def write_markdown_with_footer(lines: list[str], data: dict, out: str) -> None:
    """Write ``lines`` plus the budget, CPU time and command of ``data["config"]`` to ``out``'s ``.md`` (atomically)."""
    c = data["config"]
    lines = lines + [f"Budget: {c['budget']}. CPU time {c.get('cpu_minutes', 0):.1f} min (wall {c.get('wall_minutes', 0):.1f} min).", "",
                     f"Command: `{c['command']}`"]
    with atomic_write(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


class Deadline:
    """``--max-minutes``: whether a configuration expected to take ``seconds`` still fits."""

    def __init__(self, minutes: float | None) -> None:
        self.end = None if minutes is None else time.time() + 60 * float(minutes)

    def allows(self, seconds: float) -> bool:
        return self.end is None or time.time() + seconds <= self.end


def tflite_latency_ms(models: dict[str, keras.Model], rounds: int = 20, block: int = 10) -> dict[str, float]:
    """Median ms per batch-1 invocation of each model as float TFLite (1 thread), timed in interleaved blocks."""
    import tensorflow as tf
    from structured import interleaved_latency

    contents = {name: tf.lite.TFLiteConverter.from_keras_model(tp.strip(m)).convert() for name, m in models.items()}
    return interleaved_latency(contents, threads=1, rounds=rounds, block=block)
