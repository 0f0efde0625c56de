"""`tfprune.compress` called as a user would, with its defaults, on a CIFAR-10 checkpoint: does the default time budget hold?

    python benchmarks/compress_defaults.py --models resnet56 --budgets 0.5

For each model and latency budget (a ratio of the dense model's latency) one
call, timed from the outside::

    tfprune.compress(dense, (x_train, y_train), latency=budget, out="<tmp>/small.tflite")

with every other argument at its default: the whole call within ``time_budget``
(3600 s: latency table, search, final fine-tune, file), 8 planned iterations,
100 fine-tuning steps per accepted step, 1,000 final steps (Adam 1e-4, cosine,
batch 64, no augmentation), the last 10% of the training images as validation,
the table built on this machine (1 thread; its per-layer timings cached), every
accepted step timed, int8 kept where it is no slower and as accurate.
``--time-budget`` / ``--final-steps`` / ``--iterations`` / ``--finetune-steps``
override a default (the tests' tiny runs; say so when you report).

Recorded per call: wall and CPU minutes, the time budget and why the search
stopped, the measured and predicted latency ratios, the table's error, test
accuracy of the Keras model and of the written file, its format and bytes, and
`CompressResult.stages`. The JSON is written after every call (``--resume``
skips those done): ``benchmarks/results/compress_defaults.{json,md}``,
``{"models": {tag: {"dense_acc": ..., "results": [{"latency_budget": ..., "wall_minutes": ..., "cpu_minutes": ...,
"time_budget_s": ..., "stop_reason": ..., "latency_ratio": ..., "predicted_ratio": ..., "test_acc": ...,
"file_test_acc": ..., "file_format": ..., "tflite_bytes": ..., "stages": [...]}]}}, "config": {"command": ..., "cpu_minutes": ...}}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _cifar import RESULTS, Deadline, Ledger, accuracy_on, check_subset, command_line, common_arguments, dense_entry, load_data, write_markdown_with_footer  # noqa: E402

import tfprune as tp  # noqa: E402

DEFAULT_OUT = os.path.join(RESULTS, "compress_defaults.json")
OVERRIDES = ("time_budget", "final_steps", "iterations", "finetune_steps")


def file_accuracy(path: str, xs: np.ndarray, ys: np.ndarray) -> float:
    """Top-1 accuracy (fraction) of a .tflite file on raw CIFAR-10 test pixels (float or int8 input, batch 1)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp.get("quantization", (0.0, 0))
    hits = 0
    for x, y in zip(xs, np.asarray(ys).reshape(-1)):
        x = x[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"])[0]) == y)
    return hits / len(xs)


def write_markdown(data: dict, out: str) -> None:
    lines = ["| model | budget | call wall min | CPU min | time budget s | stopped because | steps | measured ratio | table's ratio "
             "| test acc % (Keras) | test acc % (file) | file |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for tag, entry in data["models"].items():
        for r in entry.get("results", []):
            lines.append(f"| {tag} (dense {100 * entry['dense_acc']:.2f}%) | {r['latency_budget']:g} | {r['wall_minutes']:.1f} | "
                         f"{r['cpu_minutes']:.1f} | {r['time_budget_s']} | {r['stop_reason']} | {r['steps']} | {r['latency_ratio']:.3f} | "
                         f"{r['predicted_ratio']:.3f} | {100 * r['test_acc']:.2f} | {100 * r['file_test_acc']:.2f} | "
                         f"{r['file_format']}, {r['tflite_bytes']:,} bytes |")
    lines.append("")
    for tag, entry in data["models"].items():
        for r in entry.get("results", []):
            lines += [f"Stages, {tag} at {r['latency_budget']:g}:", "", "| stage | what | params | bytes | latency ratio | accuracy | images |",
                      "|---|---|---:|---:|---:|---:|---|"]
            for s in r["stages"]:
                lines.append(f"| {s['stage']} | {s['what']} | {s['params']:,} | {s['bytes'] or ''} | {s['latency_ratio']:.3f} | "
                             f"{s['accuracy']:.4f} | {s['images']} |")
            lines.append("")
    write_markdown_with_footer(lines, data, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56")
    ap.add_argument("--budgets", default="0.5", help="latency budgets, ratios of the dense model's")
    ap.add_argument("--time-budget", type=float, default=None, help="override compress's default (seconds)")
    ap.add_argument("--final-steps", type=int, default=None, help="override compress's default")
    ap.add_argument("--iterations", type=int, default=None, help="override compress's default")
    ap.add_argument("--finetune-steps", type=int, default=None, help="override compress's default")
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    check_subset(ap, args, DEFAULT_OUT)
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    ledger = Ledger(args.out, {"overrides": overrides, "subset": args.subset}, command_line(__file__, argv), args.resume,
                    ("model", "latency_budget"))
    deadline = Deadline(args.max_minutes)
    (xt, yt), test = load_data(args.data, args.subset)
    last = 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, test)
        for b in [float(v) for v in args.budgets.split(",")]:
            if ledger.done(model=tag, latency_budget=b):
                continue
            if not deadline.allows(last):
                print(f"[compress_defaults] stopping: the next call would pass --max-minutes {args.max_minutes}")
                return 0
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "small.tflite")
                t0, c0 = time.time(), time.process_time()
                res = tp.compress(dense, (xt, yt), latency=b, out=path, progress=print, **overrides)
                wall, cpu = time.time() - t0, time.process_time() - c0
                file_acc = file_accuracy(path, *test)
            choice = res.file_choice or {}
            run = {"model": tag, "latency_budget": b, "wall_minutes": wall / 60, "cpu_minutes": cpu / 60,
                   "time_budget_s": overrides.get("time_budget", 3600.0), "stop_reason": res.stop_reason, "steps": len(res.steps),
                   "latency_ratio": res.latency_ratio, "predicted_ratio": res.predicted_ratio, "table_error": res.table_error,
                   "test_acc": accuracy_on(res.model, *test), "file_test_acc": file_acc, "file_format": choice.get("format"),
                   "tflite_bytes": int(res.export.bytes), "search_seconds": res.search_seconds, "stages": res.stages(),
                   "path": [s.to_dict() for s in res.steps]}
            ledger.add(run)
            entry["results"] = [r for r in ledger.data["runs"] if r["model"] == tag]
            ledger.save()
            write_markdown(ledger.data, args.out)
            last = wall
            print(f"[compress_defaults] {tag} at {b:g}: {wall / 60:.1f} min wall ({cpu / 60:.1f} CPU), stopped: {res.stop_reason}; "
                  f"measured {res.latency_ratio:.3f}, test {100 * run['test_acc']:.2f}% (file {100 * file_acc:.2f}%)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
