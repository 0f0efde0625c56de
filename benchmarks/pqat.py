"""Post-training int8 vs sparsity-preserving QAT int8 on a pruned LeNet-5 (MNIST).

    python benchmarks/pqat.py            # full budget (see --help)
    python benchmarks/pqat.py --quick    # shorter training, same comparison

1. Train LeNet-5 dense; for each total sparsity (0.90, 0.988) prune a copy
   with ``tfprune.wrap`` + ``tfprune.Pruning(s)`` (polynomial ramp
   over the first 60% of the pruning epochs, then at target), strip.
2. Three int8 files per sparsity, all full integer with float I/O and the
   zeros stored sparsely (``EXPERIMENTAL_SPARSITY``):
   * ``ptq``: the pruned model, post-training int8
     (``tfprune.export_tflite(mode="int8")``, 256 calibration images from the
     training split);
   * ``retrain+ptq``: the control: the pruned model fine-tuned in float with
     its zeros frozen (``tfprune.training.finetune.retrain``) for as many steps as
     PQAT, then the same post-training int8; it separates "more training"
     from "quantization-aware";
   * ``pqat``: ``tfprune.quantize.pqat`` (tfmot's prune-preserve scheme), then
     ``tfprune.quantize.convert_qat`` (ranges from the QAT model).
   For each: test accuracy of the .tflite on the 10,000 test images (run
   with ai-edge-litert), bytes and gzip bytes, the kernels' sparsity as
   stored in the flatbuffer, and whether every pruned zero is a zero there.
   Also the size of the XNNPack-safe encoding (int8 FULLY_CONNECTED kernels
   stored dense, `tfprune.export.densify_for_xnnpack`): the sparse files
   run on the builtin kernels only (see tfprune/export.py).
Writes benchmarks/results/pqat.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.export import densify_for_xnnpack  # noqa: E402
from tfprune.quantize import convert_qat, kernel_zeros, pqat, run_tflite, tflite_kernel_zeros  # noqa: E402
from tfprune.training.finetune import retrain  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz")


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(y).reshape(-1)))


def gz(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9))


def quant_param_bytes(content: bytes) -> int:
    """Bytes of the tensors' quantization parameters (scales, zero points) in the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    total = 0
    for t in model.subgraphs[0].tensors:
        if t.quantization is not None:
            total += sum(np.asarray(getattr(t.quantization, f)).nbytes for f in ("scale", "zeroPoint", "min", "max") if getattr(t.quantization, f) is not None)
    return int(total)


def file_record(content: bytes, before: dict, x: np.ndarray, y: np.ndarray, seconds: float) -> dict:
    """Accuracy, sizes and stored sparsity of one int8 file; ``before``: the Keras kernels' zeros."""
    t = time.perf_counter()
    got, runtime = run_tflite(content, x, batch_size=100)
    infer_s = time.perf_counter() - t
    in_file = tflite_kernel_zeros(content, before)
    missing = sorted(set(before) - set(in_file))
    if missing:
        raise RuntimeError(f"kernels of {missing} not found in the flatbuffer")
    safe = densify_for_xnnpack(content)[0]
    n = sum(v.n for v in before.values())
    return {
        "tflite_accuracy": accuracy(got, y),
        "runtime": runtime,
        "bytes": len(content),
        "gzip_bytes": gz(content),
        "kernel_values_stored": int(sum(v.stored for v in in_file.values())),
        "quant_param_bytes": quant_param_bytes(content),
        "xnnpack_safe_bytes": len(safe),
        "xnnpack_safe_gzip_bytes": gz(safe),
        "file_sparsity": sum(v.zeros for v in in_file.values()) / n,
        "stored_sparsity": 1.0 - sum(v.stored for v in in_file.values()) / n,
        "layers_file_sparsity": {k: v.sparsity for k, v in in_file.items()},
        "layers_stored_sparsity": {k: v.stored_sparsity for k, v in in_file.items()},
        "pruned_zeros_lost": int(sum(max(0, before[k].zeros - in_file[k].zeros) for k in before)),
        "extra_zeros_from_rounding": int(sum(max(0, in_file[k].zeros - before[k].zeros) for k in before)),
        "convert_seconds": seconds,
        "inference_seconds": infer_s,
    }


def ptq_bytes(model, xt: np.ndarray, xs: np.ndarray, ys: np.ndarray, n_calib: int) -> tuple[bytes, float]:
    """Post-training int8 through tfprune.export_tflite (sparse storage, kept sparse), and the seconds it took."""
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.tflite")
        tp.export_tflite(model, path, mode="int8", sample_inputs=(xs[:200], ys[:200]), n_samples=200,
                         representative_data=xt[:n_calib], n_calibration=n_calib, xnnpack_safe=False)
        with open(path, "rb") as f:
            content = f.read()
    return content, time.perf_counter() - t


def run(args) -> dict:
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data, fallback=False)
    bs = args.batch_size
    steps_per_epoch = int(np.ceil(len(xt) / bs))
    keras.utils.set_random_seed(args.seed)
    t0 = time.perf_counter()
    dense = tp.models.compile_classifier(tp.models.lenet5())
    dense.fit(xt, yt, epochs=args.dense_epochs, batch_size=bs, verbose=0)
    dense_acc = accuracy(dense.predict(xs, verbose=0, batch_size=1000), ys)
    out = {
        "budget": (f"LeNet-5, {len(xt)} training / {len(xs)} test images; dense {args.dense_epochs} epochs (Adam 1e-3, batch {bs}); "
                   f"pruning {args.prune_epochs} epochs (Adam 5e-4, Pruning defaults: capacity importance, ramp over the first 60%); "
                   f"then {args.qat_epochs} epoch(s) ({args.qat_epochs * steps_per_epoch} steps, Adam {args.learning_rate:g}, batch {bs}) "
                   f"of PQAT, or of frozen-zero float retraining for the control; {args.n_calib} calibration images for post-training int8"),
        "quick": bool(args.quick),
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (timings are indicative only)",
        "dense_keras_accuracy": dense_acc,
        "dense_seconds": time.perf_counter() - t0,
        "results": [],
    }
    print(f"dense: {dense_acc:.4f} ({out['dense_seconds']:.0f} s)", flush=True)
    for s in args.sparsities:
        keras.utils.set_random_seed(args.seed)
        t = time.perf_counter()
        w = tp.models.compile_classifier(tp.wrap(dense), learning_rate=5e-4)
        w.fit(xt, yt, epochs=args.prune_epochs, batch_size=bs, verbose=0, callbacks=[tp.Pruning(s, ramp_fraction=0.6)])
        pruned = tp.models.compile_classifier(tp.strip(w))
        prune_s = time.perf_counter() - t
        before = kernel_zeros(pruned)
        n = sum(v.n for v in before.values())
        row = {
            "target_sparsity": s,
            "achieved_sparsity": sum(v.zeros for v in before.values()) / n,
            "layers_sparsity": {k: v.sparsity for k, v in before.items()},
            "pruned_keras_accuracy": accuracy(pruned.predict(xs, verbose=0, batch_size=1000), ys),
            "prune_seconds": prune_s,
            "variants": {},
        }
        print(f"s={s}: achieved {row['achieved_sparsity']:.4f}, pruned float {row['pruned_keras_accuracy']:.4f}", flush=True)

        content, sec = ptq_bytes(pruned, xt, xs, ys, args.n_calib)
        row["variants"]["ptq"] = {"keras_accuracy": row["pruned_keras_accuracy"], "train_seconds": 0.0, **file_record(content, before, xs, ys, sec)}

        t = time.perf_counter()
        ctrl = retrain(pruned, (xt, yt), steps=args.qat_epochs * steps_per_epoch, batch_size=bs, learning_rate=args.learning_rate, seed=args.seed)
        ctrl_s = time.perf_counter() - t
        if kernel_zeros(ctrl) != before:
            raise RuntimeError("frozen-zero retraining changed the zeros")
        content, sec = ptq_bytes(ctrl, xt, xs, ys, args.n_calib)
        row["variants"]["retrain+ptq"] = {"keras_accuracy": accuracy(ctrl.predict(xs, verbose=0, batch_size=1000), ys), "train_seconds": ctrl_s,
                                          **file_record(content, before, xs, ys, sec)}

        keras.utils.set_random_seed(args.seed)
        t = time.perf_counter()
        q = pqat(pruned, (xt, yt), epochs=args.qat_epochs, batch_size=bs, learning_rate=args.learning_rate, seed=args.seed)
        q_s = time.perf_counter() - t
        q_zeros = kernel_zeros(q)
        t = time.perf_counter()
        content = convert_qat(q)
        sec = time.perf_counter() - t
        row["variants"]["pqat"] = {"keras_accuracy": accuracy(q.predict(xs, verbose=0, batch_size=1000), ys), "train_seconds": q_s,
                                   "qat_kernels_keep_zeros": q_zeros == before, **file_record(content, before, xs, ys, sec)}
        for k, v in row["variants"].items():
            print(f"  {k}: keras {v['keras_accuracy']:.4f} tflite {v['tflite_accuracy']:.4f} bytes {v['bytes']} gzip {v['gzip_bytes']} "
                  f"zeros {v['file_sparsity']:.4f} not stored {v['stored_sparsity']:.4f} lost {v['pruned_zeros_lost']} ({v['runtime'][:20]})", flush=True)
        out["results"].append(row)
    out["total_seconds"] = time.perf_counter() - t0
    return out


def markdown(res: dict, cmd: str) -> list[str]:
    lines = [
        "# Post-training int8 vs sparsity-preserving QAT (PQAT) int8, pruned LeNet-5 on MNIST",
        "",
        f"`{cmd}`" + (" (quick budget)" if res["quick"] else ""),
        "",
        f"Budget: {res['budget']}. Seed {res['seed']}. Machine: {res['machine']}.",
        "",
        f"Dense LeNet-5 (Keras float): test accuracy {res['dense_keras_accuracy']:.4f}.",
        "",
        "All files: full integer int8, float input/output, zeros stored sparsely (`EXPERIMENTAL_SPARSITY`). *acc*: on the "
        "10,000 test images (the .tflite run with ai-edge-litert). *zeros in file*: exact zeros of the four int8 kernels "
        "(430,500 weights; sparse tensors decoded) over all of them; *lost*: pruned zeros that are not zero in the file. "
        "*not stored*: fraction of the kernel weights the flatbuffer does not store (the converter stores some zeros "
        "inside 1x16 blocks of fc1 and whole CSR rows elsewhere, so this is below the sparsity). *quant params*: bytes of scales "
        "and zero points. *xnnpack-safe*: the same file with the int8 FULLY_CONNECTED kernels that come out of a DENSIFY "
        "op stored dense (what `export_tflite` writes by default, so XNNPack runs it).",
        "",
        "| sparsity (achieved) | method | Keras acc | int8 .tflite acc | bytes | gzip bytes | quant params "
        "| xnnpack-safe bytes / gzip | zeros in file | not stored | lost | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["results"]:
        for name, v in row["variants"].items():
            lines.append(
                f"| {row['target_sparsity']:g} ({row['achieved_sparsity']:.4f}) | {name} | {v['keras_accuracy']:.4f} | {v['tflite_accuracy']:.4f} | "
                f"{v['bytes']:,} | {v['gzip_bytes']:,} | {v['quant_param_bytes']:,} | {v['xnnpack_safe_bytes']:,} / {v['xnnpack_safe_gzip_bytes']:,} | "
                f"{v['file_sparsity']:.4f} | {v['stored_sparsity']:.4f} | {v['pruned_zeros_lost']} | {v['train_seconds']:.0f} |"
            )
    lines += ["", "Per layer in the PQAT file, zeros / not stored:", ""]
    for row in res["results"]:
        v = row["variants"]["pqat"]
        per = ", ".join(f"{k} {x:.4f} / {v['layers_stored_sparsity'][k]:.4f}" for k, x in v["layers_file_sparsity"].items())
        lines.append(f"- {row['target_sparsity']:g}: {per}; QAT model's kernels hold every pruned zero: {v['qat_kernels_keep_zeros']}; "
                     f"runtime {v['runtime'].split(' (')[0]}")
    lines += ["", "Differences (int8 .tflite accuracy in points, bytes):", ""]
    for row in res["results"]:
        v = row["variants"]
        pq, pt, ct = v["pqat"], v["ptq"], v["retrain+ptq"]
        lines.append(
            f"- {row['target_sparsity']:g}: pqat - ptq {100 * (pq['tflite_accuracy'] - pt['tflite_accuracy']):+.2f}, "
            f"pqat - retrain+ptq {100 * (pq['tflite_accuracy'] - ct['tflite_accuracy']):+.2f}; "
            f"int8 conversion (tflite - Keras): ptq {100 * (pt['tflite_accuracy'] - pt['keras_accuracy']):+.2f}, "
            f"pqat {100 * (pq['tflite_accuracy'] - pq['keras_accuracy']):+.2f}; "
            f"bytes pqat - ptq {pq['bytes'] - pt['bytes']:+,} (quant params {pq['quant_param_bytes'] - pt['quant_param_bytes']:+,}, "
            f"kernel values stored {pq['kernel_values_stored'] - pt['kernel_values_stored']:+,}); "
            f"zeros added by rounding: ptq {pt['extra_zeros_from_rounding']}, pqat {pq['extra_zeros_from_rounding']}"
        )
    lines += [
        "",
        "Post-training int8 quantizes Dense kernels per output channel (a scale and a zero point per channel); tfmot's 8-bit "
        "scheme quantizes them per tensor, so the quant-params column and most of the size difference come from that, not "
        "from the zeros (both files hold the same zeros).",
        "",
        "*ptq*: post-training int8 of the pruned model (`tfprune.export_tflite(mode='int8')`). *retrain+ptq*: the control, "
        "the pruned model fine-tuned in float with frozen zeros for the same steps as PQAT, then post-training int8. "
        "*pqat*: `tfprune.quantize.pqat` (tfmot `Default8BitPrunePreserveQuantizeScheme`) then `tfprune.quantize.convert_qat`.",
        f"Total {res['total_seconds']:.0f} s.",
    ]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST") or DEFAULT_DATA)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pqat.json"))
    ap.add_argument("--quick", action="store_true", help="dense 2, pruning 2, QAT 1 epoch(s)")
    ap.add_argument("--sparsities", default="0.9,0.988")
    ap.add_argument("--dense-epochs", type=int, default=4)
    ap.add_argument("--prune-epochs", type=int, default=4)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summarize", action="store_true", help="only rewrite the markdown from --out")
    args = ap.parse_args(argv)
    if args.summarize:
        with open(args.out) as f:
            res = json.load(f)
        write_markdown(args.out, markdown(res, "python benchmarks/pqat.py" + (" --quick" if res["quick"] else "")))
        return 0
    if args.quick:
        args.dense_epochs, args.prune_epochs, args.qat_epochs = 2, 2, 1
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    res = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    cmd = "python benchmarks/pqat.py" + (" --quick" if args.quick else "")
    write_markdown(args.out, markdown(res, cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
