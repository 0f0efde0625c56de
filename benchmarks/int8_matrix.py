"""int8 export on mobile networks: wrap, prune while training, strip, export int8 with parity.

    python benchmarks/int8_matrix.py                 # every model
    python benchmarks/int8_matrix.py --models efficientnetb0 mobilenetv3small
    python benchmarks/int8_matrix.py --quick         # fewer steps and samples (a smoke run)
    python benchmarks/int8_matrix.py --micro         # LeNet-5 for TensorFlow Lite Micro instead

``--micro``: Caffe LeNet-5 (``tfprune.models.lenet5``) trained 3 epochs on the
MNIST train set, pruned to 0.9 with ``Pruning`` (3 more epochs),
exported ``mode="micro"`` (int8, dense encoding, int8 I/O) next to the dense
model's micro file and the pruned ``int8`` (sparse) file; each micro file is
run with TFLM's Python interpreter (tflite-micro) on 1,000 test digits:
flash bytes, gzip bytes, smallest arena, agreement and accuracy. Writes
benchmarks/results/micro_lenet5.json and .md.

Models (random initial weights, ``weights=None``, 10 classes, logits out; no
download): tf_keras.applications MobileNetV2 (alpha 0.35, 96x96),
MobileNetV3Small and MobileNetV3Large (96x96), EfficientNetB0 (96x96),
ResNet50 (64x64), keras-cv ``ImageClassifier`` on a small
``EfficientNetV2Backbone`` built from explicit constructor arguments (96x96;
presets download, so none is used), and keras-cv ``YOLOV8Detector``
(``YOLOV8Backbone`` channels 16/32/64/128, depth 1, ``fpn_depth=1``, 3
classes, 64x64). BatchNorm momentum 0.9, so a few hundred steps move the
moving statistics.

The detector trains with its own losses (CIoU + BCE through keras-cv's label
encoder, `tfprune.TaskModel`) on ``--det-train`` synthetic box images
(`tfprune.training.tasks.synthetic_boxes`), calibration and parity on other synthetic
images; its .tflite holds the raw heads (``boxes`` distance bins, ``classes``
scores), parity per head; box decoding and NMS stay outside.

Data: real MNIST digits resized to SxSx3 (``tf.image.resize``): ``--train``
train digits to fit on (with ``tfprune.Pruning(0.8)``), calibration
on the next ``--calib`` train digits, parity on ``--test`` test digits, so
calibration and evaluation never share a sample. A net that has not been
trained has near-constant logits: its int8 outputs tie at the maximum and
top-1 agreement is undefined there; the report counts those ties.

For each model: seconds per stage (build, wrap + fit, strip, export float /
sparse / int8 / int8 all-sparse), every mode's bytes and relative error (per
output), kernels stored dense because the converter's sparse encoding was
wrong (``dense_wrong_encoding``); for int8 the .tflite
bytes and gzip bytes, the runtime that ran it (``xnnpack`` or the builtin
kernels), the int8 kernels stored dense for XNNPack, relative output error
``||tflite - keras|| / ||keras||``, max abs diff, top-1 agreement (and on how
many samples it is defined), Keras and TFLite accuracy. Each model is also
exported with ``xnnpack_safe=False`` (all kernels sparse) to show which
runtime then runs it. Writes benchmarks/results/int8_matrix.json and .md
(``--quick``: int8_matrix_quick.*). Needs the MNIST file (``--data`` or
../shared/data/mnist/mnist.npz). Wall-clock times on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.export import run_micro  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz")


def _apps(name: str, size: int, **kw: Any) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        fn = getattr(keras.applications, name)
        return fn(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None, **kw)

    return build


def _keras_cv_effnetv2(size: int) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        from keras_cv.models import EfficientNetV2Backbone, ImageClassifier

        backbone = EfficientNetV2Backbone(
            include_rescaling=True,
            width_coefficient=0.5,
            depth_coefficient=0.5,
            stackwise_kernel_sizes=[3, 3, 3, 3],
            stackwise_num_repeats=[1, 2, 2, 2],
            stackwise_input_filters=[32, 16, 32, 64],
            stackwise_output_filters=[16, 32, 64, 96],
            stackwise_expansion_ratios=[1, 4, 4, 4],
            stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
            stackwise_strides=[1, 2, 2, 2],
            stackwise_conv_types=["fused", "fused", "unfused", "unfused"],
            input_shape=(size, size, 3),
        )
        return ImageClassifier(backbone=backbone, num_classes=10, activation=None)

    return build


def _keras_cv_yolov8(size: int) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        from keras_cv.models import YOLOV8Backbone, YOLOV8Detector

        backbone = YOLOV8Backbone(stackwise_channels=[16, 32, 64, 128], stackwise_depth=[1, 1, 1, 1], include_rescaling=False,
                                  input_shape=(size, size, 3))
        det = YOLOV8Detector(num_classes=3, bounding_box_format="xywh", backbone=backbone, fpn_depth=1)
        det.compile(box_loss="ciou", classification_loss="binary_crossentropy", optimizer="adam")  # its own losses, used by TaskModel
        return det

    return build


# name -> (builder, image side, input scale: 255 for models that rescale pixels themselves)
MODELS: dict[str, tuple[Callable[[], keras.Model], int, float]] = {
    "mobilenetv2": (_apps("MobileNetV2", 96, alpha=0.35), 96, 1.0),
    "mobilenetv3small": (_apps("MobileNetV3Small", 96), 96, 255.0),
    "efficientnetb0": (_apps("EfficientNetB0", 96), 96, 255.0),
    "resnet50": (_apps("ResNet50", 64), 64, 1.0),
    "mobilenetv3large": (_apps("MobileNetV3Large", 96), 96, 255.0),
    "kerascv_efficientnetv2": (_keras_cv_effnetv2(96), 96, 255.0),
    "kerascv_yolov8": (_keras_cv_yolov8(64), 64, 1.0),
}
DETECTORS = ("kerascv_yolov8",)


def digits(path: str, side: int, scale: float, n_train: int, n_calib: int, n_test: int) -> dict[str, np.ndarray]:
    import tensorflow as tf

    d = np.load(path)

    def resize(x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), 512):
            r = tf.image.resize(x[i : i + 512, ..., None].astype(np.float32) / 255.0, (side, side)).numpy()
            out.append(np.repeat(r, 3, axis=-1) * scale)
        return np.concatenate(out)

    xt, yt = d["x_train"], d["y_train"].astype(np.int64)
    return {
        "x_train": resize(xt[:n_train]),
        "y_train": yt[:n_train],
        "x_calib": resize(xt[n_train : n_train + n_calib]),  # train digits not used for fitting nor parity
        "x_test": resize(d["x_test"][:n_test]),
        "y_test": d["y_test"][:n_test].astype(np.int64),
    }


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    for layer in model.submodules if hasattr(model, "submodules") else model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _export(pruned: keras.Model, path: str, mode: str, sample: Any, calib: np.ndarray, n_test: int, n_calib: int, **kw: Any) -> dict[str, Any]:
    t = time.perf_counter()
    r = tfprune.export_tflite(pruned, path, mode=mode, sample_inputs=sample, representative_data=calib if mode == "int8" else None,
                              n_samples=n_test, n_calibration=n_calib, **kw)
    out = {
        "bytes": r.bytes, "gzip_bytes": r.gzip_bytes, "runtime": r.runtime, "rel_error": r.rel_error, "max_abs_diff": r.max_abs_diff,
        "outputs": {o.name: {"shape": list(o.shape), "rel_error": o.rel_error, "max_abs_diff": o.max_abs_diff} for o in r.outputs},
        "dense_for_xnnpack": len(r.dense_for_xnnpack), "dense_wrong_encoding": r.dense_wrong_encoding,
        "sparse_tensors": sum(t.stored == "sparse" for t in r.tensors), "n_samples": r.n_samples,
        "n_calibration": r.n_calibration, "calibration_overlap": r.calibration_overlap,
    }
    o = r.outputs[0]
    out.update(top1_agreement=r.top1_agreement, top1_samples=o.top1_samples, top1_ties=o.top1_ties,
               keras_accuracy=r.keras_accuracy, tflite_accuracy=r.tflite_accuracy, seconds=time.perf_counter() - t)
    return out


def _fit_detector(model: keras.Model, n_train: int, epochs: int, batch_size: int, side: int) -> tuple[keras.Model, dict[str, Any]]:
    """keras-cv YOLOV8 trained with its own losses (tfprune.TaskModel) on synthetic boxes; returns the pruned network."""
    from tfprune.training.tasks import TaskModel, synthetic_boxes

    x, y = synthetic_boxes(n_train, side=side, num_classes=model.num_classes, seed=0)
    net = tfprune.wrap(model)
    trainer = TaskModel(net, model)
    trainer.compile(keras.optimizers.Adam(1e-3))
    hist = trainer.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[tfprune.Pruning(0.8)])
    return net, {"task_loss_per_epoch": [float(v) for v in hist.history["loss"]]}


def run_model(name: str, data_path: str, n_train: int, n_calib: int, n_test: int, epochs: int, batch_size: int, out_dir: str,
              det_train: int = 64) -> dict[str, Any]:
    build, side, scale = MODELS[name]
    detector = name in DETECTORS
    row: dict[str, Any] = {"model": name, "input": f"{side}x{side}x3", "input_scale": scale}
    seconds: dict[str, float] = {}
    if detector:
        from tfprune.training.tasks import synthetic_boxes

        data = {"x_calib": synthetic_boxes(n_calib, side=side, seed=1)[0], "x_test": synthetic_boxes(n_test, side=side, seed=2)[0]}
    else:
        data = digits(data_path, side, scale, n_train, n_calib, n_test)
    keras.utils.set_random_seed(0)
    t = time.perf_counter()
    model = build()
    set_bn_momentum(model, 0.9)
    seconds["build"] = time.perf_counter() - t
    row["params"] = int(model.count_params())

    t = time.perf_counter()
    if detector:
        wrapped, info = _fit_detector(model, det_train, epochs, 8, side)
        row.update(info, task="YOLOV8 CIoU + BCE losses (tfprune.TaskModel) on synthetic boxes", n_train=det_train)
    else:
        wrapped = tfprune.models.compile_classifier(tfprune.wrap(model), 1e-3)
        wrapped.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[tfprune.Pruning(0.8)])
    seconds["wrap_fit"] = time.perf_counter() - t

    t = time.perf_counter()
    pruned = tfprune.strip(wrapped)
    seconds["strip"] = time.perf_counter() - t
    row["sparsity"] = float(tfprune.prunable_layers(pruned).total_sparsity())

    sample = data["x_test"] if detector else (data["x_test"], data["y_test"])
    exports = {}
    for mode in ("float", "sparse", "int8"):
        exports[mode] = _export(pruned, os.path.join(out_dir, f"{name}_{mode}.tflite"), mode, sample, data["x_calib"], n_test, n_calib)
        seconds[f"export_{mode}"] = exports[mode]["seconds"]
    r = exports["int8"]
    row.update({k: r[k] for k in ("bytes", "gzip_bytes", "runtime", "dense_for_xnnpack", "rel_error", "max_abs_diff", "top1_agreement", "top1_samples",
                                  "top1_ties", "keras_accuracy", "tflite_accuracy", "n_calibration", "calibration_overlap", "n_samples")})
    row["exports"] = exports
    s = _export(pruned, os.path.join(out_dir, f"{name}_int8_allsparse.tflite"), "int8", sample, data["x_calib"], min(n_test, 32), n_calib,
                xnnpack_safe=False)
    seconds["export_int8_allsparse"] = s["seconds"]
    row["allsparse"] = {"bytes": s["bytes"], "gzip_bytes": s["gzip_bytes"], "runtime": s["runtime"], "rel_error": s["rel_error"]}
    row["seconds"] = seconds
    return row


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "# int8 export matrix",
        "",
        f"`{result['command']}` on {result['machine']}; {result['setup']}",
        "",
        "| model | sparsity | int8 bytes | gzip | runtime | kernels dense for XNNPack | rel. error | max abs diff "
        "| top-1 agreement (defined on) | Keras acc | TFLite acc | all-sparse file: bytes, runtime | s build / fit / export |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    ok = [r for r in result["models"] if "error" not in r]
    for r in result["models"]:
        if "error" in r:
            lines.append(f"| {r['model']} | FAILED: {r['error']} |" + " |" * 11)
            continue
        s = r["seconds"]
        rt = "xnnpack" if r["runtime"] == "xnnpack" else "builtin (XNNPack refused)"
        art = "xnnpack" if r["allsparse"]["runtime"] == "xnnpack" else "builtin (XNNPack refused)"
        lines.append(
            f"| {r['model']} | {r['sparsity']:.3f} | {r['bytes']} | {r['gzip_bytes']} | {rt} | {r['dense_for_xnnpack']} | "
            f"{_fmt(r['rel_error'], '.3g')} | {_fmt(r['max_abs_diff'], '.3g')} | {_fmt(r['top1_agreement'], '.4f')} ({r['top1_samples']}/{r['n_samples']}) | "
            f"{_fmt(r['keras_accuracy'], '.4f')} | {_fmt(r['tflite_accuracy'], '.4f')} | {r['allsparse']['bytes']}, {art} | "
            f"{s['build']:.0f} / {s['wrap_fit']:.0f} / {s['export_int8']:.0f} |"
        )
    lines += [
        "",
        "Every mode, relative error ||tflite - keras|| / ||keras|| per output (the worst output for several; the detector's per head below); "
        "kernels the converter encoded wrongly (stored dense, `dense_wrong_encoding`):",
        "",
        "| model | float bytes, rel. error | sparse bytes, rel. error | int8 bytes, rel. error | wrongly encoded kernels (sparse / int8) "
        "| s build / wrap+fit / strip / float / sparse / int8 / int8 all-sparse |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        e, s = r["exports"], r["seconds"]
        cells = [f"{e[m]['bytes']}, {_fmt(e[m]['rel_error'], '.3g')}" for m in ("float", "sparse", "int8")]
        wrong = f"{len(e['sparse']['dense_wrong_encoding'])} / {len(e['int8']['dense_wrong_encoding'])}"
        secs = " / ".join(f"{s[k]:.0f}" for k in ("build", "wrap_fit", "strip", "export_float", "export_sparse", "export_int8", "export_int8_allsparse"))
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {wrong} | {secs} |")
    for r in ok:
        if "task_loss_per_epoch" in r:
            losses = ", ".join(f"{v:.1f}" for v in r["task_loss_per_epoch"])
            lines += ["", f"{r['model']}: {r['task']}, {r['n_train']} images {r['input']}, task loss per epoch {losses}; "
                      "the .tflite holds the raw heads (box decoding and NMS outside). Relative error per head:", "",
                      "| mode | " + " | ".join(r["exports"]["float"]["outputs"]) + " |", "|---|" + "---:|" * len(r["exports"]["float"]["outputs"])]
            for m in ("float", "sparse", "int8"):
                lines.append(f"| {m} | " + " | ".join(_fmt(o["rel_error"], ".3g") for o in r["exports"][m]["outputs"].values()) + " |")
    return lines


def run_micro_lenet(data_path: str, out_dir: str) -> dict[str, Any]:
    """LeNet-5 dense and pruned to 0.9, exported for TFLM (and sparse int8, which TFLM cannot run)."""
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.mnist(data_path, fallback=False)
    keras.utils.set_random_seed(0)
    times: dict[str, float] = {}
    t = time.perf_counter()
    dense = tfprune.models.compile_classifier(tfprune.models.lenet5(x_train.shape[1:]))
    dense.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0)
    pruned = tfprune.models.compile_classifier(tfprune.wrap(dense), 5e-4)
    pruned.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0, callbacks=[tfprune.Pruning(0.9, ramp_fraction=0.6)])
    pruned = tfprune.strip(pruned)
    times["train_prune"] = time.perf_counter() - t
    sample, rep = (x_test[:1000], y_test[:1000]), x_train[:500]
    rows = []
    cases = (("dense LeNet-5", dense, "micro", True), ("pruned 0.9", pruned, "micro", True), ("pruned 0.9", pruned, "int8", True),
             ("pruned 0.9", pruned, "int8", False))
    for label, model, mode, safe in cases:
        t = time.perf_counter()
        path = os.path.join(out_dir, f"{label.split()[0]}_{mode}_{safe}.tflite")
        r = tfprune.export_tflite(model, path, mode=mode, sample_inputs=sample, representative_data=rep, n_samples=1000, xnnpack_safe=safe)
        m = r.micro
        tflm_error = None
        if m is None:  # not a micro file: does TFLM run it? (measured, not assumed)
            try:
                run_micro(open(path, "rb").read(), x_test[:1])
            except RuntimeError as err:
                tflm_error = " ".join(str(err).split())[:200]
        rows.append({
            "model": label, "mode": mode + ("" if safe else ", xnnpack_safe=False"), "bytes": r.bytes, "gzip_bytes": r.gzip_bytes,
            "sparsity": float(tfprune.prunable_layers(model).total_sparsity()), "keras_accuracy": r.keras_accuracy,
            "tflite_accuracy": r.tflite_accuracy, "runtime": r.runtime, "rel_error": r.rel_error, "top1_agreement": r.top1_agreement,
            "sparse_tensors": sum(t.stored == "sparse" for t in r.tensors),
            "tflm": None if m is None else {"runtime": m.runtime, "flash_bytes": m.flash_bytes, "arena_bytes": m.arena_bytes, "rel_error": m.rel_error,
                                            "top1_agreement": m.top1_agreement, "accuracy": m.accuracy, "n_samples": m.n_samples},
            "tflm_error": tflm_error,
            "seconds": time.perf_counter() - t,
        })
    return {"rows": rows, "seconds": times}


def micro_markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "# LeNet-5 on TensorFlow Lite Micro",
        "",
        f"`{result['command']}` on {result['machine']}; {result['setup']}",
        "",
        "| model | mode | sparsity | sparse tensors | .tflite = flash bytes | gzip bytes | TFLM arena bytes | TFLM rel. error "
        "| TFLM top-1 agreement | TFLM accuracy | Keras accuracy | TFLite runtime |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        m = r["tflm"]
        tflm = [str(m["arena_bytes"]), _fmt(m["rel_error"], ".3g"), _fmt(m["top1_agreement"], ".4f"), _fmt(m["accuracy"], ".4f")] if m else [
            f"TFLM refuses it: {r['tflm_error']}", "", "", ""]
        rt = "xnnpack" if r["runtime"] == "xnnpack" else "builtin (XNNPack refused)"
        lines.append(f"| {r['model']} | {r['mode']} | {r['sparsity']:.3f} | {r['sparse_tensors']} | {r['bytes']} | {r['gzip_bytes']} | " + " | ".join(tflm)
                     + f" | {_fmt(r['keras_accuracy'], '.4f')} | {rt} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--data", default=os.environ.get("TFPRUNE_MNIST", DEFAULT_DATA))
    ap.add_argument("--quick", action="store_true", help="256 train digits, 1 epoch, 64 calibration and 32 test digits")
    ap.add_argument("--train", type=int, default=2048)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--det-train", type=int, default=64, help="synthetic images the detector trains on (batch 8)")
    ap.add_argument("--micro", action="store_true", help="LeNet-5 for TensorFlow Lite Micro (see the module doc)")
    ap.add_argument("--out", default=None, help="results name under benchmarks/results (default int8_matrix, --quick: int8_matrix_quick)")
    args = ap.parse_args(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}"
    if args.micro:
        if not os.path.isfile(args.data):
            raise SystemExit(f"MNIST file not found: {args.data}. Fix: --data path/to/mnist.npz (keras layout)")
        with tempfile.TemporaryDirectory() as out_dir:
            res = run_micro_lenet(args.data, out_dir)
        res.update(command="python benchmarks/int8_matrix.py --micro", machine=machine,
                   setup="Caffe LeNet-5, 3 epochs dense + 3 epochs Pruning(0.9) on the MNIST train set; calibration on 500 train digits, "
                         "parity on 1,000 test digits; TFLM = tflite-micro's Python interpreter, smallest arena by bisection (16 bytes)")
        path = os.path.join(HERE, "results", "micro_lenet5.json")
        with open(path, "w") as f:
            json.dump(tfprune.report.json_safe(res), f, indent=2)
        write_markdown(path, micro_markdown(res))
        return 0
    if args.quick:
        args.train, args.calib, args.test, args.epochs = 256, 64, 32, 1
    if not os.path.isfile(args.data):
        raise SystemExit(f"MNIST file not found: {args.data}. Fix: --data path/to/mnist.npz (keras layout)")
    command = "python benchmarks/int8_matrix.py" + (" --quick" if args.quick else "")
    for flag, default in (("train", 2048), ("calib", 256), ("test", 256), ("epochs", 3), ("batch_size", 64), ("det_train", 64)):
        if not args.quick and getattr(args, flag) != default:
            command += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
    command += f" --out {args.out}" if args.out else ""
    command += f" --models {' '.join(args.models)}" if args.models != list(MODELS) else ""
    result: dict[str, Any] = {
        "command": command,
        "machine": machine,
        "setup": (f"fit {args.epochs} epochs on {args.train} MNIST train digits (batch {args.batch_size}) with Pruning(0.8), "
                  f"calibration on the next {args.calib} train digits, parity on {args.test} test digits; the detector: "
                  f"{args.epochs} epochs on {args.det_train} synthetic box images (batch 8) with its own losses, calibration and "
                  f"parity on {args.calib} / {args.test} other synthetic images"),
        "models": [],
    }
    name = args.out or ("int8_matrix_quick" if args.quick else "int8_matrix")
    path = os.path.join(HERE, "results", f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory() as out_dir:
        for m in args.models:
            print(f"== {m}", flush=True)
            try:
                row = run_model(m, args.data, args.train, args.calib, args.test, args.epochs, args.batch_size, out_dir, args.det_train)
            except Exception as err:  # a failure is a result of the matrix, with its reason
                traceback.print_exc()
                row = {"model": m, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
            print(json.dumps(row, default=str), flush=True)
            result["models"].append(row)
            with open(path, "w") as f:
                json.dump(tfprune.report.json_safe(result), f, indent=2)
    write_markdown(path, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
